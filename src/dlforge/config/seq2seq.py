"""A sequence-to-sequence run's settings: flat, validated, saved as the run's ``config.yaml``.

The same fields are the keyword arguments of :class:`dlforge.Seq2Seq` and, through the
parameter table (rows whose key starts with ``seq2seq.``, plus the shared ones such as
``--epochs``), the flags of ``dlforge train --source COL --target COL``. The defaults learn a
task of a few thousand pairs on a CPU in minutes: a 3 + 3 layer pre-LN Transformer of width
128 with sinusoidal positions, a shared byte-level BPE vocabulary of at most 1,000 tokens,
label smoothing 0.1, AdamW at 1e-3 with warm-up and cosine decay, early stopping on the
validation loss, and beam search of 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dlforge.config._base import _Strict, dump_settings, load_settings, validate_settings

__all__ = ["Seq2SeqConfig", "dump_seq2seq_config", "load_seq2seq_config", "seq2seq_config"]


class Seq2SeqConfig(_Strict):
    # data
    data: str | None = None  # the table the pairs came from (a record; fit may take lists)
    source: str = "source"  # its source text column
    target: str = "target"  # its target text column
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    test_split: float = Field(0.0, ge=0.0, lt=1.0)
    # vocabulary: byte-level BPE trained on the training split
    vocab_size: int = Field(1000, ge=260, le=1 << 20)
    shared_vocab: bool = True  # one vocabulary for both sides (and one embedding matrix)
    max_length: int | None = Field(None, ge=1)  # source tokens; None: from the training data
    max_target_length: int | None = Field(None, ge=1)  # likewise for targets
    # model: "transformer" (models.seq2seq), or a local Hugging Face encoder-decoder folder
    model: str = "transformer"
    d_model: int = Field(128, ge=8)
    layers: int = Field(3, ge=1)  # encoder blocks, and as many decoder blocks
    heads: int = Field(4, ge=1)
    ffn_dim: int | None = Field(None, ge=1)  # None: 4 x d_model
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    tie_embeddings: bool = True  # the output layer is the target embedding's matrix
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    # training
    epochs: int | None = Field(None, ge=1)  # None: about 2,000 steps, 5 to 100 epochs
    batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0.0)  # None: 1e-3 (transformer), 1e-4 (pretrained)
    warmup: float = Field(0.05, ge=0.0, lt=1.0)  # share of the steps
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(1.0, ge=0.0)  # 0: no clipping
    patience: int = Field(5, ge=0)  # epochs without a better validation loss; 0: off
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    seed: int = 0
    # decoding (predict, evaluate, serve)
    beam_size: int = Field(4, ge=1)  # 1: greedy
    length_penalty: float = 1.0  # a hypothesis scores log p / length^this
    max_new_tokens: int | None = Field(None, ge=1)  # None: the longest target the model takes

    @model_validator(mode="after")
    def _check(self) -> Seq2SeqConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of heads "
                             f"({self.heads})")
        if self.validation_split + self.test_split >= 1.0:
            raise ValueError("validation_split + test_split must leave rows to train on")
        if self.source == self.target:
            raise ValueError(f"source and target are the same column ({self.source!r})")
        return self

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (
            1e-3 if self.model == "transformer" else 1e-4)


def seq2seq_config(data: dict[str, Any], source: str = "Seq2Seq") -> Seq2SeqConfig:
    """Validate plain settings; each problem names its key, what was expected and what came."""
    return validate_settings(Seq2SeqConfig, data, source)


def dump_seq2seq_config(cfg: Seq2SeqConfig, path: Path) -> None:
    dump_settings(cfg, path)


def load_seq2seq_config(path: Path) -> Seq2SeqConfig:
    return load_settings(Seq2SeqConfig, path)
