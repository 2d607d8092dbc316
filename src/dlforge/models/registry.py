"""Model name → builder. Every registered family passes ``dlforge.testing.check_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dlforge.config import CNNConfig, RNNConfig, TransformerConfig
from dlforge.models.cnn import TextCNN
from dlforge.models.rnn import RNNClassifier
from dlforge.models.transformer import TransformerClassifier

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "transformer": TransformerClassifier,
    "cnn": TextCNN,
    "rnn": RNNClassifier,
}


def build_model(cfg: TransformerConfig | CNNConfig | RNNConfig, vocab_size: int, max_length: int,
                n_outputs: int) -> nn.Module:
    return MODELS[cfg.name](cfg, vocab_size=vocab_size, max_length=max_length,
                            n_outputs=n_outputs)
