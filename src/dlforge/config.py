"""The run schema: one validated description of a run, whichever front door built it.

Python (``TextClassifier(...)``), YAML (``dlforge train run.yaml``) and CLI flags
(``dlforge train --data ... --text ... --label ...``) all produce a :class:`RunConfig`.
Unknown keys and wrong types raise :class:`~dlforge.errors.ConfigError` naming the key's path
(``model.heads: ...``). The resolved config, every default filled in, is saved in each run
directory as ``config.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dlforge._atomic import atomic_file
from dlforge.errors import ConfigError

__all__ = [
    "AutoModelConfig",
    "CNNConfig",
    "CategoryInput",
    "CleanConfig",
    "DataConfig",
    "FAMILY_KINDS",
    "ForecastConfig",
    "ImageAugment",
    "ImageInput",
    "MLPConfig",
    "NumericInput",
    "OutputConfig",
    "PretrainedModelConfig",
    "PrivacyConfig",
    "RNNConfig",
    "RunConfig",
    "SeriesAugment",
    "SequenceInput",
    "TextAugment",
    "TextInput",
    "TrainConfig",
    "TuneConfig",
    "TransformerConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "validate_config",
]

MODEL_FAMILIES = ("transformer", "cnn", "rnn", "mlp", "auto", "pretrained")
INPUT_KINDS = ("text", "image", "numeric", "category", "sequence")
TABULAR_KINDS = ("numeric", "category")
# Which input kinds each family encodes. Numeric and category columns are encoded by their own
# small encoders under any family; the family is the encoder of the text or image input.
FAMILY_KINDS: dict[str, tuple[str, ...]] = {
    "transformer": ("text", "sequence"),
    "cnn": ("text", "image", "sequence"),
    "rnn": ("text", "sequence"),
    "mlp": (),
    "pretrained": ("text",),
    "auto": ("text", "image", "sequence"),
}


class _Strict(BaseModel):
    # Unknown keys are errors; assignments are validated too (set_params goes through them).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------- data
class CleanConfig(_Strict):
    """Cleaning steps applied to the text column before anything else; each one is counted."""

    html: bool = True  # unescape HTML entities, strip tags
    unicode_nfkc: bool = True  # Unicode NFKC normalisation
    whitespace: bool = True  # collapse runs of whitespace, strip the ends
    drop_empty: bool = True  # drop rows whose text is empty after the steps above
    drop_duplicates: bool = True  # drop exact duplicate (text, label) rows
    drop_missing_label: bool = True  # drop rows with no label; false makes them an error
    # replace e-mails, phone numbers, card numbers (Luhn-checked), IP addresses and URLs in
    # text inputs by <EMAIL>, <PHONE>, ... (counted; the originals are never kept)
    pii: bool = False
    pii_region: str = "US"  # the country of phone numbers written without +country code

    @model_validator(mode="after")
    def _known_region(self) -> CleanConfig:
        if self.pii:
            import phonenumbers

            if self.pii_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"pii_region: {self.pii_region!r} is not a region code such "
                                 "as US, GB, DE, IN (ISO 3166-1 alpha-2)")
        return self


class DataConfig(_Strict):
    path: str | None = None  # CSV, TSV, JSONL or Parquet; None when data comes from Python
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    # 0: no validation rows (train the configured epochs on everything, keep the last weights)
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    test_split: float = Field(0.0, ge=0.0, lt=1.0)  # held out, scored once after training
    seed: int = 0
    clean: CleanConfig = Field(default_factory=CleanConfig)

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> DataConfig:
        if self.validation_split + self.test_split >= 0.9:
            raise ValueError("validation_split + test_split must leave at least 10% for training")
        return self


# -------------------------------------------------------------------------------------- inputs
class TextAugment(_Strict):
    """Training-split augmentation of token ids; each a rate, 0 turns it off."""

    delete: float = Field(0.0, ge=0.0, lt=1.0)  # drop each token with this probability
    swap: float = Field(0.0, ge=0.0, lt=1.0)  # swap rate x length random pairs of tokens
    mask: float = Field(0.0, ge=0.0, lt=1.0)  # replace each token by [MASK] with this probability


class TextInput(_Strict):
    name: str  # the column holding the text
    type: Literal["text"] = "text"
    tokenizer: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: int = Field(10_000, ge=50, le=1_000_000)
    max_length: int = Field(128, ge=2, le=100_000)
    lowercase: bool = True
    min_frequency: int = Field(2, ge=1)
    augment: TextAugment = Field(default_factory=TextAugment)

    @model_validator(mode="after")
    def _bpe_needs_room_for_merges(self) -> TextInput:
        # Byte-level BPE starts from 256 byte symbols + 5 special tokens; below that it can
        # learn no merge and every text becomes single bytes.
        if self.tokenizer == "bpe" and self.vocab_size < 300:
            raise ValueError(f"vocab_size {self.vocab_size} is too small for the byte-level BPE "
                             "tokenizer (256 byte symbols come first); use at least 300, or "
                             "tokenizer: wordpiece")
        return self


class ImageAugment(_Strict):
    """Training-split augmentation of images; each 0 turns it off."""

    crop: int = Field(0, ge=0)  # pad by this many pixels, crop back at a random offset
    flip: float = Field(0.0, ge=0.0, le=1.0)  # probability of a horizontal flip
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # max degrees either way
    noise: float = Field(0.0, ge=0.0)  # std of Gaussian noise (in normalised units)


class ImageInput(_Strict):
    """A column of images (file paths or arrays), or a folder of class sub-folders."""

    name: str
    type: Literal["image"]
    # (height, width) to resize to; None: every image must have the same size
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    color: Literal["auto", "gray", "rgb"] = "auto"  # auto: gray stays gray, colour is RGB
    augment: ImageAugment = Field(default_factory=ImageAugment)


class SeriesAugment(_Strict):
    """Training-split augmentation of numeric sequences (in standardised units); 0 is off."""

    jitter: float = Field(0.0, ge=0.0)  # std of Gaussian noise added to every value
    scaling: float = Field(0.0, ge=0.0)  # std of a random factor around 1, one per sequence
    slice: float = Field(0.0, ge=0.0, lt=1.0)  # crop up to this fraction, stretch back


class SequenceInput(_Strict):
    """A column whose every value is a sequence of numbers (a list, an array (T, F), or a
    string such as "0.1 0.4 0.2"): standardised per channel, padded per batch."""

    name: str
    type: Literal["sequence"]
    max_length: int = Field(512, ge=2)  # longer sequences keep their last max_length steps
    augment: SeriesAugment = Field(default_factory=SeriesAugment)


class NumericInput(_Strict):
    """A numeric column: standardised on the training split; missing values become the mean,
    with a 0/1 indicator beside them."""

    name: str
    type: Literal["numeric"]


class CategoryInput(_Strict):
    """A categorical column: each value seen in training (at least ``min_count`` times) gets
    an embedding; unseen or missing values share one "unknown" embedding."""

    name: str
    type: Literal["category"]
    embedding_dim: int | None = Field(None, ge=1)  # None: min(32, (categories + 1) // 2 + 1)
    min_count: int = Field(1, ge=1)


InputConfig = Annotated[TextInput | ImageInput | NumericInput | CategoryInput | SequenceInput,
                        Field(discriminator="type")]


class ForecastConfig(_Strict):
    """Forecast ``targets`` ``horizon`` steps ahead from a ``window`` of past values. The data
    is one table in time order (a row per step); splits are chronological."""

    targets: list[str] = Field(min_length=1)  # the series to forecast
    time: str | None = None  # a time column: must be sorted, without duplicates
    covariates: list[str] = Field(default_factory=list)  # other series, past values as inputs
    exogenous: list[str] = Field(default_factory=list)  # known ahead: also their future values
    window: int = Field(24, ge=1)
    horizon: int = Field(1, ge=1)
    season: int | None = Field(None, ge=1)  # seasonal-naive period; None: from the time column
    # window: each window is also scaled by its own mean and std (as RevIN, Kim et al. 2022),
    # so trends and levels outside the training range forecast well; global: training scaling
    normalize: Literal["window", "global"] = "window"
    augment: SeriesAugment = Field(default_factory=SeriesAugment)

    @model_validator(mode="after")
    def _columns_once(self) -> ForecastConfig:
        cols = [*self.targets, *self.covariates, *self.exogenous,
                *([self.time] if self.time else [])]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"column {dup[0]!r} is listed twice (targets, covariates, "
                             "exogenous and time must be different columns)")
        for name in ("scaling", "slice"):
            if getattr(self.augment, name):
                raise ValueError(f"forecast.augment.{name}: would change the window but not the "
                                 "steps that follow it, so the target no longer fits; for "
                                 "forecasting use augment.jitter")
        return self


class OutputConfig(_Strict):
    name: str  # the column holding the label (or the number, for regression)
    # auto: numeric for a column of non-integer numbers, else binary / category / multilabel
    type: Literal["auto", "binary", "category", "multilabel", "numeric"] = "auto"
    separator: str = "|"  # splits a multi-label string such as "sports|politics"


# -------------------------------------------------------------------------------------- models
class TransformerConfig(_Strict):
    """The article's encoder: token + position embeddings, pre-LN blocks, masked mean pooling."""

    name: Literal["transformer"] = "transformer"
    d_model: int = Field(512, ge=4)
    heads: int = Field(4, ge=1)
    layers: int = Field(1, ge=1)
    ffn_dim: int | None = Field(None, ge=1)  # None: 4 x d_model
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # > 0 disables the fused CPU kernel
    checkpointing: bool = False  # recompute block activations in backward: less memory
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


class CNNConfig(_Strict):
    """For text, TextCNN (Kim, 2014): parallel 1-D convolutions of several widths, max-pooled
    over time. For images, stages of conv → batch-norm → ReLU blocks (residual if asked), each
    stage after the first halving the resolution, then global average pooling."""

    name: Literal["cnn"] = "cnn"
    d_model: int = Field(128, ge=2)  # text: embedding width
    kernel_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [3, 4, 5])
    filters: int = Field(100, ge=1)  # text: filters per kernel size
    channels: list[Annotated[int, Field(ge=1)]] = Field(  # images: width of each stage
        default_factory=lambda: [32, 64, 128])
    blocks: int = Field(1, ge=1)  # images: conv blocks per stage
    residual: bool = True  # images: residual connection around each block
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class RNNConfig(_Strict):
    """A (bidirectional) GRU or LSTM over packed sequences; final states feed the head."""

    name: Literal["rnn"] = "rnn"
    cell: Literal["gru", "lstm"] = "gru"
    d_model: int = Field(128, ge=2)  # embedding width
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class PretrainedModelConfig(_Strict):
    """Fine-tune a local Hugging Face encoder folder (AutoModel + its tokenizer) on the text
    input. Written ``model: path/to/folder`` for short. The text input's own tokenizer settings
    (tokenizer, vocab_size, lowercase, min_frequency) do not apply: the folder's tokenizer does.
    """

    name: Literal["pretrained"] = "pretrained"
    path: str  # a folder with config.json, model.safetensors and tokenizer files
    freeze: bool = False  # freeze the whole encoder: train the head only
    freeze_layers: int = Field(0, ge=0)  # freeze the embeddings and the first k layers
    pooling: Literal["cls", "mean"] = "cls"
    head_lr: float | None = Field(None, gt=0.0)  # learning rate of the head; None: train.lr
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class MLPConfig(_Strict):
    """A multi-layer perceptron over the table's encoded columns (Linear → ReLU → dropout)."""

    name: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @property
    def head_hidden(self) -> list[int]:
        return self.hidden


class AutoModelConfig(_Strict):
    """Model selection: train each candidate family that fits the data under the same budget
    (epochs, batch size, learning rate, folds), score each by k-fold cross-validation
    (stratified for classification, expanding windows in time for forecasting), and keep the
    winner. The leaderboard is saved in the run's metrics."""

    name: Literal["auto"] = "auto"
    families: list[Literal["transformer", "cnn", "rnn", "mlp"]] | None = None  # None: all fit
    cv: int = Field(3, ge=2)
    metric: Literal["auto", "accuracy", "macro_f1", "roc_auc", "mae", "rmse", "r2", "smape"] = (
        "auto")  # auto: accuracy (classification), rmse (regression), mae (forecasting)


ModelConfig = Annotated[TransformerConfig | CNNConfig | RNNConfig | MLPConfig
                        | PretrainedModelConfig | AutoModelConfig, Field(discriminator="name")]


# ---------------------------------------------------------------------------------------- train
class TrainConfig(_Strict):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)  # global: split across processes under torchrun
    accumulate: int = Field(1, ge=1)  # micro-batches per optimizer step (gradient accumulation)
    lr: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup: float = Field(0.1, ge=0.0, lt=1.0)  # fraction of all steps spent warming up
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, ge=0.0)  # 0 or None: no clipping
    patience: int | None = Field(3, ge=0)  # early stopping; 0 or None: every epoch
    monitor: Literal["auto", "loss", "accuracy", "macro_f1", "roc_auc", "mae", "rmse", "r2",
                     "smape"] = "auto"
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
# Short names for the keys people tune most; any other key by its dotted path (train.lr).
TUNE_ALIASES = {
    "lr": "train.lr", "batch_size": "train.batch_size", "epochs": "train.epochs",
    "weight_decay": "train.weight_decay", "warmup": "train.warmup",
    "model": "model.name", "d_model": "model.d_model", "heads": "model.heads",
    "layers": "model.layers", "dropout": "model.dropout", "hidden": "model.hidden",
    "filters": "model.filters", "cell": "model.cell",
}


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


# ------------------------------------------------------------------------------------------ run
class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    inputs: list[InputConfig] = Field(default_factory=list)
    output: OutputConfig | None = None
    forecast: ForecastConfig | None = None  # a forecasting run (then no inputs/output)
    model: ModelConfig = Field(default_factory=TransformerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig | None = None  # a search space for dlforge tune
    privacy: PrivacyConfig | None = None  # differentially private training (DP-SGD)

    @property
    def text(self) -> TextInput:
        """The first text input (the one of a text classifier)."""
        for inp in self.inputs:
            if isinstance(inp, TextInput):
                return inp
        raise ConfigError("this run has no text input")

    @model_validator(mode="after")
    def _inputs_fit_the_model(self) -> RunConfig:
        if self.forecast is not None:
            if self.inputs or self.output is not None:
                raise ValueError("forecast: a forecasting run takes its columns from forecast "
                                 "(targets, covariates, exogenous); remove inputs and output")
            check_family_fits(self.model.name, ["sequence"])
            return self
        if not self.inputs:
            raise ValueError("inputs: list at least one input column (or give forecast:)")
        if self.output is None:
            raise ValueError("output: name the output column (output: {name: COLUMN})")
        names = [i.name for i in self.inputs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"inputs: column {dup[0]!r} is listed twice")
        if self.output.name in names:
            raise ValueError(f"output.name: column {self.output.name!r} is also an input")
        check_family_fits(self.model.name, [i.type for i in self.inputs])
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> RunConfig:
        """What DP-SGD cannot make private is refused here, each with the way out."""
        if self.privacy is None:
            return self
        refused = [  # (key, refused?, why and what to do instead)
            ("forecast", self.forecast is not None,
             "forecasting windows overlap, so one row of the table is in many training "
             "examples and DP-SGD's per-example guarantee would not cover it; train a "
             "classifier or regressor on independent rows"),
            ("model.name", self.model.name == "pretrained",
             "a pretrained Hugging Face encoder cannot be trained privately here; use "
             "transformer, cnn, rnn or mlp"),
            ("model.name", self.model.name == "auto",
             "model selection trains and scores many models on the same rows, which the "
             "privacy budget does not account for; name the family (transformer, cnn, rnn, "
             "mlp)"),
            ("model.checkpointing", getattr(self.model, "checkpointing", False),
             "activation checkpointing re-runs the forward pass in backward, which breaks "
             "Opacus' per-row gradients; set it to false"),
            ("train.accumulate", self.train.accumulate > 1,
             "gradient accumulation is not supported with DP-SGD (each Poisson-sampled batch "
             "is one noisy step); set it to 1 and raise train.batch_size instead"),
            ("train.compile", self.train.compile,
             "torch.compile does not run Opacus' per-row gradient hooks; set it to false"),
            ("train.cv", bool(self.train.cv),
             "cross-validation trains more models on the same rows, which the privacy budget "
             "does not account for; remove it"),
        ]
        for key, bad, reason in refused:
            if bad:
                raise ValueError(f"{key}: {reason} (privacy is set)")
        return self


def check_family_fits(family: str, kinds: list[str]) -> None:
    """Raise ValueError unless model ``family`` can encode inputs of ``kinds``."""
    rich = [k for k in kinds if k not in TABULAR_KINDS]
    if len(rich) > 1:
        raise ValueError(f"inputs: at most one text or image input per model (got {len(rich)}: "
                         f"{', '.join(rich)}); numeric and category columns may be added freely")
    kind = rich[0] if rich else "table"
    fits = FAMILY_KINDS[family]
    if (rich and rich[0] in fits) or (not rich and family in ("mlp", "auto")):
        return
    good = ([f for f, ks in FAMILY_KINDS.items() if kind in ks and f not in ("pretrained",
                                                                             "auto")]
            if rich else ["mlp"])
    raise ValueError(f"model.name: {family!r} does not fit {kind} inputs; families that fit "
                     f"{kind} inputs: {', '.join(good)}")


# ------------------------------------------------------------------------------------- helpers
def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        # Discriminated unions put the tag in the location (model.transformer.heads): drop it.
        if i > 0 and loc[i - 1] == "model" and item in MODEL_FAMILIES:
            continue
        if i > 0 and isinstance(loc[i - 1], int) and item in INPUT_KINDS:
            continue
        if i > 0 and loc[i - 1] == "tune" and item == "space":
            continue
        if item in ("function-after", "function-before"):
            continue
        parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line per problem, each naming the key's dotted path."""
    lines = []
    for e in err.errors():
        path = _loc_to_path(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _parent_model_fields(tuple(e["loc"])[:-1])
            if parent:
                msg += f"; valid keys here are: {', '.join(parent)}"
        elif e["type"] == "union_tag_invalid":
            tag = e.get("ctx", {}).get("tag")
            what, choices = (("input type", INPUT_KINDS) if "inputs" in e["loc"]
                             else ("model", MODEL_FAMILIES))
            msg = f"unknown {what} {tag!r}; choose one of: {', '.join(choices)}"
            if what == "model":
                msg = (f"unknown model {tag!r}; choose one of: {', '.join(MODEL_FAMILIES[:-1])}"
                       ", or the path of a local Hugging Face model folder")
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        msg = msg.removeprefix("Value error, ")
        if msg.startswith((f"{path}.", f"{path}:")):  # the message names the key itself
            path = "<root>"
        lines.append(f"{source}: {msg}" if path == "<root>" else f"{source}: {path}: {msg}")
    return "; ".join(lines)


def _parent_model_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig
    for item in loc:
        if isinstance(item, int):
            continue
        if item in INPUT_KINDS and loc and "inputs" in loc:
            model = {"text": TextInput, "image": ImageInput, "numeric": NumericInput,
                     "category": CategoryInput, "sequence": SequenceInput}[item]
            continue
        if model is None:
            return []
        if item in MODEL_FAMILIES and loc and "model" in loc:
            model = {"transformer": TransformerConfig, "cnn": CNNConfig, "rnn": RNNConfig,
                     "mlp": MLPConfig, "pretrained": PretrainedModelConfig,
                     "auto": AutoModelConfig}[item]
            continue
        field = model.model_fields.get(item)
        if field is None:
            return []
        ann = field.annotation
        model = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
    return list(model.model_fields) if model is not None else []


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from plain data, raising ConfigError naming each bad key's path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got "
                          f"{type(data).__name__}")
    model = data.get("model")
    inputs = data.get("inputs")
    if isinstance(inputs, list):  # an input without a type is a text column
        data = {**data, "inputs": [{"type": "text", **i} if isinstance(i, dict) and "type" not in i
                                   else i for i in inputs]}
    if isinstance(model, str):  # model: transformer, or model: path/to/hf-folder
        model = {"name": model}
    if isinstance(model, dict) and isinstance(model.get("name"), str) and is_pretrained_path(
            model["name"]):
        model = {**model, "name": "pretrained", "path": model["name"]}
    if model is not None:
        data = {**data, "model": model}
    if model is None or (isinstance(model, dict) and "name" not in model):
        family = ("rnn" if data.get("forecast") is not None
                  else default_family(data.get("inputs")))
        data = {**data, "model": {"name": family, **(model or {})}}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def is_pretrained_path(name: str) -> bool:
    """True when ``name`` looks like a folder path rather than one of our family names."""
    if name in MODEL_FAMILIES:
        return False
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in seps) or name.startswith((".", "~", "/")):
        return True
    return Path(name).is_dir()


def default_family(inputs: Any) -> str:
    """The family a config without ``model.name`` gets: cnn for images, mlp for tables, the
    Transformer for text."""
    kinds = {i.get("type", "text") for i in inputs if isinstance(i, dict)} if isinstance(
        inputs, list) else set()
    if "image" in kinds:
        return "cnn"
    if "sequence" in kinds:
        return "rnn"
    if kinds and kinds <= set(TABULAR_KINDS):
        return "mlp"
    return "transformer"


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` (dotted paths) win over the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text ({err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", err)
        raise ConfigError(f"{p}:{where} is not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{p}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data, source=str(p))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted-path keys (``train.epochs``, ``inputs.0.name``) in a copy of ``data``.

    Switching ``model.name`` to another family drops the old family's settings, so
    ``--model cnn`` on a file written for the transformer does what it says.
    """
    import copy

    out = copy.deepcopy(data)
    new_family = overrides.get("model.name")
    model = out.get("model")
    if (new_family is not None and isinstance(model, dict)
            and model.get("name", "transformer") != new_family):
        out["model"] = {}
    for key, value in overrides.items():
        node: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                node = node[idx]
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = [] if parts[parts.index(part) + 1].isdigit() else {}
                    node[part] = nxt
                node = nxt
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last)
            while len(node) <= idx:
                node.append({})
            node[idx] = value
        else:
            node[last] = value
    return out


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
