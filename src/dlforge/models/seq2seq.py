"""The original encoder-decoder Transformer (Vaswani et al. 2017), in one file, top to bottom.

Source tokens → embedding x √C + positions (sinusoidal, or learned) → N pre-LN encoder blocks
(``layers.TransformerBlock``: self-attention with the padding mask, GELU MLP) → LayerNorm: the
memory. Target tokens, shifted right behind ``[BOS]`` (teacher forcing) → embedding + positions
→ N pre-LN decoder blocks, each causal self-attention, cross-attention over the memory, and a
GELU MLP → LayerNorm → logits over the target vocabulary. The output layer is the target
embedding's matrix (``tie_embeddings``); with a shared vocabulary the encoder reads the same
embedding too (one matrix, three uses, as in the paper).

Decoding: :func:`greedy_search` and :func:`beam_search` over a :class:`Decoding` state that
keeps every decoder layer's self-attention keys and values (a KV cache: a new token costs one
position, not the whole prefix) and the cross-attention keys and values of the memory (computed
once per source; :class:`CachedStep` is that one-position step written out flat, as
``models.gpt.Decoder``); ``use_cache=False`` recomputes the prefix, and the memory's keys and
values, at every step instead (the same tokens, slower: the benchmark's yardstick). The
search loops themselves (:func:`greedy_decode`, :func:`beam_decode`) take any state with
:class:`Decoding`'s two calls (:class:`DecodingState`): the ONNX backend decodes its exported
graphs through the same loops (``serve.export_seq2seq.OnnxDecoding``).

Shapes: B batch, S source tokens, T target tokens, C = d_model, nh heads, hs = C / nh, V the
target vocabulary, K beams.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.models.layers import Dropout, SinusoidalPositions, TransformerBlock, attention

__all__ = ["CachedStep", "Decoding", "DecodingState", "EncoderDecoder", "EncoderDecoderConfig",
           "beam_decode", "beam_search", "greedy_decode", "greedy_search"]

PAD, BOS, EOS = 0, 1, 2  # the vocabulary's special tokens (data.pairs)


@dataclass
class EncoderDecoderConfig:
    source_vocab: int = 1000
    target_vocab: int = 1000
    max_source: int = 128  # source tokens the encoder takes
    max_target: int = 129  # decoder positions: the longest target + 1 ([BOS] or [EOS])
    d_model: int = 128
    layers: int = 3  # encoder blocks, and as many decoder blocks
    heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.1
    positions: str = "sinusoidal"  # or "learned"
    tie_embeddings: bool = True  # output layer = target embedding
    shared_embeddings: bool = True  # the encoder reads the target embedding (shared vocab)

    def to_dict(self) -> dict:
        return asdict(self)


class Positions(nn.Module):
    """Positions 0..max_length-1 as (T, C) rows: the paper's sinusoids, or a learned table."""

    def __init__(self, cfg: EncoderDecoderConfig, max_length: int):
        super().__init__()
        self.max_length = max_length
        if cfg.positions == "learned":
            self.table: nn.Module = nn.Embedding(max_length, cfg.d_model)
            nn.init.normal_(self.table.weight, std=cfg.d_model ** -0.5)
        else:
            self.table = SinusoidalPositions(max_length, cfg.d_model)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        if start + length > self.max_length:
            raise ValueError(f"{start + length} positions; this model takes {self.max_length}")
        if isinstance(self.table, nn.Embedding):
            return self.table.weight[start:start + length]
        return self.table(length, start)  # (T, C)


def _embedding(vocab: int, d_model: int) -> nn.Embedding:
    emb = nn.Embedding(vocab, d_model, padding_idx=PAD)
    nn.init.normal_(emb.weight, std=d_model ** -0.5)  # x √C: unit variance, as the paper
    with torch.no_grad():
        emb.weight[PAD].zero_()
    return emb


class Attention(nn.Module):
    """Multi-head attention. Self-attention projects queries, keys and values of ``x`` in one
    matrix (``qkv``); cross-attention projects queries of ``x`` (``q``) and keys and values of
    the encoder's memory (``kv``, computed once per source when decoding). The product is
    :func:`layers.attention` (SDPA, or the explicit product where that is faster)."""

    def __init__(self, cfg: EncoderDecoderConfig, cross: bool = False):
        super().__init__()
        self.heads = cfg.heads
        if cross:
            self.q = nn.Linear(cfg.d_model, cfg.d_model)
            self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        else:
            self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def split(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(B, T, parts·C) → ``parts`` tensors of (B, nh, T, hs)."""
        B, T, _ = x.shape
        return x.view(B, T, parts, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.split(self.qkv(x), 3)  # self-attention: q, k, v

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.split(self.kv(memory), 2)  # cross-attention: (B, nh, S, hs) each
        return k, v

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        B, _, T, _ = q.shape
        y = attention(q, k, v, mask, causal=causal)  # (B, nh, T, hs)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, -1)))  # (B, T, C)


class DecoderBlock(nn.Module):
    """Pre-LN: x + SelfAttn(LN(x)) (causal), x + CrossAttn(LN(x), memory), x + MLP(LN(x))."""

    def __init__(self, cfg: EncoderDecoderConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg, cross=True)
        self.ln3 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.ffn_dim), nn.GELU(),
                                 nn.Linear(cfg.ffn_dim, cfg.d_model), Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor],
                memory_mask: torch.Tensor | None, past: list[torch.Tensor] | None = None
                ) -> torch.Tensor:
        """``memory``: this block's cross-attention keys and values of the encoder output.
        ``past``: [keys, values] of the positions before ``x`` (a KV cache, extended here);
        None: ``x`` is the whole prefix."""
        q, k, v = self.self_attn.project(self.ln1(x))  # (B, nh, T, hs) each
        if past is not None:
            if past:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            past[:] = [k, v]
        # Causal within x; a single new position sees every earlier one (no mask needed).
        x = x + self.self_attn(q, k, v, causal=x.shape[1] > 1)
        q = self.cross_attn.split(self.cross_attn.q(self.ln2(x)), 1)[0]
        x = x + self.cross_attn(q, *memory, mask=memory_mask)
        return x + self.mlp(self.ln3(x))


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: EncoderDecoderConfig):
        super().__init__()
        self.config = cfg
        # One module owns each matrix (safetensors refuses a tensor saved under two names):
        # with a shared vocabulary the encoder reads tgt_tok too.
        self.tgt_tok = _embedding(cfg.target_vocab, cfg.d_model)
        self.src_tok = None if cfg.shared_embeddings else _embedding(cfg.source_vocab,
                                                                      cfg.d_model)
        self.tgt_pos = Positions(cfg, cfg.max_target)
        self.src_pos = Positions(cfg, cfg.max_source)
        self.scale = math.sqrt(cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.heads, cfg.ffn_dim, cfg.dropout)
            for _ in range(cfg.layers))
        self.enc_ln = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.layers))
        self.dec_ln = nn.LayerNorm(cfg.d_model)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.target_vocab,
                                                              bias=False)
        for name, m in self.named_modules():  # Xavier for every matrix, as the paper's code
            if isinstance(m, nn.Linear):
                # A fused projection (q, k, v; or k, v) is several C x C matrices: each its own.
                parts = m.out_features // m.in_features if name.endswith(("qkv", "kv")) else 1
                for w in m.weight.data.chunk(parts, dim=0):
                    nn.init.xavier_uniform_(w)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, ids: torch.Tensor, tok: nn.Embedding, pos: Positions,
              start: int = 0) -> torch.Tensor:
        """Token embedding x √C (unit variance) + positions start.., then dropout: (B, T, C)."""
        return self.drop(tok(ids) * self.scale + pos(ids.shape[1], start))

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) token ids and their mask (True on real tokens) → the memory (B, S, C)."""
        x = self.embed(src, self.tgt_tok if self.src_tok is None else self.src_tok, self.src_pos)
        for block in self.encoder:
            x = block(x, src_mask)
        return self.enc_ln(x)

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder block's cross-attention keys and values of ``memory``."""
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def decode(self, tgt_in: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
               src_mask: torch.Tensor | None, cache: list[list[torch.Tensor]] | None = None,
               start: int = 0, last: bool = False) -> torch.Tensor:
        """(B, T) decoder inputs at positions start.. → logits (B, T, V) (``last``: of the
        last position only, (B, 1, V)); with ``cache`` (one [keys, values] per block) the
        positions before ``start`` are read from it."""
        x = self.embed(tgt_in, self.tgt_tok, self.tgt_pos, start)
        for i, block in enumerate(self.decoder):
            x = block(x, memory_kv[i], src_mask, None if cache is None else cache[i])
        x = self.dec_ln(x[:, -1:] if last else x)
        weight = self.tgt_tok.weight if self.head is None else self.head.weight
        return F.linear(x, weight)  # (B, T, V)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) of the next token at every target position."""
        return self.decode(tgt_in, self.memory_kv(self.encode(src, src_mask)), src_mask)


class Decoding:
    """The state of decoding a batch of N rows (N = B sources x K beams): the memory's
    cross-attention keys and values, and, with ``use_cache``, each block's self-attention
    keys and values so far. :meth:`step` gives the next token's logits of every row."""

    def __init__(self, model: EncoderDecoder, src: torch.Tensor, src_mask: torch.Tensor,
                 beams: int = 1, use_cache: bool = True):
        self.model, self.use_cache = model, use_cache
        memory = model.encode(src, src_mask)  # (B, S, C)
        if beams > 1:  # each source's row repeated for its K beams: (B·K, ...)
            memory = memory.repeat_interleave(beams, dim=0)
            src_mask = src_mask.repeat_interleave(beams, dim=0)
        # The cache holds the memory's cross-attention keys and values too; without it they
        # are recomputed at every step, as the self-attention's are.
        self.memory = memory
        self.memory_kv = model.memory_kv(memory) if use_cache else None
        self.src_mask = None if bool(src_mask.all()) else src_mask  # no padding: no mask
        self.cache: list[list[torch.Tensor]] = [[] for _ in model.decoder]
        self._never = torch.tensor([PAD, BOS], device=src.device)
        self._step = CachedStep(model) if use_cache and not model.training else None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (N, t): every row's prefix, [BOS] first → logits (N, V) of token t+1."""
        if not self.use_cache:
            logits = self.model.decode(tokens, self.model.memory_kv(self.memory),
                                       self.src_mask, last=True)[:, -1]
        elif self._step is not None:
            logits = self._step(tokens[:, -1], tokens.shape[1] - 1, self.cache,
                                self.memory_kv, self.src_mask)
        else:
            logits = self.model.decode(tokens[:, -1:], self.memory_kv, self.src_mask,
                                       self.cache, start=tokens.shape[1] - 1)[:, -1]
        return logits.index_fill(1, self._never, float("-inf"))  # never [PAD] nor [BOS]

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i continues row ``rows[i]`` (beam search): its cache follows. The memory is the
        same for every beam of a source, and beams never move between sources."""
        for kv in self.cache:
            kv[:] = [t.index_select(0, rows) for t in kv]


class CachedStep:
    """One decoding step through the KV cache, written out flat: ``EncoderDecoder.decode``
    for one position per row, without the module calls, 3-D views and reshapes around each
    operation (at batch 1 a step is ~80 tiny operations whose fixed cost is most of the time;
    as ``models.gpt.Decoder``). Same arithmetic, same cache layout: the logits agree with the
    module path to float rounding, and decoding gives the same tokens (both tested). Views of
    the model's parameters: build it per generation, in eval mode."""

    def __init__(self, model: EncoderDecoder):
        cfg = model.config
        self.heads, self.d_model = cfg.heads, cfg.d_model

        def mat(lin: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            return lin.weight.detach().t(), lin.bias.detach()  # (in, out) for addmm

        def norm(ln: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
            return ln.weight.detach(), ln.bias.detach()

        self.blocks = [(*norm(b.ln1), *mat(b.self_attn.qkv), *mat(b.self_attn.proj),
                        *norm(b.ln2), *mat(b.cross_attn.q), *mat(b.cross_attn.proj),
                        *norm(b.ln3), *mat(b.mlp[0]), *mat(b.mlp[2])) for b in model.decoder]
        table = model.tgt_pos.table
        self.pos = (table.weight if isinstance(table, nn.Embedding) else table.table).detach()
        self.tok = model.tgt_tok.weight.detach()
        self.scale = model.scale
        self.final = norm(model.dec_ln)
        self.head = (self.tok if model.head is None else model.head.weight.detach()).t()

    def __call__(self, ids: torch.Tensor, pos: int, cache: list[list[torch.Tensor]],
                 memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
                 memory_mask: torch.Tensor | None) -> torch.Tensor:
        """``ids`` (N,) at position ``pos`` → logits (N, V); each block's cache grows by one."""
        N, C, nh = ids.shape[0], self.d_model, self.heads
        shape = (C,)
        mask = None if memory_mask is None else memory_mask[:, None, None, :]  # (N, 1, 1, S)
        x = self.tok[ids] * self.scale + self.pos[pos]  # (N, C)
        for (n1w, n1b, qkv_w, qkv_b, sw, sb, n2w, n2b, qw, qb, cw, cb, n3w, n3b, uw, ub, dw,
             db), kv, (mk, mv) in zip(self.blocks, cache, memory_kv, strict=True):
            h = F.layer_norm(x, shape, n1w, n1b)
            # (N, 3C) -> three (N, nh, 1, hs): one position needs no transpose.
            q, k, v = torch.addmm(qkv_b, h, qkv_w).view(N, 3, nh, 1, C // nh).unbind(1)
            if kv:
                k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
            kv[:] = [k, v]
            y = F.scaled_dot_product_attention(q, k, v)  # (N, nh, 1, hs): (N, C) in memory
            x = x + torch.addmm(sb, y.view(N, C), sw)
            h = F.layer_norm(x, shape, n2w, n2b)
            q = torch.addmm(qb, h, qw).view(N, nh, 1, C // nh)
            y = F.scaled_dot_product_attention(q, mk, mv, attn_mask=mask)
            x = x + torch.addmm(cb, y.view(N, C), cw)
            h = F.layer_norm(x, shape, n3w, n3b)
            x = x + torch.addmm(db, F.gelu(torch.addmm(ub, h, uw)), dw)
        return torch.mm(F.layer_norm(x, shape, *self.final), self.head)  # (N, V)


@torch.inference_mode()
def greedy_search(model: EncoderDecoder, src: torch.Tensor, src_mask: torch.Tensor,
                  max_new_tokens: int, use_cache: bool = True) -> list[list[int]]:
    """The likeliest next token at every step, until [EOS] (not returned) or
    ``max_new_tokens``; one token list per source."""
    state = Decoding(model, src, src_mask, 1, use_cache)
    return greedy_decode(state, src.shape[0], max_new_tokens, src.device)


@torch.inference_mode()
def beam_search(model: EncoderDecoder, src: torch.Tensor, src_mask: torch.Tensor,
                beam_size: int, max_new_tokens: int, length_penalty: float = 1.0,
                use_cache: bool = True) -> list[list[int]]:
    """Beam search as in fairseq (see :func:`beam_decode`); each source's best hypothesis
    (without [EOS]). With K = 1 this is :func:`greedy_search`."""
    state = Decoding(model, src, src_mask, beam_size, use_cache)
    return beam_decode(state, src.shape[0], beam_size, max_new_tokens, length_penalty,
                       src.device)


class DecodingState(Protocol):
    """What the search loops ask of a decoding state: :class:`Decoding` (the model itself),
    or ``serve.export_seq2seq.OnnxDecoding`` (its exported graphs)."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (N, t): every row's prefix, [BOS] first → logits (N, V) of token t+1,
        -inf at [PAD] and [BOS] (never chosen)."""
        ...

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i continues row ``rows[i]`` (beam search): its cache follows."""
        ...


@torch.inference_mode()
def greedy_decode(state: DecodingState, batch: int, max_new_tokens: int,
                  device: torch.device) -> list[list[int]]:
    """The greedy loop of :func:`greedy_search` over any decoding state of ``batch`` rows."""
    tokens = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        nxt = state.step(tokens).argmax(-1)
        nxt = nxt.masked_fill(done, PAD)  # finished rows idle
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return [_until_eos(row) for row in tokens[:, 1:].tolist()]


@torch.inference_mode()
def beam_decode(state: DecodingState, batch: int, beam_size: int, max_new_tokens: int,
                length_penalty: float, device: torch.device) -> list[list[int]]:
    """Beam search over a decoding state of ``batch`` x ``beam_size`` rows (each source's K
    beams side by side), as in fairseq: each step, every source's K beams propose their 2K
    best continuations; an [EOS] among the best K finishes a hypothesis, scored
    log p / length^``length_penalty``; the best K others go on. A source is done once it has
    K finished hypotheses; at ``max_new_tokens`` its beams finish as they are. Returns each
    source's best hypothesis (without [EOS])."""
    B, K = batch, beam_size
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: only the first one proposes
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        logp = torch.log_softmax(state.step(tokens).float(), dim=-1)  # (B·K, V)
        V = logp.shape[-1]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        top_scores, top_index = cand.topk(2 * K, dim=1)  # (B, 2K)
        beam, token = top_index // V, top_index % V
        last = step == max_new_tokens - 1
        rows, next_tok, next_score = [], [], []
        top_scores_l, beam_l, token_l = top_scores.tolist(), beam.tolist(), token.tolist()
        for b in range(B):
            chosen = 0
            for j in range(2 * K):
                if done[b] or chosen == K:
                    break
                s, k, tok = top_scores_l[b][j], beam_l[b][j], token_l[b][j]
                if tok == EOS or last:
                    if tok == EOS and j >= K:  # an [EOS] below the best K proposals: skipped
                        continue
                    prefix = tokens[b * K + k, 1:].tolist() + ([] if tok == EOS else [tok])
                    finished[b].append((s / (step + 1) ** length_penalty, prefix))
                    if tok == EOS:
                        continue
                rows.append(b * K + k)
                next_tok.append(tok)
                next_score.append(s)
                chosen += 1
            if len(finished[b]) >= K:
                done[b] = True
            while chosen < K:  # a finished source: idle rows, never chosen again
                rows.append(b * K)
                next_tok.append(PAD)
                next_score.append(float("-inf"))
                chosen += 1
        if all(done) or last:
            break
        index = torch.tensor(rows, device=device)
        tokens = torch.cat([tokens.index_select(0, index),
                            torch.tensor(next_tok, device=device)[:, None]], dim=1)
        scores = torch.tensor(next_score, device=device).view(B, K)
        state.reorder(index)
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


def _until_eos(row: list[int]) -> list[int]:
    return row[:row.index(EOS)] if EOS in row else row
