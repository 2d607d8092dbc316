"""A language-model run's settings: flat, validated, saved as the run's ``config.yaml``.

The defaults are the "baby GPT" CPU setting (4 layers, 4 heads, d_model 128, a 64-token
window, batches of 12, 2000 steps; learning rate 1e-3 with 100 warm-up steps and a cosine decay
to 1e-4, AdamW β₂ 0.99, weight decay 0.1 on matrices, gradients clipped at 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from dlforge.config._base import _Strict, dump_settings, load_settings, validate_settings
from dlforge.config.train import PrivacyConfig
from dlforge.errors import ConfigError

__all__ = ["FinetuneConfig", "LMConfig", "dump_lm_config", "finetune_config", "lm_config",
           "load_lm_config"]


class LMConfig(_Strict):
    # data
    column: str | None = None  # the text column when the corpus is a table
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(2000, ge=257, le=1 << 20)  # bpe only: 256 bytes + merges
    # model (models.gpt.GPTConfig)
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    d_model: int = Field(128, ge=1)
    block_size: int = Field(64, ge=2)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True
    # training
    batch_size: int = Field(12, ge=1)
    accumulate: int = Field(1, ge=1)  # micro-batches per optimizer step
    max_steps: int = Field(2000, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    min_lr: float = Field(1e-4, ge=0.0)  # where the cosine decay ends, at max_steps
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.99, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0)  # 0: no clipping
    eval_interval: int = Field(250, ge=1)  # steps between train/val loss estimates
    eval_iters: int = Field(20, ge=1)  # batches per estimate (the same batches every time)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    compile: bool = False
    num_threads: int | None = Field(None, ge=1)
    seed: int = 0
    # DP-SGD over disjoint windows of the corpus (dlforge.lm.dp); None: ordinary training
    privacy: PrivacyConfig | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> LMConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head "
                             f"({self.n_head})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.privacy is not None and self.accumulate > 1:
            raise ValueError("privacy: DP-SGD samples each step's batch as a whole; gradient "
                             "accumulation is not supported with it (raise batch_size instead "
                             "of accumulate)")
        if self.privacy is not None and self.compile:
            raise ValueError("privacy: DP-SGD computes per-record gradients with torch.func; "
                             "it does not run compiled (drop compile)")
        return self


def lm_config(data: dict[str, Any], source: str = "LanguageModel") -> LMConfig:
    """Validate plain settings; each problem names its key, what was expected and what came."""
    return validate_settings(LMConfig, data, source)


def dump_lm_config(cfg: LMConfig, path: Path) -> None:
    dump_settings(cfg, path)


def load_lm_config(path: Path) -> LMConfig:
    return load_settings(LMConfig, path)


class FinetuneConfig(_Strict):
    """A pretrained causal LM's fine-tune (``dlforge lm finetune``): LoRA by default (a few
    million trainable parameters; ``lora: false`` trains every weight)."""

    lora: bool = True
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0.0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "auto"  # auto: PEFT's choice for the architecture
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps
    lr: float | None = Field(None, gt=0.0)  # None: 2e-4 with LoRA, 2e-5 full
    batch_size: int = Field(8, ge=1)
    accumulate: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=2)  # tokens per example; None: 512 or the context
    packing: bool = False
    gradient_checkpointing: bool = False
    completion_only: bool = True  # loss on completions / assistant turns only
    val_split: float = Field(0.1, ge=0.0, lt=1.0)
    warmup: float = Field(0.05, ge=0.0, lt=1.0)  # share of the steps
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    seed: int = 0

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 2e-5)


def finetune_config(data: dict[str, Any], source: str = "LanguageModel.finetune"
                    ) -> FinetuneConfig:
    """Validate fine-tune settings; each problem names its key and what was expected."""
    try:
        return FinetuneConfig(**data)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown setting; valid ones are: {', '.join(FinetuneConfig.model_fields)}"
        raise ConfigError(f"{source}: {key}: {msg}") from None
