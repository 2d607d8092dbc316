"""A decoder-only Transformer (GPT), in one file, top to bottom.

Token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks of causal self-attention
(``F.scaled_dot_product_attention(..., is_causal=True)``) and a GELU MLP, a final LayerNorm, and
an output head that shares the token embedding's matrix (weight tying). Residual projections
start scaled by 1/√(2·n_layer) (GPT-2). A :class:`KVCache` keeps each layer's keys and values so
that decoding one more token costs one position, not the whole context; :class:`Decoder` is that
one-position step written out flat (the same arithmetic as ``GPT.forward`` with a cache, in about
half the time: at batch 1 a step is dozens of tiny operations, and their overhead is the cost).

Shapes: B batch, T time (tokens), C = d_model, nh heads, hs = C / nh per head, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.models.layers import Dropout, attention

__all__ = ["GPT", "Decoder", "GPTConfig", "KVCache"]


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the context window: the most tokens the model ever sees at once
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer for the positions decoded so far, preallocated to the
    context window: (B, nh, block_size, hs) per layer. ``pos`` is how many are filled."""

    def __init__(self, cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype):
        shape = (batch, cfg.n_head, cfg.block_size, cfg.d_model // cfg.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0
        self.block_size = cfg.block_size

    def reset(self) -> None:
        self.pos = 0

    def row(self, i: int) -> KVCache:
        """A cache of batch 1 over row ``i`` of this one (views: writes land here), starting
        empty: the prompt of one sequence is encoded into its row of a shared batch."""
        view = KVCache.__new__(KVCache)
        view.k = [k[i:i + 1] for k in self.k]
        view.v = [v[i:i + 1] for v in self.v]
        view.pos, view.block_size = 0, self.block_size
        return view


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual = True  # scaled at initialisation (see GPT._init)
        self.dropout = cfg.dropout
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is None or cache.pos == 0:
            # Training, or the first chunk of a decode: the plain causal mask, through
            # F.scaled_dot_product_attention(..., is_causal=True) (layers.attention; except in
            # bf16 training on short sequences on the CPU, where the explicit product is much
            # faster than the flash backward: same result, see layers.EXPLICIT_MAX_LEN).
            if cache is not None:
                cache.k[layer][:, :, :T] = k
                cache.v[layer][:, :, :T] = v
            y = attention(q, k, v, None, causal=True,
                          dropout_p=self.dropout if self.training else 0.0)
        else:
            # T new positions after cache.pos cached ones: they see every cached key and the new
            # keys up to themselves. SDPA's is_causal aligns the mask top-left, which is wrong
            # when queries and keys differ in length, so the mask is explicit (none for T == 1).
            start, end = cache.pos, cache.pos + T
            cache.k[layer][:, :, start:end] = k
            cache.v[layer][:, :, start:end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]  # (B, nh, end, hs)
            mask = None
            if T > 1:
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.down.residual = True
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x))))  # (B, T, 4C) inside, (B, T, C) out


class Block(nn.Module):
    """Pre-LayerNorm: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        # The output head is the token embedding's matrix (weight tying): one parameter, and
        # nothing shared to trip safetensors when saving.
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            # Residual projections add to the stream once per block twice: GPT-2 scales them.
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(m, "residual", False) \
                else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; without the position embedding by default (the token embedding is
        counted: it is also the output head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``idx`` (B, T) token ids. With ``targets`` (B, T): logits (B, T, V) and the mean
        cross-entropy. Without: the last position's logits (B, 1, V) and None. With ``cache``
        the positions continue from ``cache.pos`` and the cache advances by T."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context window "
                             f"(block_size {self.config.block_size})")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        x = self.ln_f(x)  # (B, T, C)
        if targets is None:
            return F.linear(x[:, -1:], self.tok_emb.weight), None  # (B, 1, V)
        logits = F.linear(x, self.tok_emb.weight)  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward, PaLM appendix B): 6·N for the weights
        plus 12·n_layer·T·C for attention's two matmuls over a full window."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.block_size * c.d_model


class Decoder:
    """One decoding step of ``model`` — a token per row at position ``cache.pos`` — as a flat
    sequence of tensor operations: ``GPT.forward(idx, cache=cache)`` for ``T == 1`` without the
    module calls, reshapes and autocast casts around each operation (at batch 1 the step is ~60
    tiny operations whose fixed cost is most of the time). Same arithmetic: the logits agree with
    ``GPT.forward`` to float rounding (tested), and greedy decoding gives the same tokens.

    ``dtype`` is the matmul precision (``torch.bfloat16`` is what bf16 autocast computes in; the
    LayerNorms and the residual stream stay float32, as under autocast). fp32 uses the model's
    parameters directly (views: a later update shows); bf16 takes a copy of the matrices made
    here, so build a Decoder after training, per generation. The model must be in eval mode."""

    def __init__(self, model: GPT, dtype: torch.dtype = torch.float32):
        cfg = model.config
        self.n_head, self.d_model = cfg.n_head, cfg.d_model
        self.dtype = dtype

        def mat(lin: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
            # (in, out) views for addmm(bias, x, W): no transpose per step.
            w, b = lin.weight.detach().t(), lin.bias
            if b is not None:
                b = b.detach().to(dtype)
            return w.to(dtype), b

        def norm(ln: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor | None]:
            return ln.weight.detach(), None if ln.bias is None else ln.bias.detach()

        self.layers = [(*norm(b.ln1), *mat(b.attn.qkv), *mat(b.attn.proj), *norm(b.ln2),
                        *mat(b.mlp.up), *mat(b.mlp.down)) for b in model.blocks]
        self.tok = model.tok_emb.weight.detach()
        self.pos = model.pos_emb.weight.detach()
        self.ln_f = norm(model.ln_f)
        self.head = self.tok.t().to(dtype)  # weight tying: the head is the token embedding

    @staticmethod
    def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return torch.mm(x, w) if b is None else torch.addmm(b, x, w)

    @staticmethod
    def _gelu(u: torch.Tensor) -> torch.Tensor:
        # Exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)): on a few hundred values F.gelu has a fixed
        # cost of ~9 µs here, these three operations ~3 µs.
        half = u * 0.5
        return torch.addcmul(half, half, torch.erf(u.mul_(0.7071067811865476)))

    def __call__(self, idx: torch.Tensor, cache: KVCache,
                 positions: list[int] | None = None) -> torch.Tensor:
        """``idx`` (B,) token ids at position ``cache.pos``; returns logits (B, V) and advances
        the cache by one.

        With ``positions`` (one per row, each row a sequence of its own, continuous batching):
        row ``r`` of the cache's first B rows is at ``positions[r]``; its key and value go
        there, it attends to its own positions only, and ``cache.pos`` is left alone (the
        caller advances each position)."""
        block = cache.block_size
        B, C, nh, dt = idx.shape[0], self.d_model, self.n_head, self.dtype
        lin, shape = self._linear, (C,)
        rows = mask = None
        if positions is None:
            pos = end = cache.pos
        elif min(positions) == max(positions):  # aligned rows: the plain path
            pos = end = positions[0]
        else:
            rows = torch.arange(B, device=idx.device)
            pos = torch.tensor(positions, device=idx.device)
            end = max(positions)
            # (B, 1, 1, end + 1): each row's keys up to its own position
            mask = (torch.arange(end + 1, device=idx.device) <= pos[:, None])[:, None, None, :]
        if end >= block:
            raise ValueError(f"sequence of {end + 1} tokens is longer than the context window "
                             f"(block_size {block})")
        x = self.tok[idx] + self.pos[pos]  # (B, C), float32 like the parameters
        for i, (n1w, n1b, qkv_w, qkv_b, pw, pb, n2w, n2b, uw, ub, dw, db) in \
                enumerate(self.layers):
            h = F.layer_norm(x, shape, n1w, n1b).to(dt)
            # (B, 3C) -> three (B, nh, 1, hs): with one position no transpose is needed.
            q, k, v = lin(h, qkv_w, qkv_b).view(B, 3, nh, 1, C // nh).unbind(1)
            ck, cv = cache.k[i], cache.v[i]
            if rows is None:
                if ck.shape[0] > B:  # the first B rows of a larger (batching) cache
                    ck, cv = ck[:B], cv[:B]
                ck.narrow(2, pos, 1).copy_(k)
                cv.narrow(2, pos, 1).copy_(v)
            else:  # (B, nh, hs) into [row, :, its position]
                ck[rows, :, pos] = k.squeeze(2)
                cv[rows, :, pos] = v.squeeze(2)
                ck, cv = ck[:B], cv[:B]
            y = F.scaled_dot_product_attention(q, ck.narrow(2, 0, end + 1),
                                               cv.narrow(2, 0, end + 1), attn_mask=mask)
            x = x + lin(y.view(B, C), pw, pb)  # (B, nh, 1, hs) is (B, C) in memory
            h = F.layer_norm(x, shape, n2w, n2b).to(dt)
            x = x + lin(self._gelu(lin(h, uw, ub)), dw, db)
        if positions is None:
            cache.pos = end + 1
        return torch.mm(F.layer_norm(x, shape, *self.ln_f).to(dt), self.head)  # (B, V)
