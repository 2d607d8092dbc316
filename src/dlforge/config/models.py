"""The model side of the run schema (``model:``): one settings class per family, told apart by
``name``."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from dlforge.config._base import _Strict

__all__ = [
    "CANDIDATES",
    "FAMILY_CONFIGS",
    "FAMILY_KINDS",
    "MODEL_FAMILIES",
    "AutoModelConfig",
    "BaselineConfig",
    "CNNConfig",
    "CRNNConfig",
    "EnsembleConfig",
    "MLPConfig",
    "ModelConfig",
    "PretrainedModelConfig",
    "RNNConfig",
    "TransformerConfig",
    "member_folder",
    "member_model",
]

# -------------------------------------------------------------------------------------- models
class TransformerConfig(_Strict):
    """The article's encoder: token + position embeddings, pre-LN blocks, masked mean pooling."""

    KINDS: ClassVar[tuple[str, ...]] = ("text", "sequence")  # the input kinds it encodes
    # The smallest sensible settings, for tests (dlforge.testing.check_model).
    TINY: ClassVar[dict[str, Any]] = {"d_model": 16, "heads": 2, "layers": 2, "dropout": 0.0}
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

    # the input kinds it encodes (audio: its log-mel spectrogram, as a one-channel image)
    KINDS: ClassVar[tuple[str, ...]] = ("text", "image", "sequence", "audio")
    # The smallest sensible settings, for tests (dlforge.testing.check_model).
    TINY: ClassVar[dict[str, Any]] = {"d_model": 16, "filters": 8, "kernel_sizes": [2, 3],
                                       "channels": [4, 8], "dropout": 0.0}
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

    KINDS: ClassVar[tuple[str, ...]] = ("text", "sequence")  # the input kinds it encodes
    # The smallest sensible settings, for tests (dlforge.testing.check_model).
    TINY: ClassVar[dict[str, Any]] = {"d_model": 16, "hidden": 8, "dropout": 0.0}
    name: Literal["rnn"] = "rnn"
    cell: Literal["gru", "lstm"] = "gru"
    d_model: int = Field(128, ge=2)  # embedding width
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class CRNNConfig(_Strict):
    """For audio: convolution blocks over the log-mel spectrogram (each stage halving the
    mel bands and the frames with a 2x2 max pool), then a (bidirectional) GRU over the
    frames, its final states feeding the head."""

    KINDS: ClassVar[tuple[str, ...]] = ("audio",)  # the input kinds it encodes
    # The smallest sensible settings, for tests (dlforge.testing.check_model).
    TINY: ClassVar[dict[str, Any]] = {"channels": [4, 8], "hidden": 8, "dropout": 0.0}
    name: Literal["crnn"] = "crnn"
    channels: list[Annotated[int, Field(ge=1)]] = Field(  # width of each conv stage
        default_factory=lambda: [32, 64])
    residual: bool = True  # residual connection around each conv block
    cell: Literal["gru", "lstm"] = "gru"
    hidden: int = Field(64, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class PretrainedModelConfig(_Strict):
    """Fine-tune a local Hugging Face encoder folder (AutoModel + its tokenizer) on the text
    input. Written ``model: path/to/folder`` for short. The text input's own tokenizer settings
    (tokenizer, vocab_size, lowercase, min_frequency) do not apply: the folder's tokenizer does.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("text",)  # the input kinds it encodes
    name: Literal["pretrained"] = "pretrained"
    path: str  # a folder with config.json, model.safetensors and tokenizer files
    freeze: bool = False  # freeze the whole encoder: train the head only
    freeze_layers: int = Field(0, ge=0)  # freeze the embeddings and the first k layers
    pooling: Literal["cls", "mean"] = "cls"
    head_lr: float | None = Field(None, gt=0.0)  # learning rate of the head; None: train.lr
    # Layer-wise learning-rate decay: the top layer trains at the learning rate, each layer
    # below at this factor of the one above, the embeddings lowest (1: one rate for all). The
    # lower layers hold the most general features; ULMFiT / Sun et al. (2019) decay them.
    layer_decay: float = Field(0.9, gt=0.0, le=1.0)
    # Re-initialise the top k layers before fine-tuning (their pretraining is the most
    # specific to the pretraining task; Zhang et al., 2021).
    reinit_layers: int = Field(0, ge=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class MLPConfig(_Strict):
    """A multi-layer perceptron over the table's encoded columns (Linear → ReLU → dropout)."""

    KINDS: ClassVar[tuple[str, ...]] = ("table",)  # numbers and categories only
    # The smallest sensible settings, for tests (dlforge.testing.check_model).
    TINY: ClassVar[dict[str, Any]] = {"hidden": [8], "dropout": 0.0}
    name: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @property
    def head_hidden(self) -> list[int]:
        return self.hidden


class BaselineConfig(_Strict):
    """The strong simple baseline (:mod:`dlforge.models.simple`): word + character TF-IDF
    and a cross-validated logistic (or ridge) regression when there is a text input,
    histogram gradient-boosted trees for a table. A model selection candidate, the yardstick
    of every text or table run, and a run of its own (saved with skops, never pickled)."""

    KINDS: ClassVar[tuple[str, ...]] = ("text", "table")  # the input kinds it encodes
    TINY: ClassVar[dict[str, Any]] = {}  # nothing to shrink
    name: Literal["baseline"] = "baseline"

    @property
    def head_hidden(self) -> list[int]:
        return []


# The families model selection chooses from (those whose KINDS fit the data). A new family is
# its config class here, in this tuple, and its builder in dlforge.models.registry.
CANDIDATES: tuple[type[_Strict], ...] = (TransformerConfig, CNNConfig, RNNConfig, MLPConfig,
                                         BaselineConfig, CRNNConfig)
_CANDIDATE_NAMES = tuple(c.model_fields["name"].default for c in CANDIDATES)


class AutoModelConfig(_Strict):
    """Model selection: train each candidate family that fits the data under the same budget
    (epochs, batch size, learning rate, folds), score each by k-fold cross-validation
    (stratified for classification, expanding windows in time for forecasting) with successive
    halving (weak candidates stop after one fold), and keep the winner. The leaderboard
    is saved in the run's metrics."""

    # the input kinds it encodes
    KINDS: ClassVar[tuple[str, ...]] = ("text", "image", "sequence", "audio")
    name: Literal["auto"] = "auto"
    families: list[Literal[_CANDIDATE_NAMES]] | None = None  # None: all that fit
    cv: int = Field(3, ge=2)
    # Successive halving: every candidate is scored on the last fold; only the best third of
    # the networks (at least one) and the simple baseline (seconds to fit) go on to the other
    # folds. False: every candidate on every fold.
    halving: bool = True
    # Also score the average of the two best fully cross-validated candidates on the same
    # folds, and keep that ensemble when it scores better than the best one alone (on the mean
    # and on most folds). Off by default: on the quality suite it never raised a test score
    # and on the tweets it cost 1.7 points (benchmarks/README.md, issue 17).
    ensemble: bool = False
    # Local pretrained encoder folders (Hugging Face: config, weights, tokenizer) that are
    # candidates too, each fine-tuned with the pretrained recipe (a text input only).
    pretrained: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_folders(self) -> AutoModelConfig:
        names = [member_folder(p) for p in self.pretrained]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            name = clash[0].removeprefix("pretrained-")
            raise ValueError(f"pretrained: two folders named {name!r}; give folders of "
                             "different names")
        return self
    metric: Literal["auto", "accuracy", "macro_f1", "roc_auc", "mae", "rmse", "r2", "smape"] = (
        "auto")  # auto: accuracy (classification), rmse (regression), mae (forecasting)


class EnsembleConfig(_Strict):
    """Several families trained on the same rows, their predictions averaged (the mean of
    their probabilities; of their numbers for regression). What ``model: auto`` keeps when the
    average of its two best candidates beats the best one in cross-validation; also a run of
    its own (``model: {name: ensemble, members: [cnn, rnn]}``). Each member is a whole run of
    its family (its recipe, its blend with the simple baseline), saved in the run's
    ``members/`` folder."""

    # it encodes what its members encode (each member must fit the inputs)
    KINDS: ClassVar[tuple[str, ...]] = ("text", "image", "sequence", "audio", "table")
    name: Literal["ensemble"] = "ensemble"
    # each a family (transformer, cnn, rnn, mlp, baseline, crnn) or the path of a local
    # pretrained encoder folder (a text input)
    members: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> EnsembleConfig:
        for m in self.members:
            if m not in _CANDIDATE_NAMES and not _is_path(m):
                raise ValueError(f"members: {m!r} is neither a family ("
                                 f"{', '.join(_CANDIDATE_NAMES)}) nor a pretrained folder path")
        dup = sorted({m for m in self.members if self.members.count(m) > 1})
        if dup:
            raise ValueError(f"members: {dup[0]!r} is listed twice")
        folders = [member_folder(m) for m in self.members]
        clash = sorted({f for f in folders if folders.count(f) > 1})
        if clash:
            raise ValueError(f"members: two pretrained folders named {clash[0]!r}; give "
                             "folders of different names")
        return self

    @property
    def head_hidden(self) -> list[int]:
        return []


def _is_path(name: str) -> bool:
    """A model name that is a folder path (``model: path/to/folder``), not a family name."""
    import os
    from pathlib import Path

    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    return (any(sep in name for sep in seps) or name.startswith((".", "~", "/"))
            or Path(name).is_dir())


def member_model(member: str) -> dict[str, Any]:
    """The ``model:`` of an ensemble member or a model-selection candidate: a family, or a
    pretrained encoder folder."""
    if member in _CANDIDATE_NAMES:
        return {"name": member}
    return {"name": "pretrained", "path": member}


def member_folder(member: str) -> str:
    """Where an ensemble keeps a member's run (``members/<this>``): the family's name, or
    ``pretrained-<folder name>``."""
    from pathlib import Path

    if member in _CANDIDATE_NAMES:
        return member
    return "pretrained-" + (Path(member).expanduser().name or "encoder")


FAMILY_CONFIGS: tuple[type[_Strict], ...] = (*CANDIDATES, AutoModelConfig,
                                              PretrainedModelConfig, EnsembleConfig)
MODEL_FAMILIES = tuple(c.model_fields["name"].default for c in FAMILY_CONFIGS)
# Which input kinds each family encodes. Numeric and category columns are encoded by their own
# small encoders under any family; the family is the encoder of the text or image input.
FAMILY_KINDS: dict[str, tuple[str, ...]] = {
    c.model_fields["name"].default: c.KINDS for c in FAMILY_CONFIGS}  # type: ignore[attr-defined]
ModelConfig = Annotated[Union[FAMILY_CONFIGS], Field(discriminator="name")]  # noqa: UP007
