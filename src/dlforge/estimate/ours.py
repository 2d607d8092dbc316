"""Parameters and FLOPs of our own model families, term by term, from a run config and its
inputs' fitted specs (vocabulary size, image shape, ...): the same numbers
``sum(p.numel())`` and ``FlopCounterMode`` give on the built model (tests/test_estimate.py).

Same convention as ``counts.py``: FLOPs = 2 x multiply-adds of matrix products and
convolutions; the backward pass computes a weight gradient for every product and an input
gradient wherever the input needs one (not for the first layer on raw numbers or pixels, nor
for an RNN's zero initial state). Activations are rough: the tensors each layer keeps for the
backward pass (docs/estimate.md reports measured peaks against them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlforge.config import RunConfig
from dlforge.errors import ConfigError
from dlforge.estimate.arch import Arch
from dlforge.estimate.counts import Counts, activation_bytes_layer

__all__ = ["count_ours"]

# Up to this length attention is explicit on the CPU in training (models/layers.py); past it the
# flash kernel keeps no T x T matrix.
EXPLICIT_MAX_LEN = 128


@dataclass
class Part:
    params: int = 0
    embedding: int = 0  # parameters in look-up tables
    fwd: float = 0.0
    bwd: float = 0.0
    act: float = 0.0  # elements kept for backward
    attention: float = 0.0
    out_dim: int = 0
    grad_out: bool = False  # does the output need a gradient (anything trainable below it)?
    ckpt_saving: float = 0.0  # elements activation checkpointing would not keep

    def add(self, other: Part) -> Part:
        return Part(self.params + other.params, self.embedding + other.embedding,
                    self.fwd + other.fwd, self.bwd + other.bwd, self.act + other.act,
                    self.attention + other.attention, other.out_dim,
                    self.grad_out or other.grad_out, self.ckpt_saving + other.ckpt_saving)


def _linear(n_in: int, n_out: int, rows: int, grad_in: bool, bias: bool = True) -> Part:
    f = 2.0 * rows * n_in * n_out
    return Part(params=n_in * n_out + (n_out if bias else 0), fwd=f, bwd=f * (2 if grad_in else 1),
                act=rows * (n_in + n_out), out_dim=n_out, grad_out=True)


# ------------------------------------------------------------------------- input embeddings
def _embed(family: str, kind: str, spec: dict[str, Any], d: int, T: int) -> Part:
    positions = family == "transformer"
    if kind == "text":
        pos = spec["max_length"] * d if positions else 0
        table = spec["vocab_size"] * d + pos
        return Part(params=table, embedding=table, act=T * d, out_dim=d, grad_out=True)
    lin = _linear(spec["features"], d, T, grad_in=False)  # numeric steps: a linear map
    pos = spec["max_length"] * d if positions else 0
    return Part(lin.params + pos, pos, lin.fwd, lin.bwd, T * d, 0.0, d, True)


def _transformer(m: Any, T: int, act_bytes: int) -> Part:
    d, f = m.d_model, m.ffn_dim or 4 * m.d_model
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    dense = 2.0 * T * (4 * d * d + 2 * d * f)
    attention = 4.0 * T * T * d  # Q·Kᵀ and weights·V over the padded T x T
    fwd = m.layers * (dense + attention)
    arch = Arch(layers=m.layers, d_model=d, heads=m.heads, vocab=1, context=T, ffn=f)
    layer = activation_bytes_layer(arch, T, act_bytes, m.dropout > 0, T > EXPLICIT_MAX_LEN,
                                   attention_dropout=m.attention_dropout > 0)
    act = m.layers * layer / act_bytes
    # Checkpointed blocks keep their input; one block's activations are rebuilt at a time.
    saving = act - (m.layers * T * d + layer / act_bytes)
    return Part(params=m.layers * block + 2 * d, fwd=fwd, bwd=2 * fwd, act=act + T * d,
                attention=m.layers * attention, out_dim=d, grad_out=True,
                ckpt_saving=max(saving, 0.0))


def _text_cnn(m: Any, T: int) -> Part:
    d, F, ks = m.d_model, m.filters, list(m.kernel_sizes)
    padded = T + max(ks) - 1
    p = Part(act=padded * d, out_dim=F * len(ks), grad_out=True)
    for k in ks:
        length = padded - k + 1
        f = 2.0 * d * F * k * length
        p = p.add(Part(params=d * F * k + F, fwd=f, bwd=2 * f, act=3 * F * length,
                       out_dim=F * len(ks)))
    return p


def _rnn(m: Any, T: int) -> Part:
    gates = 3 if m.cell == "gru" else 4
    dirs = 2 if m.bidirectional else 1
    H = m.hidden
    p = Part(out_dim=H * dirs, grad_out=True)
    for layer in range(m.layers):
        n_in = m.d_model if layer == 0 else H * dirs
        f = 2.0 * gates * H * (n_in + H) * T
        # The first step's hidden state is zeros: no gradient flows into it.
        bwd = 2 * f - 2.0 * gates * H * H
        p = p.add(Part(params=dirs * (gates * H * (n_in + H) + 2 * gates * H), fwd=dirs * f,
                       bwd=dirs * bwd, act=dirs * T * (n_in + H + 2 * gates * H),
                       out_dim=H * dirs))
    return p


def _image_cnn(m: Any, spec: dict[str, Any]) -> Part:
    c, h, w = spec["channels"], spec["height"], spec["width"]
    widths = list(m.channels)

    def conv(c_in: int, c_out: int, k: int, hw: int, grad_in: bool = True) -> Part:
        f = 2.0 * k * k * c_in * c_out * hw
        return Part(params=k * k * c_in * c_out + 2 * c_out,  # + its batch-norm's scale, shift
                    fwd=f, bwd=f * (2 if grad_in else 1), act=3 * c_out * hw)

    p = Part(act=c * h * w, out_dim=widths[-1])
    if min(h, w) >= 64:  # ResNet's stem: 7x7 stride 2, then a 3x3 stride-2 max pool
        oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        p = p.add(conv(c, widths[0], 7, oh * ow, grad_in=False))
        h, w = (oh - 1) // 2 + 1, (ow - 1) // 2 + 1
    else:
        p = p.add(conv(c, widths[0], 3, h * w, grad_in=False))
    small = min(h, w)  # what models/cnn.py decides the strides from
    c_in = widths[0]
    for s, c_out in enumerate(widths):
        for b in range(m.blocks):
            stride = 2 if s > 0 and b == 0 and small >> s >= 2 else 1
            oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
            p = p.add(conv(c_in, c_out, 3, oh * ow)).add(conv(c_out, c_out, 3, oh * ow))
            if m.residual and (stride != 1 or c_in != c_out):
                p = p.add(conv(c_in, c_out, 1, oh * ow))
            h, w, c_in = oh, ow, c_out
    p.out_dim, p.grad_out = widths[-1], True
    return p


def _crnn(m: Any, spec: dict[str, Any]) -> Part:
    """models/crnn.py: a 3x3 stem, one residual conv block and a 2x2 max pool per stage, then
    the recurrent layer over the remaining frames (channels x bands per step)."""
    c, h, w = spec["channels"], spec["height"], spec["width"]
    widths = list(m.channels)

    def conv(c_in: int, c_out: int, k: int, hw: int, grad_in: bool = True) -> Part:
        f = 2.0 * k * k * c_in * c_out * hw
        return Part(params=k * k * c_in * c_out + 2 * c_out, fwd=f,
                    bwd=f * (2 if grad_in else 1), act=3 * c_out * hw)

    p = Part(act=c * h * w).add(conv(c, widths[0], 3, h * w, grad_in=False))
    c_in = widths[0]
    for c_out in widths:
        p = p.add(conv(c_in, c_out, 3, h * w)).add(conv(c_out, c_out, 3, h * w))
        if m.residual and c_in != c_out:
            p = p.add(conv(c_in, c_out, 1, h * w))
        h, w, c_in = (h // 2 if h >= 2 else h), (w // 2 if w >= 2 else w), c_out
    steps = type("Steps", (), {"cell": m.cell, "bidirectional": m.bidirectional,
                               "hidden": m.hidden, "layers": m.layers,
                               "d_model": c_in * h})()
    return p.add(_rnn(steps, w))


# ------------------------------------------------------------------------------- the model
def _encoder(cfg: RunConfig, kind: str, spec: dict[str, Any], T: int, act_bytes: int) -> Part:
    m, family = cfg.model, cfg.model.name
    if kind == "numeric":
        return Part(out_dim=spec["width"])
    if kind == "category":
        table = spec["categories"] * spec["dim"]
        return Part(params=table, embedding=table, act=spec["dim"], out_dim=spec["dim"],
                    grad_out=True)
    if kind == "image" or (kind == "audio" and family == "cnn"):  # audio: its spectrogram
        return _image_cnn(m, spec)
    if kind == "audio" and family == "crnn":
        return _crnn(m, spec)
    embed = _embed(family, kind, spec, m.d_model, T)
    if family == "transformer":
        return embed.add(_transformer(m, T, act_bytes))
    if family == "cnn":
        return embed.add(_text_cnn(m, T))
    return embed.add(_rnn(m, T))


def count_ours(cfg: RunConfig, specs: dict[str, dict[str, Any]], kinds: dict[str, str],
               n_outputs: int, seq_len: dict[str, int] | None = None, act_bytes: int = 4,
               name: str = "run") -> Counts:
    """Counts of the FusionModel ``build_model(cfg, specs, n_outputs)`` builds. ``kinds`` maps
    each input to its type; ``seq_len`` the tokens (steps) per sample of each sequence input
    (default: its max_length)."""
    family = cfg.model.name
    if family in ("pretrained", "auto", "ensemble"):
        raise ConfigError(f"model.name: estimating a {family!r} model is not supported; name a "
                          "family (transformer, cnn, rnn, mlp, crnn; an ensemble's members one "
                          "by one) or a preset")
    seq_len = seq_len or {}
    total, width, tokens = Part(), 0, 1
    for name_, kind in kinds.items():
        spec = specs[name_]
        T = int(seq_len.get(name_, spec.get("max_length", 1)))
        if kind in ("text", "sequence"):
            tokens = T
        part = _encoder(cfg, kind, spec, T, act_bytes)
        total = total.add(part)
        width += part.out_dim
    grad_in = total.grad_out
    for hidden in [*cfg.model.head_hidden, n_outputs]:
        total = total.add(_linear(width, hidden, 1, grad_in))
        width, grad_in = hidden, True
    act = total.act * act_bytes
    return Counts(name=name, family=family, params=total.params, embedding_params=total.embedding,
                  seq_len=tokens, forward_flops=total.fwd, train_flops=total.fwd + total.bwd,
                  attention_flops=total.attention, activation_bytes=act,
                  activation_bytes_ckpt=((total.act - total.ckpt_saving) * act_bytes
                                         if family == "transformer" else None),
                  layers=int(getattr(cfg.model, "layers", 0) or 0),
                  breakdown={"embedding": total.embedding,
                             "other": total.params - total.embedding})
