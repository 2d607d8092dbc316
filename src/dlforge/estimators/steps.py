"""The later steps on a run, as the Python front door: tune, audit (fairness, privacy) and
explain. Each loads the run (or trains the trials) through the estimators and hands the fitted
model to its package (:mod:`dlforge.tune`, :mod:`dlforge.audit`), which sits below the
estimators and never imports them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dlforge._extras import require
from dlforge.audit.explain import EXPLAIN_FEATURE, explain_model
from dlforge.audit.fairness import AUDIT_FEATURE, Thresholds, audit_model
from dlforge.audit.privacy import membership_attack as _membership_attack
from dlforge.audit.privacy import privacy_audit as _privacy_audit
from dlforge.audit.privacy import recorded_split as _recorded_split
from dlforge.config import RunConfig
from dlforge.estimators.base import DeepModel
from dlforge.estimators.files import estimator_for, train
from dlforge.estimators.load import load, load_deep_model
from dlforge.train.callbacks import Callback
from dlforge.tune import HEARTBEAT_S, TuneResult, run_study

__all__ = ["audit", "explain", "fit_trial", "membership_attack", "privacy_audit",
           "recorded_split", "tune"]


# ------------------------------------------------------------------------------------ tune
def tune(config: RunConfig, out: str | Path, *, trials: int, timeout: float | None = None,
         storage: str | None = None, study: str | None = None, workers: int = 1,
         best_run: bool = True, refit: bool = False, heartbeat: int = HEARTBEAT_S,
         verbose: int = 1) -> TuneResult:
    """Run (or resume) the Optuna study over ``config.tune`` with ``trials`` trials in all,
    write the study folder ``out`` (``trials.csv``, ``plots/``, ``best/`` run directory) and
    return the results; see :func:`dlforge.tune.run_study` for every argument."""
    return run_study(config, out, fit=fit_trial, train=train, trials=trials, timeout=timeout,
                     storage=storage, study=study, workers=workers, best_run=best_run,
                     refit=refit, heartbeat=heartbeat, verbose=verbose)


def fit_trial(cfg: RunConfig, kind: str, df: pd.DataFrame, source: str,
              callbacks: list[Callback]) -> dict[str, Any]:
    """One tuning trial: the estimator for ``cfg`` trained on ``df`` exactly as ``dlforge
    train`` would (the callbacks report each epoch to the pruner); its metrics."""
    model = estimator_for(cfg, kind)(config=cfg, verbose=0)
    model._fit_frame(df, cfg, source=source, callbacks=callbacks)
    return model.metrics_


# ----------------------------------------------------------------------------------- audit
def audit(run_dir: str | Path, data: str | Path | pd.DataFrame, sensitive: str | list[str], *,
          bins: dict[str, list[float]] | list[str] | str | None = None,
          positive: Any = None, label: str | None = None,
          thresholds: Thresholds | None = None, mitigate: str | None = None,
          resamples: int = 1000, seed: int = 0, min_group_size: int = 30,
          write: bool = True) -> dict[str, Any]:
    """Audit a binary run's decisions by the ``sensitive`` column(s) of a labelled ``data``
    file (or DataFrame); see :func:`dlforge.audit.fairness.audit_model`."""
    require("fairlearn", "audit", AUDIT_FEATURE)  # before loading the run
    return audit_model(load_deep_model(run_dir, "dlforge audit"), run_dir, data, sensitive,
                       bins=bins, positive=positive, label=label, thresholds=thresholds,
                       mitigate=mitigate, resamples=resamples, seed=seed,
                       min_group_size=min_group_size, write=write)


def privacy_audit(run_dir: str | Path, data: str | Path | None = None) -> dict[str, Any]:
    """``dlforge audit RUN_DIR --privacy``: the membership attack on the run's own split."""
    return _privacy_audit(load_deep_model(run_dir, "dlforge audit --privacy"), run_dir, data)


def membership_attack(run_dir: str | Path, members: pd.DataFrame, non_members: pd.DataFrame,
                      *, save: bool = True, source: str | None = None) -> dict[str, Any]:
    """The loss-threshold attack on a run (see :func:`dlforge.audit.privacy.membership_attack`)."""
    return _membership_attack(load_deep_model(run_dir, "dlforge audit --privacy"), run_dir,
                              members, non_members, save=save, source=source)


def recorded_split(run_dir: str | Path, data: str | Path | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, non-members) of a run, rebuilt from its data with its own split."""
    return _recorded_split(load_deep_model(run_dir, "dlforge audit --privacy"), run_dir, data)


# --------------------------------------------------------------------------------- explain
def explain(run: str | Path | DeepModel, *, text: str | None = None, image: Any = None,
            row: dict[str, Any] | None = None, target: Any = None, steps: int | None = None
            ) -> dict[str, Any]:
    """Attributions for one instance of a run (a run directory or a fitted estimator):
    ``text`` for its text input, ``image`` (a path or an array) for its image input, ``row``
    for any input column by name. See :func:`dlforge.audit.explain.explain_instances`."""
    require("captum", "audit", EXPLAIN_FEATURE)  # before loading the run
    model = load(run) if isinstance(run, str | Path) else run
    return explain_model(model, text=text, image=image, row=row, target=target, steps=steps)
