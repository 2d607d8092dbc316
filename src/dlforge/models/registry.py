"""From a run config to a model: one encoder per input column, their outputs concatenated,
then the head (Ludwig's input-feature / combiner idea, in our schema).

The model family (``model.name``) is the encoder of the text, image or audio input: Transformer,
TextCNN or RNN for text; the residual CNN for images; the residual CNN or the CRNN for audio
(its log-mel spectrogram). Numeric columns pass through as their
(standardised value, missing indicator) pair; category columns get an embedding each. A table
alone (numeric and category columns only) is the ``mlp`` family. Every registered family passes
``dlforge.testing.check_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlforge._extras import PRIVACY_FEATURE, require
from dlforge.config import RunConfig
from dlforge.models.cnn import ImageCNN, SequenceCNN
from dlforge.models.crnn import CRNN
from dlforge.models.layers import TokenPositionEmbedding, ValueEmbedding, init_weights
from dlforge.models.mlp import MLP
from dlforge.models.rnn import RNNEncoder
from dlforge.models.transformer import TransformerEncoder

__all__ = ["MODELS", "FusionModel", "build_model", "private_ready"]

def _tokens(c: Any, s: dict[str, Any], positions: bool = False) -> nn.Module:
    if positions:
        return TokenPositionEmbedding(s["vocab_size"], c.d_model, s["max_length"], c.dropout)
    return nn.Embedding(s["vocab_size"], c.d_model, padding_idx=0)


def _values(c: Any, s: dict[str, Any], positions: bool = False) -> nn.Module:
    return ValueEmbedding(s["features"], c.d_model, s["max_length"] if positions else None,
                          c.dropout if positions else 0.0)


# (family, input kind) -> builder(model config, feature spec) -> encoder with .out_dim
MODELS: dict[tuple[str, str], Callable[..., nn.Module]] = {
    ("transformer", "text"): lambda c, s: TransformerEncoder(c, _tokens(c, s, positions=True)),
    ("cnn", "text"): lambda c, s: SequenceCNN(c, _tokens(c, s)),
    ("rnn", "text"): lambda c, s: RNNEncoder(c, _tokens(c, s)),
    ("transformer", "sequence"): lambda c, s: TransformerEncoder(
        c, _values(c, s, positions=True)),
    ("cnn", "sequence"): lambda c, s: SequenceCNN(c, _values(c, s)),
    ("rnn", "sequence"): lambda c, s: RNNEncoder(c, _values(c, s)),
    ("cnn", "image"): lambda c, s: ImageCNN(c, s["channels"], s["height"], s["width"]),
    # audio: the log-mel spectrogram (1 x mels x frames) as a one-channel image
    ("cnn", "audio"): lambda c, s: ImageCNN(c, s["channels"], s["height"], s["width"]),
    ("crnn", "audio"): lambda c, s: CRNN(c, s["channels"], s["height"], s["width"]),
    ("pretrained", "text"): lambda c, s: _pretrained(c, s),
}


def _pretrained(cfg: Any, spec: dict[str, Any]) -> nn.Module:
    from dlforge.models.pretrained import PretrainedEncoder  # imports transformers lazily

    return PretrainedEncoder(spec["path"], cfg.freeze, cfg.freeze_layers, cfg.pooling,
                             from_config_only=spec["from_config_only"],
                             reinit_layers=cfg.reinit_layers)


class NumericPassthrough(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class CategoryEmbedding(nn.Module):
    def __init__(self, categories: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(categories, dim)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)


class FusionModel(nn.Module):
    """``forward(inputs)``: ``inputs`` maps each column to its batch (a tensor, or for a padded
    sequence ``{"input_ids" or "values", "attention_mask"}``); returns (B, n_outputs)."""

    def __init__(self, encoders: dict[str, nn.Module], head: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = head

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        parts = []
        for name, enc in self.encoders.items():
            x = inputs[name]
            if isinstance(x, dict):  # a padded sequence: tokens or numeric steps, and its mask
                x = enc(x["input_ids"] if "input_ids" in x else x["values"],
                        x["attention_mask"])
            else:
                x = enc(x)
            parts.append(x)
        return self.head(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


def build_model(cfg: RunConfig, specs: dict[str, dict[str, Any]], n_outputs: int,
                prior: Any = None) -> FusionModel:
    """The model ``cfg`` describes, for fitted features' ``specs`` (see data.inputs).

    With ``prior`` (the training labels' prior as logits, see
    :func:`dlforge.train.metrics.prior_logits`) the output layer's bias starts at it, so an
    untrained model's predictions centre on the training frequencies (with the Transformer's
    small N(0, 0.02) head, it predicts the majority class) instead of on 50/50 noise. The
    weights keep their family's initialisation: shrinking them too slows learning."""
    encoders: dict[str, nn.Module] = {}
    for inp in cfg.inputs:
        spec = specs[inp.name]
        if inp.type == "numeric":
            encoders[inp.name] = NumericPassthrough(spec["width"])
        elif inp.type == "category":
            encoders[inp.name] = CategoryEmbedding(spec["categories"], spec["dim"])
        else:
            encoders[inp.name] = MODELS[(cfg.model.name, inp.type)](cfg.model, spec)
    width = sum(e.out_dim for e in encoders.values())
    head = MLP(width, list(cfg.model.head_hidden), n_outputs, cfg.model.dropout)
    if cfg.model.name == "transformer":
        init_weights(head)  # the Transformer's N(0, 0.02) initialisation, head included
    if prior is not None:
        with torch.no_grad():
            head.out.bias.copy_(torch.as_tensor(prior, dtype=head.out.bias.dtype))
    model = FusionModel(encoders, head)
    return private_ready(model) if cfg.privacy is not None else model


def private_ready(model: nn.Module) -> nn.Module:
    """``model`` with the layers differentially private training (DP-SGD, per-row gradients)
    cannot train replaced by ones it can: batch-norm (its statistics mix the rows of a batch)
    by group-norm; GRU and LSTM by Opacus' DPGRU and DPLSTM (same weights and state-dict
    names). Training (``dlforge.train.dp``) and loading a private run both build this."""
    import warnings

    require("opacus", "privacy", PRIVACY_FEATURE)
    from opacus.validators import ModuleValidator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus announces each replacement
        fixed = ModuleValidator.fix(model)
        errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        from dlforge.errors import ConfigError

        raise ConfigError(f"privacy: this model has layers DP-SGD cannot train: {errors[0]}")
    _one_name_per_weight(fixed)
    return fixed


def _one_name_per_weight(model: nn.Module) -> None:
    """Opacus' DPGRU/DPLSTM register each weight twice: under nn.GRU's name (weight_ih_l0) and
    their own cell's (l0.ih.weight). Their filter drops the second name only when the RNN is
    the root module, so for ours: state dicts keep nn.GRU's names alone (safetensors refuses
    shared tensors, and the weights load into a plain GRU), and loading does not miss the
    others (the same tensors, loaded under the first name)."""
    hidden = {f"{name}.{old}" for name, m in model.named_modules()
              if isinstance(getattr(m, "old_to_new", None), dict) for old in m.old_to_new}
    if not hidden:
        return

    def drop(module: nn.Module, state: dict[str, Any], prefix: str, meta: Any) -> None:
        for key in hidden:
            state.pop(prefix + key, None)

    def not_missing(module: nn.Module, keys: Any) -> None:
        keys.missing_keys[:] = [k for k in keys.missing_keys
                                if not any(k.endswith(h) for h in hidden)]

    model.register_state_dict_post_hook(drop)
    model.register_load_state_dict_post_hook(not_missing)
