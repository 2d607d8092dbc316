"""``model: auto``: candidates × cross-validation → a leaderboard → the winner.

Every family that fits the data kind is trained under the same budget (the run's epochs, batch
size and learning rate, on the same folds) and scored by k-fold cross-validation: stratified
folds for classification, expanding windows in time for forecasting. The family with the best
mean score wins; the run is then trained with it on all the data, and the leaderboard (mean ±
std of the metric, parameters, training time) is kept in the run's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from dlforge.config import FAMILY_KINDS, TABULAR_KINDS, RunConfig, config_to_dict, validate_config
from dlforge.errors import ConfigError

__all__ = ["candidates", "select_model"]

MINIMISE = ("mae", "rmse", "smape", "loss")


def candidates(cfg: RunConfig) -> list[str]:
    """The families that fit the run's data kind, in the registry's order."""
    if cfg.forecast is not None:
        kind = "sequence"
    else:
        rich = [i.type for i in cfg.inputs if i.type not in TABULAR_KINDS]
        kind = rich[0] if rich else "table"
    if kind == "table":
        return ["mlp"]
    return [f for f, kinds in FAMILY_KINDS.items() if kind in kinds
            and f not in ("auto", "pretrained")]


def _metric(cfg: RunConfig, output_kind: str) -> str:
    chosen = cfg.model.metric  # type: ignore[union-attr]
    default = {"forecast": "mae", "numeric": "rmse"}.get(output_kind, "accuracy")
    metric = default if chosen == "auto" else chosen
    regression = ("mae", "rmse", "r2")
    fits = {"forecast": ("mae", "rmse", "smape"), "numeric": regression,
            "binary": ("accuracy", "macro_f1", "roc_auc")}.get(output_kind,
                                                                 ("accuracy", "macro_f1"))
    if metric not in fits:
        raise ConfigError(f"model.metric: {metric!r} does not score a {output_kind} output; use "
                          f"one of {', '.join(fits)}")
    return metric


def select_model(df: pd.DataFrame, cfg: RunConfig, output_kind: str, source: str,
                 say: Callable[[str], None]) -> tuple[RunConfig, dict[str, Any]]:
    """Cross-validate each candidate family on ``df``; return the winner's config and the
    leaderboard."""
    from dlforge.api import cross_validate  # api imports the estimators, which import us

    auto = cfg.model
    families = list(auto.families or candidates(cfg))  # type: ignore[union-attr]
    fitting = candidates(cfg)
    wrong = [f for f in families if f not in fitting]
    if wrong:
        raise ConfigError(f"model.families: {wrong[0]!r} does not fit this data; families "
                          f"that fit: {', '.join(fitting)}")
    metric = _metric(cfg, output_kind)
    k = auto.cv  # type: ignore[union-attr]
    base = config_to_dict(cfg)
    rows = []
    for family in families:
        trial = validate_config({**base, "model": {"name": family}}, source="model selection")
        t0 = time.perf_counter()
        report = cross_validate(trial, k, frame=df, verbose=0)
        seconds = time.perf_counter() - t0
        row = {"model": family, "metric": metric, "mean": report["mean"].get(metric),
               "std": report["std"].get(metric), "parameters": report["parameters"],
               "seconds": round(seconds, 2), "folds": [f.get(metric) for f in report["folds"]]}
        rows.append(row)
        say(f"model selection: {family}: {metric} {row['mean']:.4f} ± {row['std']:.4f} "
            f"({k}-fold), {row['parameters']:,} parameters, {seconds:.1f} s")
    lower = metric in MINIMISE
    rows.sort(key=lambda r: r["mean"] if lower else -r["mean"])
    winner = rows[0]["model"]
    say(f"model selection: {winner} wins on {metric}; training it on all the data")
    chosen = validate_config({**base, "model": {"name": winner}}, source=source)
    return chosen, {"metric": metric, "k": k, "winner": winner, "leaderboard": rows,
                    "budget": {"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                               "lr": cfg.train.lr}}
