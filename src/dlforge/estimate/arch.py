"""A Transformer language model's architecture, as plain numbers: what the estimator counts.

One flat dataclass describes GPT-style decoders (GPT-2, GPT-3, LLaMA with grouped-query
attention and SwiGLU, Chinchilla) and BERT-style encoders. Presets (``presets.py``) are stored
as these numbers only, never as a stored parameter count or FLOP figure.

A model class of our own can be plugged in with :func:`register_adapter`: a function from its
config object to an :class:`Arch` (the GPT family's ``GPTConfig`` is meant to register one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dlforge.errors import ConfigError

__all__ = ["ADAPTERS", "Arch", "arch_from", "register_adapter"]

FFN_KINDS = ("gelu", "swiglu")
KINDS = ("decoder", "encoder")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "relative")


@dataclass(frozen=True)
class Arch:
    """A Transformer stack. ``ffn`` None: 4 x d_model; ``kv_heads`` None: ``heads`` (no
    grouped-query attention); ``tied``: the output head reuses the token embedding.

    ``positions``: learned (a table of ``context`` x d_model), rope (no parameters) or relative
    (Transformer-XL's relative encoding as in Gopher/Chinchilla: one d_model x d_model
    projection per layer). ``kind`` encoder (BERT) adds token-type embeddings, a LayerNorm on
    the embeddings and a pooler, and has no output head.
    """

    layers: int
    d_model: int
    heads: int
    vocab: int
    context: int
    kv_heads: int | None = None
    ffn: int | None = None
    ffn_kind: str = "gelu"
    tied: bool = True
    kind: str = "decoder"
    norm: str = "layernorm"
    bias: bool = True
    positions: str = "learned"
    type_vocab: int = 0
    name: str = "custom"
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for key in ("layers", "d_model", "heads", "vocab", "context"):
            _positive(key, getattr(self, key))
        for key in ("kv_heads", "ffn"):
            if getattr(self, key) is not None:
                _positive(key, getattr(self, key))
        if self.type_vocab < 0 or isinstance(self.type_vocab, bool):
            raise ConfigError(f"type_vocab must be an integer >= 0, got {self.type_vocab!r}")
        if self.d_model % self.heads:
            raise ConfigError(f"heads ({self.heads}) must divide d_model ({self.d_model}); "
                              f"e.g. heads {_divisor_hint(self.d_model, self.heads)}")
        if self.heads % self.n_kv_heads:
            raise ConfigError(f"kv_heads ({self.n_kv_heads}) must divide heads ({self.heads}) "
                              "(grouped-query attention shares each K/V head among a group)")
        for key, choices in (("ffn_kind", FFN_KINDS), ("kind", KINDS), ("norm", NORMS),
                             ("positions", POSITIONS)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, got "
                                  f"{getattr(self, key)!r}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def d_ffn(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.d_model

    @property
    def d_kv(self) -> int:
        """Width of K (and of V): kv_heads x head_dim."""
        return self.n_kv_heads * self.head_dim

    def with_(self, **changes: Any) -> Arch:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kv_heads"], d["ffn"] = self.n_kv_heads, self.d_ffn
        d["notes"] = list(self.notes)
        return d


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number >= 1, got {value!r}")


def _divisor_hint(d: int, heads: int) -> str:
    near = sorted((h for h in range(1, min(d, 256) + 1) if d % h == 0),
                  key=lambda h: abs(h - heads))[:3]
    return " or ".join(str(h) for h in sorted(near))


# ---------------------------------------------------------------------------- adapters
# type name -> function(config object) -> Arch: how a model class of ours is counted.
ADAPTERS: dict[str, Callable[[Any], Arch]] = {}


def register_adapter(type_name: str, fn: Callable[[Any], Arch]) -> None:
    """Let :func:`arch_from` (and so ``dlforge.estimate``) accept config objects of a class
    named ``type_name``."""
    ADAPTERS[type_name] = fn


def arch_from(obj: Any) -> Arch:
    """An :class:`Arch` from an Arch, a registered config object, or a mapping of its fields
    (``n_layer``/``n_embd``/``n_head`` nanoGPT-style names are understood too)."""
    if isinstance(obj, Arch):
        return obj
    fn = ADAPTERS.get(type(obj).__name__)
    if fn is not None:
        return fn(obj)
    if isinstance(obj, dict):
        return _from_mapping(obj)
    raise ConfigError(f"cannot estimate a {type(obj).__name__}; give an Arch, a preset name, a "
                      f"mapping of Arch fields, or register an adapter (known: "
                      f"{', '.join(sorted(ADAPTERS)) or 'none'})")


_ALIASES = {"n_layer": "layers", "n_embd": "d_model", "n_head": "heads", "n_kv_head": "kv_heads",
            "vocab_size": "vocab", "block_size": "context", "d_ff": "ffn", "ffn_dim": "ffn",
            "max_length": "context"}


def _from_mapping(d: dict[str, Any]) -> Arch:
    fields = set(Arch.__dataclass_fields__)
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = _ALIASES.get(key, key)
        if name not in fields:
            raise ConfigError(f"unknown architecture field {key!r}; valid ones are: "
                              f"{', '.join(sorted(fields - {'notes'}))}")
        out[name] = value
    missing = [k for k in ("layers", "d_model", "heads", "vocab", "context") if k not in out]
    if missing:
        raise ConfigError(f"architecture is missing {', '.join(missing)}")
    return Arch(**out)


def _our_gpt(c: Any) -> Arch:
    """``dlforge.models.gpt.GPTConfig``: GPT-2's layout (learned positions, pre-LayerNorm, GELU
    MLP of 4 x d_model, the output head tied to the token embedding)."""
    return Arch(layers=c.n_layer, d_model=c.d_model, heads=c.n_head, vocab=c.vocab_size,
                context=c.block_size, ffn=4 * c.d_model, ffn_kind="gelu", tied=True,
                bias=c.bias, positions="learned", name="gpt (dlforge)",
                source="dlforge/models/gpt.py")


register_adapter("GPTConfig", _our_gpt)
