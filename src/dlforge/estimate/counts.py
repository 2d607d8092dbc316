"""Parameters and FLOPs of a Transformer :class:`~dlforge.estimate.arch.Arch`, term by term.

Convention: FLOPs = 2 x multiply-adds of the matrix products (what
``torch.utils.flop_counter.FlopCounterMode`` counts); element-wise work (norms, softmax,
activations, residual adds) and embedding look-ups count 0. Attention is counted over the full
T x T score matrix (no halving for the causal mask), as Hoffmann et al. 2022 (App. F) and
Chowdhery et al. 2022 (App. B) do; Kaplan et al. 2020 (Table 1) count half of it.
The backward pass is 2 x the forward (a gradient for each matrix product's input and one for
its weight; Kaplan et al. 2020, Sec. 2.1), so forward + backward is 3 x forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlforge.estimate.arch import Arch

__all__ = ["Counts", "activation_bytes_layer", "count_arch", "param_breakdown"]


@dataclass
class Counts:
    """What the memory, time and report steps need to know about one model.

    FLOPs and activations are per *sample* (a sequence of ``seq_len`` tokens, an image, a row).
    """

    name: str
    family: str
    params: int
    embedding_params: int  # look-up tables (+ an untied output head): "with/without embeddings"
    seq_len: int  # tokens per sample (1 when the model has no sequence)
    forward_flops: float
    train_flops: float  # forward + backward
    attention_flops: float = 0.0  # the T x T part of forward_flops
    activation_bytes: float = 0.0  # saved for backward, per sample
    activation_bytes_ckpt: float | None = None  # the same with activation checkpointing
    kv_elements_per_token: int | None = None  # decoders: K and V entries cached per token
    layers: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    arch: dict[str, Any] | None = None

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params


def _norm_params(a: Arch) -> int:
    return a.d_model * (2 if a.norm == "layernorm" and a.bias else 1)


def param_breakdown(a: Arch) -> dict[str, int]:
    """Parameters by part; tied weights counted once (in ``token_embedding``)."""
    d, f, dkv = a.d_model, a.d_ffn, a.d_kv
    attn = 2 * d * d + 2 * d * dkv + (2 * d + 2 * dkv if a.bias else 0)
    mats = 3 if a.ffn_kind == "swiglu" else 2
    mlp = mats * d * f + ((mats - 1) * f + d if a.bias else 0)
    rel = d * d if a.positions == "relative" else 0  # Transformer-XL's W_{k,R} per layer
    norm = _norm_params(a)
    out = {
        "token_embedding": a.vocab * d,
        "position_embedding": a.context * d if a.positions == "learned" else 0,
        "type_embedding": a.type_vocab * d,
        "embedding_norm": norm if a.kind == "encoder" else 0,
        "attention": a.layers * attn,
        "relative_positions": a.layers * rel,
        "mlp": a.layers * mlp,
        "norms": a.layers * 2 * norm + (norm if a.kind == "decoder" else 0),
        "output_head": a.vocab * d if a.kind == "decoder" and not a.tied else 0,
        "pooler": d * d + d if a.kind == "encoder" else 0,
    }
    return out


def activation_bytes_layer(a: Arch, seq: int, act_bytes: int, dropout: bool,
                           flash: bool, attention_dropout: bool | None = None) -> float:
    """Bytes one layer saves for the backward pass, for one sequence.

    Korthikanti et al. 2022 (Sec. 4.1), generalised to grouped-query attention and SwiGLU:
    with 16-bit activations, dropout and 4h feed-forward it is s·h·(34 + 5·a·s/h) bytes.
    ``flash``: the attention kernel keeps no s x s matrices (Dao et al. 2022).
    ``attention_dropout`` (default: ``dropout``): dropout on the attention weights."""
    s, h, f, p = seq, a.d_model, a.d_ffn, act_bytes
    m = 1 if dropout else 0  # one byte per dropout mask element
    kv = a.d_kv / h
    per_h = (p  # input of the first norm
             + p  # input of the QKV projection
             + p * (1 + kv)  # Q and K, kept for Q·Kᵀ
             + p * kv  # V
             + p  # input of the output projection
             + m  # dropout mask after attention
             + p  # input of the second norm
             + p  # input of the first feed-forward matrix
             + m)  # dropout mask after the feed-forward block
    per_f = 4 * p if a.ffn_kind == "swiglu" else 2 * p  # gate, up, silu(gate), product | in, gelu
    out = s * h * per_h + s * f * per_f
    if not flash:  # softmax output, its dropout mask and the dropped-out copy
        drop = dropout if attention_dropout is None else attention_dropout
        out += a.heads * s * s * (p + (1 + p if drop else 0))
    return out


def count_arch(a: Arch, seq_len: int | None = None, act_bytes: int = 2, dropout: bool = False,
               flash: bool = True) -> Counts:
    """Parameters and per-sequence FLOPs / activations of ``a`` at ``seq_len`` (default: its
    context)."""
    s = a.context if seq_len is None else seq_len
    parts = param_breakdown(a)
    params = sum(parts.values())
    embedding = (parts["token_embedding"] + parts["position_embedding"] + parts["type_embedding"]
                 + parts["output_head"])
    d, L = a.d_model, a.layers
    mats = 3 if a.ffn_kind == "swiglu" else 2
    layer_weights = 2 * d * d + 2 * d * a.d_kv + mats * d * a.d_ffn
    if a.positions == "relative":
        layer_weights += d * d
    dense = 2 * s * L * layer_weights
    attention = 4 * L * s * s * d  # Q·Kᵀ and softmax·V, full T x T
    if a.positions == "relative":
        attention += 2 * L * s * s * d  # Q·Rᵀ, the relative-position scores
    head = 2 * s * d * a.vocab if a.kind == "decoder" else 2 * d * d  # LM head | pooler
    forward = float(dense + attention + head)
    layer_act = activation_bytes_layer(a, s, act_bytes, dropout, flash)
    outside = s * d * act_bytes * 2 + (s * d if dropout else 0)  # embeddings out, final norm in
    if a.kind == "decoder":
        outside += s * a.vocab * (act_bytes + 4)  # logits, and their fp32 copy for the loss
    notes = list(a.notes)
    if a.positions == "relative":
        notes.append("relative positions: the per-layer position projection and Q·Rᵀ scores "
                     "are approximations of Transformer-XL's attention")
    return Counts(
        name=a.name, family=a.kind, params=params, embedding_params=embedding, seq_len=s,
        forward_flops=forward, train_flops=3 * forward, attention_flops=float(attention),
        activation_bytes=L * layer_act + outside,
        # Checkpointing each layer keeps its input; one layer's activations are rebuilt at a
        # time in the backward pass (Korthikanti et al. 2022, Sec. 4.2 "full recomputation").
        activation_bytes_ckpt=L * s * d * act_bytes + layer_act + outside,
        kv_elements_per_token=2 * L * a.d_kv if a.kind == "decoder" else None,
        layers=L, breakdown=parts, notes=notes, arch=a.to_dict())
