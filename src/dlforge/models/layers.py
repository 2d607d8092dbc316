"""The core algorithms as layers: attention, convolution, recurrence, and what they share.

Every model family is assembled from these; ``dlforge.reference`` holds the same formulas in
NumPy and the tests check these layers against it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = [
    "ClassifierHead",
    "Dropout",
    "ConvBank",
    "MultiHeadSelfAttention",
    "PositionEmbedding",
    "RecurrentEncoder",
    "SinusoidalPositions",
    "TokenPositionEmbedding",
    "ValueEmbedding",
    "TransformerBlock",
    "attention",
    "explicit_attention",
    "masked_mean",
]


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, drawing its mask from ``torch.rand``.

    Written out because PyTorch's CPU dropout spends most of its time in ``bernoulli_``, about
    twice as slow as ``rand``: this saves ~30% per dropout in a bf16 training step (~3 ms at
    64 x 40 x 512), ~8% of a step of the article's model. Same distribution; on other devices
    it is ``F.dropout``.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # fp32 uniforms, whatever x is
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PositionEmbedding(nn.Module):
    """A learned absolute position embedding, added: ``x + weight[:T]`` for x (B, T, C).

    The addition happens inside the module so that its output keeps the batch dimension:
    Opacus (differentially private training) then computes each row's gradient of ``weight``
    (an ``nn.Embedding`` looked up with ``arange(T)`` would see no batch at all). Initialised
    and stored (``pos.weight``) as the ``nn.Embedding`` it replaces.
    """

    def __init__(self, max_length: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_length, d_model))
        nn.init.normal_(self.weight)  # nn.Embedding's initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]  # (B, T, C)


class SinusoidalPositions(nn.Module):
    """The original Transformer's fixed positions (Vaswani et al. 2017, section 3.5):
    PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C)). A buffer, not a
    weight (nothing to learn or save); ``forward(T, start)`` gives rows start..start+T-1,
    (T, C), so a decoder with a KV cache can ask for the position it is at."""

    def __init__(self, max_length: int, d_model: int):
        super().__init__()
        t = torch.arange(max_length, dtype=torch.float32)[:, None]  # (L, 1)
        rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                         * (-math.log(10000.0) / d_model))  # (C/2,)
        table = torch.zeros(max_length, d_model)
        table[:, 0::2] = torch.sin(t * rate)
        table[:, 1::2] = torch.cos(t * rate[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        return self.table[start:start + length]  # (T, C)


class TokenPositionEmbedding(nn.Module):
    """Token embedding plus a learned absolute position embedding."""

    def __init__(self, vocab_size: int, d_model: int, max_length: int, dropout: float = 0.0):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = PositionEmbedding(max_length, d_model)
        self.drop = Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.pos(self.tok(input_ids)))  # (B, T, C)


class ValueEmbedding(nn.Module):
    """Numeric steps (B, T, F) to (B, T, d_model) by a linear map, plus a learned position
    embedding when ``max_length`` is given (the Transformer has no other sense of order)."""

    def __init__(self, n_features: int, d_model: int, max_length: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(n_features, d_model)
        self.pos = PositionEmbedding(max_length, d_model) if max_length else None
        self.drop = Dropout(dropout)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        x = self.proj(values)
        if self.pos is not None:
            x = self.pos(x)
        return self.drop(x)


# In training, up to this length, attention on the CPU is computed explicitly: PyTorch's CPU
# flash kernel has a slow backward for short sequences (2-5x slower than the explicit product at
# T <= 128, batch 64 x 4 heads x 128; see benchmarks/attention_cpu.py). With a causal mask only
# in bf16: there the baby GPT's training step (batch 12 x 4 heads x 64) takes 30 ms with the
# flash kernel and 17 ms with the explicit product (2026-11-29); in fp32 the causal flash kernel
# is as fast (24.6 vs 25.5 ms). Past this length, and for inference (where the flash forward is
# as fast or faster), SDPA.
EXPLICIT_MAX_LEN = 128


_EVERYWHERE = contextvars.ContextVar("dlforge_explicit_attention", default=False)


@contextlib.contextmanager
def explicit_attention_everywhere() -> Iterator[None]:
    """Within: :func:`attention` always computes explicitly (any device, length or dropout).
    For ``torch.func.vmap`` (per-record gradients, DP-SGD): PyTorch's fused attention kernels
    have no batching rule and fall back to a slow loop, the explicit product's matmuls do."""
    token = _EVERYWHERE.set(True)
    try:
        yield
    finally:
        _EVERYWHERE.reset(token)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       key_mask: torch.Tensor | None = None,
                       causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k, masked) V, written out; ``key_mask`` (B, 1, 1, T) is True on keys
    that may be attended to; ``causal`` also hides every later position from each query.
    Same result as SDPA's math back-end.

    The masks are an additive bias (0 or -inf) that ``baddbmm`` adds inside the scaled product,
    one operation instead of a product, a scale and a fill, and the softmax runs in the input's
    dtype: in bf16 the CPU kernel accumulates in fp32 and rounds once, the same values as an
    fp32 softmax cast back, without the two casts each way (~14% of the baby GPT's bf16
    training step together)."""
    B, nh, T, hs = q.shape
    S = k.shape[-2]
    bias = None
    if causal:
        bias = torch.full((T, S), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    if key_mask is not None:
        keys = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
        keys = keys.masked_fill(~key_mask, float("-inf"))  # (B, 1, 1, S)
        bias = keys if bias is None else keys + bias  # (B, 1, T or 1, S)
        bias = bias.expand(B, nh, T, S).reshape(B * nh, T, S)
    qs, ks, vs = (t.reshape(B * nh, -1, hs) for t in (q, k, v))
    scale = hs ** -0.5
    if bias is None:
        scores = torch.bmm(qs, ks.transpose(1, 2)) * scale
    else:
        scores = torch.baddbmm(bias, qs, ks.transpose(1, 2), alpha=scale)  # (B·nh, T, S)
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:  # as SDPA: on the attention weights
        weights = F.dropout(weights, dropout_p)
    return torch.bmm(weights, vs).view(B, nh, T, hs)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention for (B, nh, T, hs) inputs; ``mask`` (B, T) is True on real
    tokens; ``causal``: each position attends to itself and earlier ones only.
    ``F.scaled_dot_product_attention`` does the work, except when training on short sequences
    on the CPU without attention dropout (causal: in bf16 only; see EXPLICIT_MAX_LEN)."""
    key_mask = None
    if mask is not None and not bool(mask.all()):
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T): broadcast over heads and queries
    if _EVERYWHERE.get():
        return explicit_attention(q, k, v, key_mask, causal, dropout_p)
    if (torch.is_grad_enabled() and q.device.type == "cpu" and q.shape[-2] <= EXPLICIT_MAX_LEN
            and dropout_p == 0.0 and (not causal or q.dtype == torch.bfloat16)):
        return explicit_attention(q, k, v, key_mask, causal)
    if causal and key_mask is not None:  # SDPA takes one or the other: combine them
        T = q.shape[-2]
        key_mask = key_mask & torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        causal = False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=key_mask, is_causal=causal, dropout_p=dropout_p)


class MultiHeadSelfAttention(nn.Module):
    """softmax(Q Kᵀ / √d_k + mask) V per head (see :func:`attention`).

    ``mask`` is (B, T) bool, True on real tokens; padded keys get no attention. The scale is
    applied *inside* the softmax (the article put it outside: see docs/math.md).
    """

    def __init__(self, d_model: int, heads: int, attention_dropout: float = 0.0,
                 dropout: float = 0.0, causal: bool = False):
        super().__init__()
        assert d_model % heads == 0  # validated in the config; here for direct users
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attention_dropout = attention_dropout
        self.drop = Dropout(dropout)
        self.causal = causal

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        y = attention(q, k, v, mask, causal=self.causal,
                      dropout_p=self.attention_dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.drop(self.proj(y))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, heads, attention_dropout, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d_model),
            Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, C) using only positions where mask (B, T) is True."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class ConvBank(nn.Module):
    """Parallel 1-D convolutions of several widths + ReLU, each max-pooled over time (TextCNN).

    ``nn.Conv1d`` computes cross-correlation, as every deep-learning framework does:
    y[t] = Σ_k w[k]·x[t+k] + b (see ``dlforge.reference.conv1d``).
    """

    def __init__(self, in_dim: int, filters: int, kernel_sizes: list[int]):
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, filters, k) for k in self.kernel_sizes)
        self.out_dim = filters * len(self.kernel_sizes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> (B, C, T) for Conv1d; pad so the widest kernel fits a short batch.
        x = x.transpose(1, 2)
        # Zeros (like the [PAD] embedding) so the widest kernel fits even a 1-token batch;
        # always the same amount, so the graph has no data-dependent branch (ONNX export).
        x = F.pad(x, (0, max(self.kernel_sizes) - 1))
        lengths = mask.sum(1, keepdim=True)  # (B, 1)
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            h = F.relu(conv(x))  # (B, F, T-k+1)
            # Windows wholly inside the text count; a text shorter than k keeps its first
            # window (zero-padded). So a text's output never depends on the batch's padding.
            start = torch.arange(h.shape[2], device=h.device)[None, :]  # (1, T-k+1)
            valid = start <= (lengths - k).clamp_min(0)  # (B, T-k+1)
            h = h.masked_fill(~valid.unsqueeze(1), float("-inf"))
            pooled.append(h.max(dim=2).values)  # (B, F)
        return torch.cat(pooled, dim=1)  # (B, F * len(kernel_sizes))


class RecurrentEncoder(nn.Module):
    """A (bidirectional) GRU or LSTM over packed sequences; returns the last layer's final
    hidden state of each direction, concatenated: (B, hidden * directions)."""

    def __init__(self, in_dim: int, hidden: int, layers: int = 1, cell: str = "gru",
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn_cls(in_dim, hidden, num_layers=layers, batch_first=True,
                           bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden * self.directions

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.forward_padded(x, mask)  # packed sequences have no ONNX form
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        if isinstance(h, tuple):  # LSTM returns (h_n, c_n)
            h = h[0]
        last = h[-self.directions:]  # (directions, B, hidden) of the top layer
        return last.transpose(0, 1).reshape(x.shape[0], self.out_dim)

    def forward_padded(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same result as ``forward`` (in eval mode) without packed sequences, for ONNX.

        Padding sits after each sequence's last token, so the forward direction over the
        padded tensor is exact up to position len-1. The backward direction runs forward over
        each sequence reversed within its own length (position t <-> len-1-t; padding stays in
        place), with the reverse weights: exact too. Layer by layer, as the fused RNN does.
        """
        B, T = mask.shape
        lengths = mask.sum(1).clamp_min(1).long()  # (B,)
        t = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
        rev = torch.where(t < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - t, t)  # (B, T)
        last = (lengths - 1).view(B, 1, 1)
        rnn, h = self.rnn, x
        finals: list[torch.Tensor] = []
        for layer in range(rnn.num_layers):
            outs, finals = [], []
            for suffix in ("", "_reverse")[: self.directions]:
                params = [getattr(rnn, f"{w}_l{layer}{suffix}") for w in
                          ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inp = h if not suffix else h.gather(1, rev.unsqueeze(-1).expand_as(h))
                out = _single_layer(rnn.mode, inp, params)  # (B, T, hidden)
                finals.append(out.gather(1, last.expand(B, 1, out.shape[-1])).squeeze(1))
                outs.append(out if not suffix else
                            out.gather(1, rev.unsqueeze(-1).expand_as(out)))
            h = torch.cat(outs, dim=-1)
        return torch.cat(finals, dim=-1)  # (B, hidden * directions)


def _single_layer(mode: str, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """One unidirectional GRU/LSTM layer over (B, T, D) with the given weights: (B, T, H)."""
    hidden = params[1].shape[1]
    h0 = x.new_zeros(1, x.shape[0], hidden)
    # aten's fused ops, as nn.GRU / nn.LSTM call them: (input, h0, params, has_biases,
    # num_layers, dropout, train, bidirectional, batch_first).
    if mode == "GRU":
        return torch.gru(x, h0, params, True, 1, 0.0, False, False, True)[0]
    return torch.lstm(x, (h0, h0), params, True, 1, 0.0, False, False, True)[0]


class ClassifierHead(nn.Module):
    """Dropout + one linear layer to logits: 1 for binary (sigmoid), C for softmax/multi-label."""

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.drop = Dropout(dropout)
        self.out = nn.Linear(in_dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT/BERT-style initialisation for Linear and Embedding layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding | PositionEmbedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "padding_idx", None) is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


