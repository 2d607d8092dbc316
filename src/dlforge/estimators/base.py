"""``DeepModel``: what every estimator shares — a scikit-learn estimator over the run schema.

A subclass names its kind (its constructor arguments and the config key each one sets come from
the parameter table, :mod:`dlforge.config.params`), its default config, and how its ``X``
becomes input columns. ``fit`` turns the arguments into a
:class:`~dlforge.config.RunConfig`, then runs one pipeline for every input kind:
clean → labels → split → load, fit and encode each input column → train → score.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from sklearn.base import BaseEstimator, is_regressor
from sklearn.utils.metaestimators import available_if
from torch.utils.data import DataLoader

from dlforge._extras import PRIVACY_FEATURE, require
from dlforge.config import (
    RunConfig,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    validate_config,
)
from dlforge.config.models import member_folder, member_model
from dlforge.config.params import estimator_params, resolve_path
from dlforge.data.clean import clean_frame
from dlforge.data.features import LabelEncoder, NumericTarget, load_target
from dlforge.data.frames import (
    Target,
    as_list,
    encode_labels,
    label_array,
    take,
    take_columns,
    task_name,
)
from dlforge.data.inputs import build_features, load_features, save_features
from dlforge.data.loader import FeatureDataset, make_loader
from dlforge.data.rows import row_fingerprints
from dlforge.data.split import split_rows
from dlforge.errors import ConfigError, DataError, DlforgeError, NotFittedError, RunDirError
from dlforge.estimators.persist import save_run
from dlforge.estimators.select import cross_validate_frame, select_model
from dlforge.models.registry import build_model
from dlforge.models.simple import FILE as SIMPLE_FILE
from dlforge.models.simple import SimpleModel
from dlforge.run import MANIFEST, read_history
from dlforge.train.callbacks import Callback
from dlforge.train.compute import compute_report
from dlforge.train.device import resolve_device, resolve_precision
from dlforge.train.distributed import is_main_process
from dlforge.train.metrics import (
    baseline_metrics,
    blend_logits,
    choose_threshold,
    class_weights,
    classification_metrics,
    majority_label,
    mean_baseline_metrics,
    monitor_mode,
    predict_indices,
    prior_logits,
    probabilities,
    regression_metrics,
    resolve_monitor,
)
from dlforge.train.recipe import apply_recipe
from dlforge.train.thresholds import FILE as POSTPROCESS
from dlforge.train.thresholds import GroupThresholds
from dlforge.train.tracking import tracked_fit
from dlforge.train.trainer import Trainer, loss_fn, predict_logits

__all__ = ["DeepModel", "baseline_from_report", "load_weights", "table_init"]

# Estimator arguments shared by every estimator -> the config key each sets.
def table_init(kind: str, *extra: inspect.Parameter) -> Callable[..., None]:
    """The ``__init__`` of the estimator ``kind``, from the parameter table
    (:mod:`dlforge.config.params`): ``model`` (positional or keyword), every keyword argument
    the table gives that kind, then ``extra`` (arguments that are not hyperparameters, such as
    a table's column lists), ``config`` and ``verbose``. It stores each argument untouched,
    as scikit-learn's contract asks; its signature is explicit (``help()``, ``get_params``
    and ``clone`` see every name), and an unknown name is a TypeError."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation="str | None")]
    params += [inspect.Parameter(p.name, kw, default=None, annotation=f"{p.type} | None")
               for p in estimator_params(kind) if p.name != "model"]
    params += [*extra, inspect.Parameter("config", kw, default=None,
                                         annotation="RunConfig | None"),
               inspect.Parameter("verbose", kw, default=1, annotation="int")]
    signature = inspect.Signature(params)

    def __init__(self: DeepModel, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as err:  # a typo in an argument's name: say which ones there are
            raise TypeError(f"{type(self).__name__}: {err}; valid arguments are: "
                            f"{', '.join(list(signature.parameters)[1:])}") from None
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__doc__ = ("Arguments left as None take the config's defaults (or those of "
                        "``config``, if given). Each keyword: " + "; ".join(
                            f"``{p.name}`` ({p.path}): {p.help}" for p in estimator_params(kind)))
    return __init__


def _predicts_classes(model: DeepModel) -> bool:
    """Whether ``model`` predicts classes (so has ``predict_proba``): not a regressor, nor a
    model fitted (or loaded) to predict numbers."""
    return not is_regressor(model) and not isinstance(getattr(model, "labels_", None),
                                                       NumericTarget)


class DeepModel(BaseEstimator):
    """Base of every estimator but the language model: a scikit-learn estimator over the run
    schema. A subclass names its ``KIND`` (its keyword arguments come from the parameter
    table), its default config, and how its ``X`` becomes input columns."""

    KIND: ClassVar[str] = ""

    config: RunConfig | None
    verbose: int

    @classmethod
    def param_paths(cls) -> dict[str, str]:
        """Each keyword argument's config key (with ``<kind>`` slots, see
        :func:`~dlforge.config.params.resolve_path`)."""
        return {p.name: p.path for p in estimator_params(cls.KIND)}

    # ------------------------------------------------------------------ config
    def _base_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def resolve_config(self, base: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
        """The RunConfig these arguments (and ``overrides``, by argument name) describe, on
        top of ``config`` if given, else ``base``, else the estimator's default config."""
        if self.config is not None:
            base = config_to_dict(self.config)
        elif base is None:
            base = self._base_config()
        paths = self.param_paths()
        params = {k: getattr(self, k) for k in paths}
        params.update(overrides)
        unknown = sorted(set(params) - set(paths))
        if unknown:
            raise ConfigError(f"unknown argument(s) {', '.join(unknown)}; valid ones are: "
                              f"{', '.join(paths)}")
        inputs = [i for i in base.get("inputs") or [] if isinstance(i, dict)]
        forecast = base.get("forecast") is not None
        dotted = {resolve_path(paths[k], inputs, forecast, name=k): v
                  for k, v in params.items() if v is not None}
        if "train.seed" in dotted:
            dotted["data.seed"] = dotted["train.seed"]
        return validate_config(apply_overrides(base, dotted), source=type(self).__name__)

    def _fit_overrides(self, epochs: int | None, batch_size: int | None,
                       validation_split: float | None, base: dict[str, Any] | None = None
                       ) -> RunConfig:
        return self.resolve_config(base, **{k: v for k, v in {
            "epochs": epochs, "batch_size": batch_size,
            "validation_split": validation_split}.items() if v is not None})

    # ------------------------------------------------------------------ fit
    @tracked_fit  # one tracked run when cfg.tracking is set (dlforge.train.tracking)
    def _fit_frame(self, df: pd.DataFrame, cfg: RunConfig, source: str,
                   workdir: Path | None = None, resume: bool = False,
                   callbacks: Sequence[Callback] = (),
                   log: Callable[[str], None] | None = None) -> DeepModel:
        if cfg.privacy is not None:  # before any work: one line if Opacus is missing
            require("opacus", "privacy", PRIVACY_FEATURE)
        log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        say = log if self.verbose else (lambda s: None)
        label_col = cfg.output.name
        torch.manual_seed(cfg.train.seed)
        texts = [i.name for i in cfg.inputs if i.type == "text"]
        df, cleaning = clean_frame(df, texts, label_col, cfg.data.clean, source=source,
                                   key_cols=[i.name for i in cfg.inputs])
        say("cleaning: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cleaning.items()))

        # Labels, then the splits (test first, then validation from the rest).
        saved = workdir / "labels.json" if resume and workdir is not None else None
        target, y, strata = encode_labels(df, cfg, source,
                                          saved if saved and saved.exists() else None)
        n = len(df)
        too_few = (f"{source}: too few rows to train on: {n} sample{'s' * (n != 1)} left "
                   "after cleaning")
        try:
            train_idx, val_idx, test_idx = split_rows(strata, cfg)
        except ValueError as err:  # not enough rows to hold any out
            raise DataError(f"{too_few}; {err}") from None
        idx = np.setdiff1d(np.arange(len(df)), test_idx)  # the rows outside the test split
        # What dlforge evaluate compares its data with; none under DP (see dlforge.data.rows).
        self.fit_rows_ = (None if cfg.privacy is not None else
                          row_fingerprints(df.iloc[idx], [i.name for i in cfg.inputs]))
        if len(train_idx) < 2:
            raise DataError(f"{too_few}, {len(train_idx)} of them for training after the "
                            "validation and test splits; at least 2 are needed")
        if isinstance(target, NumericTarget) and not (saved and saved.exists()):
            # The output's scaling, like every fitted statistic, comes from the training rows.
            target = NumericTarget.fit(df[label_col].iloc[train_idx].tolist(), source)
            y = target.encode(df[label_col].tolist(), source=source)
        selection = None
        if cfg.model.name == "auto" and not resume:
            # Model selection cross-validates on the rows outside the test split only, each
            # candidate with this estimator's own pipeline.
            def cv(trial: RunConfig, k: int, frame: pd.DataFrame,
                   folds: list[int] | None) -> dict[str, Any]:
                return cross_validate_frame(lambda kind: type(self), trial, k, frame,
                                            str(trial.data.path or "data"), verbose=0,
                                            only=folds, keep_predictions=True)

            cfg, selection = select_model(df.iloc[idx].reset_index(drop=True), cfg,
                                          target.kind, source, say, cv)
        if cfg.train.baseline_weight not in ("auto", 0.0) and not self._has_simple(
                cfg, target.kind):
            raise ConfigError("train.baseline_weight: the simple baseline takes text, numeric "
                              "and category inputs and single-label outputs only; use auto or 0")
        if cfg.train.label_smoothing and isinstance(target, NumericTarget):
            raise ConfigError("train.label_smoothing: smooths a classifier's targets; this "
                              "run's output is a number (set it to 0)")
        if cfg.model.name == "baseline":
            return self._fit_simple(df, cfg, source, target, y, (train_idx, val_idx, test_idx),
                                    cleaning, selection, workdir, say)
        if cfg.model.name == "ensemble":
            return self._fit_ensemble(df, cfg, source, target, y,
                                      (train_idx, val_idx, test_idx), cleaning, selection,
                                      workdir, say, log)
        # The settings left unset, chosen from the number of training rows and the family.
        cfg = apply_recipe(cfg, len(train_idx), say, target.kind)

        # Each input: load, fit on the training split only, encode.
        resumed = resume and workdir is not None and (workdir / "features.json").exists()
        features = load_features(cfg, workdir) if resumed else build_features(cfg)
        encoded, columns = {}, {}
        for name, feat in features.items():
            loaded = columns[name] = feat.load(df[name].tolist(), source)
            if not resumed:
                feat.fit(take(loaded, train_idx), source)
            encoded[name] = feat.encode(loaded)
        say(f"data: {_describe_splits(train_idx, val_idx, test_idx)};"
            f" {_describe_target(target)}; inputs " + ", ".join(
                f"{n} ({f.kind})" for n, f in features.items()))
        if workdir is not None and is_main_process():
            workdir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, workdir / "config.yaml")
            save_features(features, workdir)
            target.save(workdir / "labels.json")

        bs, seed, bucket = cfg.train.batch_size, cfg.train.seed, cfg.train.bucket_by_length
        train_x = take_columns(encoded, train_idx)
        val_loader = (make_loader(FeatureDataset(features, take_columns(encoded, val_idx)),
                                  max(bs, 256), False, seed, bucket) if len(val_idx) else None)

        monitor = resolve_monitor(cfg.train.monitor, target.kind)
        weights = None
        if cfg.train.class_weight == "balanced" or (cfg.train.class_weight == "auto"
                                                    and monitor == "macro_f1"):
            weights = class_weights(target.kind, y[train_idx], target.n_outputs)

        def metric_fn(targets: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
            if isinstance(target, NumericTarget):
                return regression_metrics(target.decode(targets), target.decode(logits))
            return classification_metrics(target.kind, targets,
                                          probabilities(target.kind, logits), target.classes,
                                          full=False)

        # Restarts from other seeds where fine-tuning is unstable: the best on validation.
        restarts = 1 if resume or val_loader is None else cfg.train.restarts or 1

        def checkpoints(r: int) -> Path | None:
            """Each restart checkpoints to a folder of its own; the kept one's becomes the
            run's checkpoints/."""
            if workdir is None:
                return None
            return workdir / "checkpoints" if restarts == 1 else workdir / "restarts" / str(r)

        def train_once(seed: int) -> tuple[Trainer, DataLoader, list[dict[str, Any]]]:
            """One training run from ``seed``: a fresh model, its own shuffling and
            augmentation."""
            torch.manual_seed(seed)
            augmenters = {n: a for n, f in features.items()
                          if (a := f.make_augmenter(seed)) is not None}
            train_loader = make_loader(FeatureDataset(features, train_x, y[train_idx],
                                                      augmenters), bs, True, seed, bucket)
            # A balanced loss's untrained optimum is the uniform prediction, not the prior.
            net = build_model(cfg, {n: f.spec() for n, f in features.items()},
                              target.n_outputs, prior=None if weights is not None else
                              prior_logits(target.kind, y[train_idx], target.n_outputs))
            trainer = Trainer(net, target.kind, cfg.train, metric_fn, monitor, callbacks,
                              checkpoint_dir=checkpoints(seed - cfg.train.seed),
                              verbose=self.verbose, log=log,
                              head_lr=getattr(cfg.model, "head_lr", None),
                              layer_decay=getattr(cfg.model, "layer_decay", 1.0),
                              privacy=cfg.privacy, family=cfg.model.name,
                              class_weights=weights)
            if seed == cfg.train.seed:
                say(f"model: {cfg.model.name}, {sum(p.numel() for p in net.parameters()):,} "
                    f"parameters; device {trainer.device}, precision {trainer.precision}")
            history = trainer.fit(train_loader, val_loader,
                                  y[val_idx] if len(val_idx) else None, resume=resume)
            return trainer, train_loader, history

        best: tuple[Trainer, DataLoader, list[dict[str, Any]]] | None = None
        kept = 0
        for r in range(restarts):
            run = train_once(seed + r)
            if restarts > 1:
                st = run[0].state
                say(f"restart {r + 1}/{restarts} (seed {seed + r}): best validation {monitor} "
                    f"{st['best_score']:.4f} at epoch {st['best_epoch']}")
            if best is None or _better_run(run[0], best[0]):
                best, kept = run, r
        assert best is not None
        trainer, train_loader, history = best
        if restarts > 1:
            say(f"restarts: kept restart {kept + 1} (seed {seed + kept}), the best on "
                "validation")
            if workdir is not None and is_main_process():
                kept_dir = checkpoints(kept)
                if kept_dir is not None and kept_dir.is_dir():
                    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
                    kept_dir.replace(workdir / "checkpoints")
                shutil.rmtree(workdir / "restarts", ignore_errors=True)

        # The fitted state (scikit-learn style: attributes ending in _).
        self.config_ = cfg
        self.labels_ = target
        if isinstance(target, LabelEncoder):
            self.classes_ = label_array(target.classes)
        self.features_ = features
        self.simple_ = None
        self.postprocess_ = None  # a fairness rule belongs to the model it was fitted on
        self.model_ = trainer.model.eval()
        self.device_ = trainer.device
        self.precision_ = trainer.precision
        self.history_ = history
        self.best_epoch_ = trainer.state["best_epoch"]
        self.privacy_ = trainer.privacy_report  # None unless trained with DP-SGD
        y_train = y[train_idx]
        self.baseline_ = fit_baseline(target, y_train)
        # The strong simple baseline on the same training rows: the yardstick of the run, and
        # its share train.baseline_weight of the predictions.
        self.yardstick_ = self._fit_yardstick(cfg, target, columns, y[train_idx], train_idx)
        self._settle_blend(encoded, columns, y, val_idx, monitor, say)
        val_logits = self._logits_rows(encoded, columns, val_idx) if len(val_idx) else None
        self._settle_threshold(val_logits, y[val_idx], monitor, say)
        report = {}
        if val_logits is not None:
            report["validation"] = self._metrics(val_logits, y[val_idx])
        if len(test_idx):
            report["test"] = self._metrics(self._logits_rows(encoded, columns, test_idx),
                                           y[test_idx])
        self.metrics_ = {
            "task": task_name(cfg, target.kind).replace("_", " "),
            "monitor": monitor,
            "best_epoch": self.best_epoch_,
            "epochs_run": len(history),
            **report,
        }
        if selection is not None:
            self.metrics_["model_selection"] = selection
        self.metrics_["compute"] = compute_report(trainer.model, train_loader, history,
                                                  trainer.device, trainer.precision)
        if self.yardstick_ is not None and len(val_idx):
            self.metrics_["simple_baseline"] = self._yardstick_report(columns, y, val_idx, say)
        self.data_report_ = {
            "source": source,
            "cleaning": cleaning,
            "splits": {"train": len(train_idx), "validation": len(val_idx),
                       "test": len(test_idx)},
            **target_report(target, y_train),
        }
        return self

    # ------------------------------------------------------------------ the simple baseline
    def _fit_simple(self, df: pd.DataFrame, cfg: RunConfig, source: str, target: Target,
                    y: np.ndarray, splits: tuple[np.ndarray, np.ndarray, np.ndarray],
                    cleaning: dict[str, int], selection: dict[str, Any] | None,
                    workdir: Path | None, say: Callable[[str], None]) -> DeepModel:
        """``model: baseline``: the strong simple baseline (:mod:`dlforge.models.simple`)
        fitted on the training rows, scored like a network."""
        train_idx, val_idx, test_idx = splits
        features = build_features(cfg)  # only to read each column as training reads it
        columns = {name: feat.load(df[name].tolist(), source) for name, feat in features.items()}
        try:
            simple = _simple_model(cfg, target)
        except ValueError as err:
            raise ConfigError(f"model.name: {err}; use a network family") from None
        say(f"data: {_describe_splits(train_idx, val_idx, test_idx)};"
            f" {_describe_target(target)}")
        say(f"model: baseline ({simple.name})")
        simple.fit(take_columns(columns, train_idx), y[train_idx])
        self.simple_ = simple
        return self._score_untrained(cfg, source, target, y, splits, features, columns,
                                     cleaning, selection, workdir, say, simple.name)

    def _score_untrained(self, cfg: RunConfig, source: str, target: Target, y: np.ndarray,
                         splits: tuple[np.ndarray, np.ndarray, np.ndarray],
                         features: dict[str, Any], columns: dict[str, Any],
                         cleaning: dict[str, int], selection: dict[str, Any] | None,
                         workdir: Path | None, say: Callable[[str], None], name: str
                         ) -> DeepModel:
        """The rest of a run without a training loop of its own (the simple baseline, an
        ensemble of fitted members): its state, the decision threshold and the scores on
        the validation and test rows from ``_logits_rows`` on the loaded ``columns``."""
        train_idx, val_idx, test_idx = splits
        if workdir is not None and is_main_process():
            workdir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, workdir / "config.yaml")
        self.config_, self.labels_, self.features_ = cfg, target, features
        if isinstance(target, LabelEncoder):
            self.classes_ = label_array(target.classes)
        self.postprocess_ = self.yardstick_ = None  # no yardstick: the run is (has) it
        self.model_, self.device_, self.precision_ = None, torch.device("cpu"), "fp32"
        self.history_, self.best_epoch_, self.privacy_ = [], 0, None
        self.baseline_ = fit_baseline(target, y[train_idx])
        monitor = resolve_monitor(cfg.train.monitor, target.kind)
        self._settle_threshold(self._logits_rows(None, columns, val_idx) if len(val_idx) else None,
                               y[val_idx], monitor, say)
        report = {name: self._metrics(self._logits_rows(None, columns, rows), y[rows])
                  for name, rows in (("validation", val_idx), ("test", test_idx)) if len(rows)}
        self.metrics_ = {"task": task_name(cfg, target.kind).replace("_", " "),
                         "monitor": monitor, "best_epoch": 0, "epochs_run": 0, "model": name,
                         "parameters": self.n_parameters(), **report}
        if selection is not None:
            self.metrics_["model_selection"] = selection
        self.data_report_ = {"source": source, "cleaning": cleaning,
                             "splits": {"train": len(train_idx), "validation": len(val_idx),
                                        "test": len(test_idx)},
                             **target_report(target, y[train_idx])}
        return self

    # ------------------------------------------------------------------ an ensemble
    def _fit_ensemble(self, df: pd.DataFrame, cfg: RunConfig, source: str, target: Target,
                      y: np.ndarray, splits: tuple[np.ndarray, np.ndarray, np.ndarray],
                      cleaning: dict[str, int], selection: dict[str, Any] | None,
                      workdir: Path | None, say: Callable[[str], None],
                      log: Callable[[str], None]) -> DeepModel:
        """``model: ensemble``: each member family trained as a run of its own on the same
        rows and splits (its recipe, its blend with the simple baseline), their predictions
        averaged; the decision threshold and the scores are the average's."""
        members = []
        base = config_to_dict(cfg.model_copy(update={"tracking": None}))
        names = cfg.model.members  # type: ignore[union-attr]
        for i, family in enumerate(names, start=1):
            say(f"ensemble: member {i} of {len(names)}, {family}")
            member_cfg = validate_config({**base, "model": member_model(family)}, source=source)
            member = type(self)(config=member_cfg, verbose=self.verbose)
            members.append(member._fit_frame(df, member_cfg, f"{source} ({family})", log=log))
        features = build_features(cfg)  # only to read each column as training reads it
        columns = {name: feat.load(df[name].tolist(), source) for name, feat in features.items()}
        self.members_, self.simple_ = members, None
        self._score_untrained(cfg, source, target, y, splits, features, columns, cleaning,
                              selection, workdir, say,
                              "ensemble (" + " + ".join(map(member_folder, names)) + ")")
        monitor = self.metrics_["monitor"]
        scores = {member_folder(name): m.metrics_.get("validation", {}).get(monitor)
                  for name, m in zip(names, members, strict=True)}
        self.metrics_["members"] = {k: {monitor: v} for k, v in scores.items()}
        ours = self.metrics_.get("validation", {}).get(monitor)
        if ours is not None and all(v is not None for v in scores.values()):
            say(f"ensemble: validation {monitor} " + ", ".join(
                f"{k} {v:.4f}" for k, v in scores.items()) + f"; their average {ours:.4f}")
        return self

    def _ensemble_logits(self, columns: dict[str, Any], rows: np.ndarray | None) -> np.ndarray:
        """The mean of the members' predictions (probabilities, or numbers) for ``rows`` of
        the loaded ``columns``, as logits."""
        cols = columns if rows is None else take_columns(columns, rows)
        out = None
        for i, member in enumerate(self.members_):
            encoded = (None if member.model_ is None else
                       {n: f.encode(cols[n]) for n, f in member.features_.items()})
            logits = member._logits_rows(encoded, cols)
            out = logits if out is None else blend_logits(self.labels_.kind, out, logits,
                                                          1 / (i + 1))
        return out

    @staticmethod
    def _has_simple(cfg: RunConfig, output_kind: str) -> bool:
        """Whether the simple baseline takes this run's inputs and output."""
        return SimpleModel.takes({i.type for i in cfg.inputs}, output_kind)

    def _fit_yardstick(self, cfg: RunConfig, target: Target, columns: dict[str, Any],
                       y_train: np.ndarray, rows: np.ndarray | None = None
                       ) -> SimpleModel | None:
        """The strong simple baseline fitted on the training rows (None where it does not
        take these inputs)."""
        if not self._has_simple(cfg, target.kind):
            return None
        rows_columns = columns if rows is None else take_columns(columns, rows)
        return _simple_model(cfg, target).fit(rows_columns, y_train)

    def _yardstick_report(self, columns: dict[str, Any], y: np.ndarray, val_idx: np.ndarray,
                          say: Callable[[str], None]) -> dict[str, Any]:
        """The yardstick scored on the same validation rows as the run's model, said
        plainly when it scores better."""
        simple, cfg, target = self.yardstick_, self.config_, self.labels_
        logits = simple.logits(take_columns(columns, val_idx))
        theirs = self._metrics(logits, y[val_idx])
        ours = self.metrics_["validation"]
        metric = "r2" if isinstance(target, NumericTarget) else "accuracy"
        out = {"model": simple.name, "validation": {
            k: theirs[k] for k in ("accuracy", "macro_f1", "roc_auc", "loss", "mae", "rmse", "r2")
            if theirs.get(k) is not None}}
        if theirs[metric] is not None and ours[metric] is not None and (
                theirs[metric] > ours[metric]):  # R² is None on too few validation rows
            w = cfg.train.baseline_weight
            name = cfg.model.name + (f" (with the baseline's {w:g} share)" if w else "")
            say(f"note: the simple baseline {simple.name} scores {metric} {theirs[metric]:.4f} "
                f"on validation; this {name} model {ours[metric]:.4f}. Consider "
                "model='auto' (it includes the baseline) or model='baseline'")
        return out

    # ------------------------------------------------------------------ scoring
    def _settle_threshold(self, val_logits: np.ndarray | None, y_val: np.ndarray, monitor: str,
                          say: Callable[[str], None]) -> None:
        """Fix a binary run's ``output.threshold: auto`` to a number: the one that scores best
        on the validation rows for ``monitor`` (:func:`choose_threshold`), 0.5 without enough
        of them (20)."""
        out = self.config_.output
        if self.labels_.kind != "binary" or out.threshold != "auto":
            return
        t = 0.5
        if val_logits is not None and len(y_val) >= 20:
            t = choose_threshold(np.asarray(y_val), probabilities("binary", val_logits), monitor)
            if t != 0.5:
                say(f"decision threshold: {t:g} (chosen on the validation split for {monitor}; "
                    "0.5 scored lower there)")
        self.config_ = self.config_.model_copy(
            update={"output": out.model_copy(update={"threshold": t})})

    @property
    def decision_threshold_(self) -> float:
        """The binary decision threshold predict and serve apply (0.5 for other outputs)."""
        self._check_fitted()
        t = self.config_.output.threshold
        return 0.5 if t == "auto" or self.labels_.kind != "binary" else float(t)

    def _metrics(self, logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        target = self.labels_
        loss = float(loss_fn(target.kind, torch.from_numpy(logits),
                             torch.from_numpy(np.asarray(y))))
        if isinstance(target, NumericTarget):
            truth = target.decode(y)
            return {"loss": loss, **regression_metrics(truth, target.decode(logits)),
                    "baseline": mean_baseline_metrics(float(self.baseline_[0]), truth)}
        out = {"loss": loss, **classification_metrics(
            target.kind, y, probabilities(target.kind, logits), target.classes,
            threshold=self.decision_threshold_)}
        out["baseline"] = baseline_metrics(target.kind, self.baseline_, y, target.classes)
        return out

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() "
                                 "first or load a run with dlforge.load(path)")

    def _columns(self, X: Any) -> pd.DataFrame:
        """``X`` as a frame of this model's input columns (subclasses say how)."""
        raise NotImplementedError

    def _logits_rows(self, encoded: dict[str, Any] | None, columns: dict[str, Any],
                     rows: np.ndarray | None = None) -> np.ndarray:
        """The model's logits for ``rows`` (all by default): the network's on the
        ``encoded`` inputs, the simple baseline's on the loaded ``columns``, or the two
        blended with the run's ``train.baseline_weight``; an ensemble's members' average."""
        if getattr(self, "members_", None):
            return self._ensemble_logits(columns, rows)
        simple = getattr(self, "simple_", None)
        cols = columns if rows is None else take_columns(columns, rows)
        if self.model_ is None:
            return simple.logits(cols)
        net = self._logits_encoded(encoded, rows)
        if simple is None:
            return net
        return blend_logits(self.labels_.kind, net, simple.logits(cols),
                            float(self.config_.train.baseline_weight))

    def _settle_blend(self, encoded: dict[str, Any], columns: dict[str, Any], y: np.ndarray,
                      val_idx: np.ndarray, monitor: str, say: Callable[[str], None]) -> None:
        """Fix ``train.baseline_weight`` to a number (``auto``: the weight that scores best on
        the validation rows for ``monitor``) and keep the simple baseline when it is > 0."""
        train, simple = self.config_.train, self.yardstick_
        w = train.baseline_weight
        if w == "auto":
            w, scores = 0.0, {}
            if simple is not None and len(val_idx) >= 20:
                net = self._logits_encoded(encoded, val_idx)
                theirs = simple.logits(take_columns(columns, val_idx))
                lower = monitor_mode(monitor) == "min"
                for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
                    m = self._metrics(blend_logits(self.labels_.kind, net, theirs, weight),
                                      y[val_idx])
                    scores[weight] = -m[monitor] if lower else m[monitor]
                best = max(scores.values())
                w = min(k for k, v in scores.items() if v >= best - 1e-12)
                if w > 0:
                    say(f"blend: the simple baseline ({simple.name}) gets a {w:g} share of the "
                        f"predictions, the {self.config_.model.name} network {1 - w:g} (chosen "
                        f"on validation: {monitor} " + ", ".join(
                            f"{k:g}: {abs(v):.4f}" for k, v in scores.items()) + ")")
        self.config_ = self.config_.model_copy(
            update={"train": train.model_copy(update={"baseline_weight": float(w)})})
        self.simple_ = simple if w > 0 else None

    def _logits_encoded(self, encoded: dict[str, Any], rows: np.ndarray | None = None
                        ) -> np.ndarray:
        """The network's logits for the encoded inputs of ``rows``."""
        cols = encoded if rows is None else take_columns(encoded, rows)
        n = len(next(iter(cols.values())))
        if n == 0:
            return np.zeros((0, self.labels_.n_outputs), dtype=np.float32)
        loader = make_loader(FeatureDataset(self.features_, cols),
                             max(self.config_.train.batch_size, 256), False)
        return predict_logits(self.model_, loader, self.device_, self.precision_)

    def _load_frame(self, df: pd.DataFrame, source: str = "X") -> dict[str, Any]:
        """Each input column of ``df`` cleaned and loaded as at training."""
        texts = [i.name for i in self.config_.inputs if i.type == "text"]
        if texts:
            df, _ = clean_frame(df, texts, None, self.config_.data.clean, source=source)
        return {name: f.load(df[name].tolist(), source) for name, f in self.features_.items()}

    def _encode_frame(self, df: pd.DataFrame, source: str = "X") -> dict[str, Any]:
        """Each input column of ``df`` cleaned, loaded and encoded for the network as at
        training (loaded only, for the simple baseline's run)."""
        loaded = self._load_frame(df, source)
        if self.model_ is None:
            return loaded
        return {name: f.encode(loaded[name]) for name, f in self.features_.items()}

    def _logits_frame(self, df: pd.DataFrame, source: str = "X") -> np.ndarray:
        loaded = self._load_frame(df, source)
        encoded = (None if self.model_ is None else
                   {name: f.encode(loaded[name]) for name, f in self.features_.items()})
        return self._logits_rows(encoded, loaded)

    def _logits(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self._logits_frame(self._columns(X))

    def predict(self, X: Any, *, sensitive_features: Any = None) -> np.ndarray | list[list[Any]]:
        """Labels (or numbers). A run mitigated by ``dlforge audit --mitigate`` decides per
        group of its sensitive column(s): give them as columns of ``X`` (a DataFrame) or as
        ``sensitive_features`` (see :mod:`dlforge.train.thresholds`)."""
        self._check_fitted()
        if isinstance(self.labels_, NumericTarget):
            return self.labels_.decode(self._logits(X))
        proba = self.predict_proba(X)
        return self.decode(proba, self.sensitive_groups(X, sensitive_features, len(proba)))

    @available_if(_predicts_classes)
    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, 2) for binary, (N, C) for multi-class (rows sum to 1) and multi-label. Only a
        model of classes has it: ``hasattr(regressor, "predict_proba")`` is False, as
        scikit-learn's tools expect."""
        self._check_fitted()
        return probabilities(self.labels_.kind, self._logits(X))

    def sensitive_groups(self, X: Any, sensitive_features: Any = None, n: int | None = None,
                         source: str = "X") -> np.ndarray | None:
        """The group of each row for the run's fairness post-processing (None without one):
        from ``sensitive_features``, else from ``X``'s columns (DataError if neither has
        them)."""
        rule = getattr(self, "postprocess_", None)
        if rule is None:
            return None
        frame = X if isinstance(X, pd.DataFrame) else None
        return rule.groups(frame, sensitive_features, n, source)

    def decode(self, proba: np.ndarray, groups: np.ndarray | None = None
               ) -> np.ndarray | list[list[Any]]:
        """The labels ``predict`` gives for probabilities from ``predict_proba`` (so one
        forward pass can serve both); ``groups`` from :meth:`sensitive_groups` when the run
        has a fairness post-processing rule."""
        self._check_fitted()
        rule = getattr(self, "postprocess_", None)
        if rule is not None:
            if groups is None:
                raise DataError(rule.missing_message())
            return label_array(self.labels_.decode(rule.predict_indices(proba, groups)))
        decoded = self.labels_.decode(predict_indices(self.labels_.kind, proba,
                                                      self.decision_threshold_))
        if self.labels_.kind == "multilabel":
            return decoded
        return label_array(decoded)

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """The validation metrics of training (classification: loss, accuracy, macro-F1,
        ROC-AUC, per-class scores, confusion matrix; regression: MAE, RMSE, R²) on the given
        data, next to the baseline's."""
        self._check_fitted()
        frame = self._columns(X)
        labels = as_list(y, "y")
        if len(frame) != len(labels):
            raise DataError(f"X has {len(frame)} rows but y has {len(labels)} labels")
        target = self.labels_.encode(labels, self.config_.output.separator, source="y")
        return self._metrics(self._logits_frame(frame), target)

    def evaluate_frame(self, df: pd.DataFrame, source: str = "data") -> dict[str, Any]:
        """:meth:`evaluate` on a frame holding the input columns and the output column."""
        self._check_fitted()
        col = self.config_.output.name
        target = self.labels_.encode(df[col].tolist(), self.config_.output.separator,
                                     source=source)
        return self._metrics(self._logits_frame(df, source), target)

    # ------------------------------------------------------------------ run directory
    def _save_state(self, folder: Path) -> None:
        """Write the fitted feature state (or the simple baseline) and the label map into a
        run folder."""
        if getattr(self, "simple_", None) is not None:
            self.simple_.save(folder / SIMPLE_FILE)
        if self.model_ is not None:  # a network (alone, or blended with the baseline)
            save_features(self.features_, folder)
        if getattr(self, "members_", None):  # an ensemble: a run each
            for name, member in zip(self.config_.model.members, self.members_, strict=True):
                save_run(member, folder / "members" / member_folder(name))
        self.labels_.save(folder / "labels.json")

    @classmethod
    def _restore(cls, path: Path, cfg: RunConfig, device: str | None = None) -> DeepModel:
        """A fitted estimator from a checked run folder's state and weights (``load``)."""
        labels = load_target(path / "labels.json")
        if cfg.model.name == "baseline":
            clf = cls(config=cfg, verbose=0)
            clf.config_, clf.labels_, clf.features_ = cfg, labels, build_features(cfg)
            clf.simple_ = _simple_model(cfg, labels).load(path / SIMPLE_FILE)
            if isinstance(labels, LabelEncoder):
                clf.classes_ = label_array(labels.classes)
            clf.model_, clf.device_, clf.precision_ = None, torch.device("cpu"), "fp32"
            return clf
        if cfg.model.name == "ensemble":  # each member a run of this class (checked by ours)
            clf = cls(config=cfg, verbose=0)
            clf.config_, clf.labels_, clf.features_ = cfg, labels, build_features(cfg)
            clf.members_ = []
            for m in cfg.model.members:
                folder = path / "members" / member_folder(m)
                try:
                    member_cfg = load_config(folder / "config.yaml")
                except DlforgeError as err:
                    raise RunDirError(f"{folder}: config.yaml does not validate: {err}") from None
                clf.members_.append(cls._load_run(folder, member_cfg, device))
            if isinstance(labels, LabelEncoder):
                clf.classes_ = label_array(labels.classes)
            clf.simple_ = None
            clf.model_, clf.device_, clf.precision_ = None, torch.device("cpu"), "fp32"
            return clf
        features = load_features(cfg, path)
        net = build_model(cfg, {n: f.spec() for n, f in features.items()}, labels.n_outputs)
        clf = cls(config=cfg, verbose=0)
        clf.config_ = cfg
        clf.labels_ = labels
        if isinstance(labels, LabelEncoder):
            clf.classes_ = label_array(labels.classes)
        clf.features_ = features
        clf.simple_ = (_simple_model(cfg, labels).load(path / SIMPLE_FILE)
                       if cfg.train.baseline_weight not in ("auto", 0.0) else None)
        clf.model_, clf.device_, clf.precision_ = load_weights(net, path, cfg, device)
        return clf

    @classmethod
    def _load_run(cls, path: Path, cfg: RunConfig, device: str | None = None) -> DeepModel:
        """A fitted estimator from a checked run folder (``dlforge.load`` once it has checked
        the manifest and picked the class): its state and weights, and its records (metrics,
        data report, history, privacy budget, fairness rule)."""
        clf = cls._restore(path, cfg, device)
        clf.metrics_ = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        clf.data_report_ = json.loads((path / "data.json").read_text(encoding="utf-8"))
        clf.privacy_ = (json.loads((path / "privacy.json").read_text(encoding="utf-8"))
                        if (path / "privacy.json").is_file() else None)
        clf.history_ = read_history(path / "history.csv")
        listed = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        if POSTPROCESS in listed:  # only what the (checked) manifest lists
            clf.postprocess_ = GroupThresholds.load(path / POSTPROCESS)
        clf.best_epoch_ = clf.metrics_.get("best_epoch", 0)
        if "baseline_mean" in clf.data_report_ or "baseline_majority" in clf.data_report_:
            clf.baseline_ = baseline_from_report(clf.data_report_)
        return clf

    def n_parameters(self) -> int:
        """The fitted model's learned numbers: a network's parameters, plus the simple
        baseline's coefficients or tree nodes when it is (or is blended into) the model."""
        self._check_fitted()
        simple = getattr(self, "simple_", None)
        count = simple.n_parameters() if simple is not None else 0
        count += sum(m.n_parameters() for m in getattr(self, "members_", None) or [])
        if self.model_ is not None:
            count += sum(p.numel() for p in self.model_.parameters())
        return count

    def save(self, path: str | Path) -> Path:
        """Write a run directory (atomically); ``dlforge.load(path)`` gives this model back."""
        self._check_fitted()
        return save_run(self, Path(path))


# ---------------------------------------------------------------------------------- helpers
def load_weights(net: torch.nn.Module, path: Path, cfg: RunConfig, device: str | None = None
                 ) -> tuple[torch.nn.Module, torch.device, str]:
    """Load a run folder's ``model.safetensors`` into ``net`` (RunDirError if they do not
    match); return it in eval mode on its device, with the device and the precision."""
    missing, unexpected = net.load_state_dict(load_file(path / "model.safetensors",
                                                        device="cpu"), strict=False)
    if missing or unexpected:
        raise RunDirError(f"{path}: model.safetensors does not match config.yaml "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    dev = resolve_device(device or cfg.train.device)
    return net.to(dev).eval(), dev, resolve_precision(cfg.train.precision, dev)


def _better_run(a: Trainer, b: Trainer) -> bool:
    """Whether training run ``a`` beat ``b`` on validation: the better best score of the
    monitored metric, and on a tie the lower validation loss at that epoch."""
    sa, sb = a.state["best_score"], b.state["best_score"]
    if sa != sb:
        return bool(sa > sb) if a.mode == "max" else bool(sa < sb)
    la, lb = a.state.get("best_loss"), b.state.get("best_loss")
    return la is not None and lb is not None and la < lb


def _simple_model(cfg: RunConfig, target: Target) -> SimpleModel:
    """The (unfitted) simple baseline for this run's inputs and output."""
    return SimpleModel({i.name: i.type for i in cfg.inputs}, target.kind, target.n_outputs,
                       cfg.train.seed)


def fit_baseline(target: Target, y_train: np.ndarray) -> np.ndarray:
    """What the baseline predicts: the majority class(es), or the training mean."""
    if isinstance(target, NumericTarget):
        return np.array([float(target.decode(y_train).mean())])
    return majority_label(target.kind, y_train, len(target.classes))


def target_report(target: Target, y_train: np.ndarray) -> dict[str, Any]:
    if isinstance(target, NumericTarget):
        values = target.decode(y_train)
        return {"target_train": {"mean": float(values.mean()), "std": float(values.std()),
                                 "min": float(values.min()), "max": float(values.max())},
                "baseline_mean": float(values.mean())}
    counts = (np.asarray(y_train).sum(axis=0) if target.kind == "multilabel"
              else np.bincount(y_train, minlength=len(target.classes)))
    return {"class_counts_train": {str(c): int(n) for c, n in
                                   zip(target.classes, counts, strict=True)},
            "baseline_majority": majority_label(target.kind, y_train,
                                                len(target.classes)).tolist()}


def baseline_from_report(report: dict[str, Any]) -> np.ndarray:
    if "baseline_mean" in report:
        return np.array([report["baseline_mean"]])
    return np.asarray(report["baseline_majority"], dtype=np.int64)


def _describe_splits(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> str:
    """"270 train, 30 validation rows (no test split)": the rows of each split."""
    parts = [f"{len(train)} train", f"{len(val)} validation"]
    if len(test):
        return ", ".join(parts) + f", {len(test)} test rows"
    return ", ".join(parts) + " rows (no test split: --test-split holds some out)"


def _describe_target(target: Target) -> str:
    if isinstance(target, NumericTarget):
        return f"numeric output (mean {target.mean:.4g}, std {target.std:.4g})"
    return f"{target.kind} labels {target.classes[:10]}"


