"""Fine-tune a local Hugging Face encoder folder (``AutoModel`` + its tokenizer) as a text encoder.

A pretrained model is named by a path to a folder that holds ``config.json``, safetensors weights
and tokenizer files, e.g. one written by ``model.save_pretrained(dir)`` and
``tokenizer.save_pretrained(dir)``. Nothing is ever downloaded: every load passes
``local_files_only=True`` and weights are read from safetensors only (pickles can run code).

``transformers`` is imported inside the functions that need it, so importing this module (and the
CLI) stays fast when no pretrained model is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from dlforge.config import is_pretrained_path
from dlforge.data.pretrained import (
    SAFETENSORS_FILES,
    PretrainedTokenizer,
    check_pretrained_folder,
    one_line,
    quiet_progress,
)
from dlforge.errors import ConfigError
from dlforge.models.layers import masked_mean

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [  # is_pretrained_path lives in dlforge.config (the schema uses it)
    "PretrainedEncoder",
    "PretrainedTokenizer",
    "build_encoder_from_config",
    "check_pretrained_folder",
    "find_layer_list",
    "is_pretrained_path",
    "decayed_parameter_sets",
    "split_parameters",
]

LAYER_LIST_NAMES = ("layer", "layers", "h", "block")
Pooling = Literal["cls", "mean"]


def find_layer_list(model: nn.Module) -> nn.ModuleList | None:
    """The transformer layer stack: the shallowest ``nn.ModuleList`` named layer/layers/h/block.

    BertModel → encoder.layer, DistilBertModel → transformer.layer, GPT2Model → h,
    T5 encoder → block. None when there is no such list.
    """
    best: tuple[int, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES:
            depth = name.count(".")
            if best is None or depth < best[0]:
                best = (depth, module)
    return best[1] if best is not None else None


def _load_hf_config(folder: Path, shown: str | os.PathLike[str]) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # unknown model_type, bad JSON, remote code, ...
        raise ConfigError(f"{shown}: could not read config.json: {one_line(e)}") from e


def _hidden_size(config: PretrainedConfig, shown: str | os.PathLike[str]) -> int:
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"{shown}: config.json has no hidden size (hidden_size, d_model or dim)")


class PretrainedEncoder(nn.Module):
    """A Hugging Face ``AutoModel`` as a text encoder: (input_ids, attention_mask) → (B, out_dim).

    pooling "cls" takes the first token's last hidden state, "mean" the masked mean over tokens.
    ``freeze`` freezes every encoder weight; ``freeze_layers=k`` freezes the embeddings and the
    first k transformer layers. With ``from_config_only`` the architecture is built from the
    folder's config.json with random weights and no weight file is read (for loading a saved run
    whose full weights are in its own model.safetensors). Encoder-decoder models keep the encoder.
    """

    def __init__(self, path: str | os.PathLike[str], freeze: bool = False, freeze_layers: int = 0,
                 pooling: Pooling = "cls", *, from_config_only: bool = False,
                 reinit_layers: int = 0):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if isinstance(freeze_layers, bool) or not isinstance(freeze_layers, int) \
                or freeze_layers < 0:
            raise ConfigError(f"freeze_layers must be an integer >= 0, got {freeze_layers!r}")
        folder = check_pretrained_folder(path, weights=not from_config_only, tokenizer=False)
        config = _load_hf_config(folder, path)
        self.path = folder
        self.pooling: Pooling = pooling
        self.model: PreTrainedModel = self._build(folder, path, config, from_config_only)
        self.config = self.model.config
        self.out_dim = _hidden_size(self.config, path)
        pad = getattr(self.config, "pad_token_id", None)
        self.pad_token_id = int(pad) if isinstance(pad, int) else 0
        layers = find_layer_list(self.model)
        self.num_layers: int | None = len(layers) if layers is not None else None
        if reinit_layers and not from_config_only:
            self._reinit_top(layers, reinit_layers, path)
        if freeze:
            self.model.requires_grad_(False)
        elif freeze_layers:
            self._freeze_bottom(layers, freeze_layers, path)

    @staticmethod
    def _build(folder: Path, shown: str | os.PathLike[str], config: PretrainedConfig,
               from_config_only: bool) -> PreTrainedModel:
        from transformers import AutoModel

        if not from_config_only and not any((folder / f).is_file() for f in SAFETENSORS_FILES):
            raise ConfigError(
                f"{shown}: only pytorch_model.bin weights found; dlforge loads safetensors only "
                "(pickles can run code); convert once with "
                "model.save_pretrained(dir, safe_serialization=True)")
        try:
            with quiet_progress():
                if from_config_only:
                    model = AutoModel.from_config(config, dtype=torch.float32)
                else:
                    model = AutoModel.from_pretrained(
                        str(folder), config=config, local_files_only=True, use_safetensors=True,
                        dtype=torch.float32)
        except Exception as e:  # unsupported architecture, corrupt weights, ...
            raise ConfigError(f"{shown}: could not load the model: {one_line(e)}") from e
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        return model

    def _freeze_bottom(self, layers: nn.ModuleList | None, k: int,
                       shown: str | os.PathLike[str]) -> None:
        """Freeze the embeddings (every weight registered before layer 0) and layers[:k]."""
        if layers is None:
            raise ConfigError(f"{shown}: cannot find the transformer layers of "
                              f"{type(self.model).__name__} to freeze; use freeze=True instead")
        if k > len(layers):
            raise ConfigError(f"freeze_layers={k} but the model in {shown} has only "
                              f"{len(layers)} layers")
        for p in self.layer_groups()[0]:  # everything registered before layer 0
            p.requires_grad_(False)
        embeddings = self.model.get_input_embeddings()
        if embeddings is not None:
            embeddings.requires_grad_(False)
        for layer in layers[:k]:
            layer.requires_grad_(False)

    def _reinit_top(self, layers: nn.ModuleList | None, k: int,
                    shown: str | os.PathLike[str]) -> None:
        """Re-initialise layers[-k:] with the model's own initialisation (its
        ``_init_weights``, as ``from_config`` would)."""
        if layers is None:
            raise ConfigError(f"{shown}: cannot find the transformer layers of "
                              f"{type(self.model).__name__} to re-initialise; use "
                              "reinit_layers=0")
        if k > len(layers):
            raise ConfigError(f"reinit_layers={k} but the model in {shown} has only "
                              f"{len(layers)} layers")
        for layer in layers[len(layers) - k:]:
            for tensor in [*layer.parameters(), *layer.buffers()]:
                # transformers skips tensors it marked as loaded from the checkpoint
                tensor._is_hf_initialized = False
            layer.apply(self.model._init_weights)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The encoder's parameters from the bottom up: everything registered before the
        first transformer layer (the embeddings), each layer, then everything after the last
        (a final norm, a pooler). One group when the layers cannot be found."""
        layers = find_layer_list(self.model)
        params = list(self.model.parameters())
        if layers is None:
            return [params]
        owner = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
        groups: list[list[nn.Parameter]] = [[] for _ in range(len(layers) + 2)]
        seen_layer = False
        for p in params:
            if id(p) in owner:
                seen_layer = True
                groups[owner[id(p)]].append(p)
            else:
                groups[-1 if seen_layer else 0].append(p)
        return groups

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()  # (B, T), True on real tokens
        ids = input_ids.masked_fill(~mask, self.pad_token_id)  # whatever the batch padded with
        out = self.model(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B,T,C)
        if self.pooling == "cls":
            return hidden[:, 0]  # (B, C)
        return masked_mean(hidden, mask)  # (B, C)

    def save_config(self, folder: str | os.PathLike[str]) -> None:
        """Write config.json into ``folder`` so ``build_encoder_from_config`` can rebuild this."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(folder))


def build_encoder_from_config(path: str | os.PathLike[str], freeze: bool = False,
                              freeze_layers: int = 0,
                              pooling: Pooling = "cls") -> PretrainedEncoder:
    """The encoder's architecture from ``path``/config.json, random weights, no weight file read."""
    return PretrainedEncoder(path, freeze=freeze, freeze_layers=freeze_layers, pooling=pooling,
                             from_config_only=True)


def decayed_parameter_sets(module: nn.Module, lr: float, decay: float,
                           head_lr: float | None = None
                           ) -> list[tuple[list[nn.Parameter], float]]:
    """(parameters, learning rate) sets with layer-wise learning-rate decay: in each
    PretrainedEncoder the top layer (and what follows it) at ``lr``, each layer below at
    ``decay`` times the one above, the embeddings lowest; everything outside the encoders (the
    new head) at ``head_lr`` (default ``lr``). Shared parameters appear once."""
    sets: list[tuple[list[nn.Parameter], float]] = []
    for m in module.modules():
        if isinstance(m, PretrainedEncoder):
            groups = m.layer_groups()
            top = len(groups) - 2  # the last layer's index; what follows shares its rate
            for i, group in enumerate(groups):
                sets.append((group, lr * decay ** max(0, top - i)))
    _, other = split_parameters(module)
    return [(other, head_lr or lr), *sets]


def split_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters as (inside a PretrainedEncoder, everything else), e.g. the head.

    Lets the optimizer give the pretrained encoder a smaller learning rate than the new head.
    Shared parameters appear once.
    """
    encoder_ids = {id(p) for m in module.modules() if isinstance(m, PretrainedEncoder)
                   for p in m.parameters()}
    encoder: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (encoder if id(p) in encoder_ids else other).append(p)
    return encoder, other
