"""The training side of the run schema: the optimisation (``train:``), differentially private
training (``privacy:``), a hyper-parameter search space (``tune:``) and experiment tracking
(``tracking:``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dlforge.config._base import _Strict
from dlforge.config.params import TUNE_ALIASES  # short names: the parameter table's
from dlforge.errors import ConfigError

__all__ = [
    "SPEC_KINDS",
    "TRACKERS",
    "TUNE_ALIASES",
    "TUNE_SETTINGS",
    "MlflowTracking",
    "PrivacyConfig",
    "TensorBoardTracking",
    "TrackingConfig",
    "TrainConfig",
    "TuneConfig",
    "add_trackers",
]


# ---------------------------------------------------------------------------------------- train
class TrainConfig(_Strict):
    """The optimisation. The fields that default to None (epochs, batch_size, lr,
    weight_decay, warmup, patience, restarts) are chosen at training time from the number of
    training rows and the model family (:mod:`dlforge.train.recipe`) unless set; the run's
    config.yaml holds the values used."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)  # global: split across processes under torchrun
    accumulate: int = Field(1, ge=1)  # micro-batches per optimizer step (gradient accumulation)
    lr: float | None = Field(None, gt=0.0)
    weight_decay: float | None = Field(None, ge=0.0)
    warmup: float | None = Field(None, ge=0.0, lt=1.0)  # fraction of all steps warming up
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, ge=0.0)  # 0 or None: no clipping
    patience: int | None = Field(None, ge=0)  # early stopping; 0: every epoch; None: recipe
    # Train this many times from different seeds (the run's seed, +1, ...) and keep the run
    # that scores best on the validation split. None: the recipe's choice (3 for a pretrained
    # encoder on fewer than 1,000 training rows, where fine-tuning is least stable; else 1).
    restarts: int | None = Field(None, ge=1)
    monitor: Literal["auto", "loss", "accuracy", "macro_f1", "roc_auc", "mae", "rmse", "r2",
                     "smape"] = "auto"
    # balanced: each class weighs n / (classes x its count) in the loss; auto: balanced when
    # the monitored metric is macro-F1, none otherwise.
    class_weight: Literal["auto", "none", "balanced"] = "auto"
    # Label smoothing (Szegedy et al., 2016) of the training loss of a classifier: the target
    # puts 1 - s on the true class and spreads s over all of them (binary and multi-label: each
    # 0/1 target moves s/2 towards 1/2). The validation loss is never smoothed. 0: off; None:
    # the recipe's (0.1 for a binary or multi-class network trained from scratch, else 0).
    label_smoothing: float | None = Field(None, ge=0.0, lt=1.0)
    # The share of the strong simple baseline (dlforge.models.simple, fitted on the same
    # training rows; text, numeric and category inputs) in the predictions: probabilities (or
    # numbers) averaged as (1 - w) x network + w x baseline. auto: the w of 0, 0.25, 0.5, 0.75
    # and 1 that scores best on the validation split (the smallest on a tie); 0 where there is
    # no validation split or no baseline for the inputs. The run's config.yaml holds the w used.
    # For forecasting the baseline is the seasonal-naive forecast, averaged the same way when
    # a share is given (needs a season > 1 and window >= season); auto is 0 there (a share
    # chosen on the few validation windows misjudged the test year).
    baseline_weight: float | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _weight_in_range(self) -> TrainConfig:
        if self.baseline_weight != "auto" and not 0.0 <= float(self.baseline_weight) <= 1.0:
            raise ValueError(f"baseline_weight: expected a number from 0 to 1 or auto, got "
                             f"{self.baseline_weight}")
        return self
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    seed: int = 0
    bucket_by_length: bool = True
    compile: bool = False
    num_threads: int | None = Field(None, ge=1)
    cv: int | None = Field(None, ge=2)  # also score by k-fold cross-validation (mean ± std)


# -------------------------------------------------------------------------------------- privacy
class PrivacyConfig(_Strict):
    """Differentially private training (DP-SGD through Opacus): per-row gradients clipped to
    ``max_grad_norm``, Gaussian noise calibrated so that the whole training spends at most
    ``target_epsilon`` at ``target_delta``, batches drawn by Poisson sampling. The ε actually
    spent is recorded in the run (privacy.json)."""

    target_epsilon: float = Field(gt=0.0)
    target_delta: float = Field(1e-5, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"


# ----------------------------------------------------------------------------------------- tune
SPEC_KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
TUNE_SETTINGS = ("sampler", "pruner", "seed")


class TuneConfig(_Strict):
    """A search space: ``{key: {log_uniform|uniform|int|log_int: [low, high]} or {choice:
    [...]}}``, keys by short name (lr, batch_size, epochs, d_model, dropout, model, ...) or
    dotted path (train.warmup, inputs.0.max_length); plus the sampler, pruner and seed.
    Written flat in YAML (``tune: {lr: {log_uniform: [1e-5, 1e-2]}, sampler: tpe}``)."""

    space: dict[str, dict[str, list[Any]]] = Field(min_length=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "space" not in data:
            space = {k: v for k, v in data.items() if k not in TUNE_SETTINGS}
            data = {**{k: v for k, v in data.items() if k in TUNE_SETTINGS}, "space": space}
        if isinstance(data, dict) and not data.get("space"):
            raise ValueError("tune: the search space is empty; add at least one key, e.g. "
                             "lr: {log_uniform: [1e-5, 1e-2]}")
        return data

    @model_validator(mode="after")
    def _specs(self) -> TuneConfig:
        for name, spec in self.space.items():
            if len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
                raise ValueError(f"tune.{name}: expected one of {', '.join(SPEC_KINDS)} with its "
                                 f"values, e.g. {{log_uniform: [1e-5, 1e-2]}} or {{choice: [32, "
                                 f"64]}}; got {spec!r}")
            kind, values = next(iter(spec.items()))
            if kind == "choice":
                if not values:
                    raise ValueError(f"tune.{name}: choice needs at least one value")
                continue
            if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                           for v in values) or values[0] >= values[1]:
                raise ValueError(f"tune.{name}: {kind} needs [low, high] numbers with low < high, "
                                 f"got {values!r}")
            if kind in ("int", "log_int") and not all(float(v).is_integer() for v in values):
                raise ValueError(f"tune.{name}: {kind} needs whole-number bounds, got {values!r}")
            if kind.startswith("log") and values[0] <= 0:
                raise ValueError(f"tune.{name}: {kind} needs a positive low bound, got "
                                 f"{values[0]}")
        if self.sampler == "grid" and any(next(iter(s)) != "choice" for s in self.space.values()):
            raise ValueError("tune.sampler: grid search needs every key as a choice: [...]")
        return self

    def paths(self) -> dict[str, str]:
        """Each searched key's dotted config path."""
        return {name: TUNE_ALIASES.get(name, name) for name in self.space}



# ------------------------------------------------------------------------------------- tracking
TRACKERS = ("mlflow", "tensorboard")


class MlflowTracking(_Strict):
    """Where MLflow runs go. ``uri``: this, else the ``MLFLOW_TRACKING_URI`` environment
    variable, else ``sqlite:///mlflow.db`` in the working directory (a local file, no server;
    artifacts under ./mlruns). ``experiment``: this, else ``MLFLOW_EXPERIMENT_NAME``, else
    dlforge."""

    uri: str | None = None
    experiment: str | None = None


class TensorBoardTracking(_Strict):
    """TensorBoard event files: one folder per run under ``log_dir``
    (``tensorboard --logdir LOG_DIR``)."""

    log_dir: str = "tensorboard"


class TrackingConfig(_Strict):
    """Experiment tracking (the ``track`` extra): the resolved config, the metrics of every
    epoch and the run directory's plots and model card, logged to each backend set here.
    Written as ``tracking: {mlflow: {uri: ..., experiment: ...}, tensorboard: {log_dir: ...}}``,
    or by name: ``tracking: mlflow``, ``tracking: [mlflow, tensorboard]`` (each with its
    defaults; ``mlflow: true`` likewise)."""

    mlflow: MlflowTracking | None = None
    tensorboard: TensorBoardTracking | None = None

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = [n.strip() for n in data.split(",") if n.strip()]
        if isinstance(data, list | tuple):
            unknown = [n for n in data if n not in TRACKERS]
            if unknown:
                raise ValueError(f"unknown tracker {unknown[0]!r}; choose from "
                                 f"{', '.join(TRACKERS)}")
            data = {n: {} for n in data}
        if isinstance(data, dict):  # mlflow: true (on, its defaults); false (off)
            data = {k: ({} if v is True else None if v is False else v) for k, v in data.items()}
        return data

    def names(self) -> list[str]:
        """The backends that are on."""
        return [n for n in TRACKERS if getattr(self, n) is not None]


def add_trackers(tracking: TrackingConfig | None, names: list[str] | str | None,
                 flag: str = "--track") -> TrackingConfig | None:
    """``tracking`` with the backends ``names`` (each a name or a comma list, as ``--track``
    gives them) turned on: a backend the config already sets keeps its settings, a new one
    gets its defaults. An unknown name is a ConfigError naming ``flag``."""
    if isinstance(names, str):
        names = [names]
    wanted = [n.strip() for v in names or () for n in v.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"{flag}: unknown tracker {unknown[0]!r}; choose from "
                          f"{', '.join(TRACKERS)} (several: {flag} mlflow,tensorboard)")
    if not wanted:
        return tracking
    current = tracking.model_dump() if tracking is not None else {}
    return TrackingConfig.model_validate(
        {**current, **{n: current.get(n) or {} for n in wanted}})
