"""ONNX export of a sequence-to-sequence (Transformer) run: an encoder graph and a decoder
graph with its key/value cache, verified on the spot with onnxruntime.

``RUN.encoder.onnx``: ``src_ids`` int64 [batch, src_len] and ``src_mask`` int64 (1 on real
tokens) → ``memory_keys`` / ``memory_values`` float [layers, batch, heads, src_len, head_size],
every decoder block's cross-attention keys and values (computed once per source).

``RUN.onnx`` (the decoder with past): ``input_ids`` int64 [batch, length], ``src_mask``, the
memory keys and values, and ``past_keys`` / ``past_values`` [layers, batch, heads, past,
head_size] (``past`` 0 at the start) → ``logits`` [batch, length, vocab] and ``present_keys``
/ ``present_values`` [..., past + length, ...], the next step's past. Decoding starts from
``[BOS]`` (id 1) and stops at ``[EOS]`` (id 2); the tokenizer is the run's BPE file.

Nothing is written unless onnxruntime matches PyTorch within 1e-4 on sample inputs and greedy
decoding through the two graphs gives the same tokens as the run's own greedy search (and beam
search too, with the run's beam size, when it is above 1). :class:`OnnxDecoding` is that
decoding state for ``models.seq2seq``'s search loops: ``dlforge serve --backend onnx`` predicts
through it (:func:`onnx_sessions` exports the graphs first when missing or older than the run).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlforge._atomic import atomic_file
from dlforge._extras import require_extra
from dlforge.errors import DlforgeError
from dlforge.estimators.seq2seq import Seq2Seq
from dlforge.models.seq2seq import (
    BOS,
    EOS,
    PAD,
    EncoderDecoder,
    beam_decode,
    beam_search,
    greedy_decode,
    greedy_search,
)

__all__ = ["DecoderWithPast", "EncoderGraph", "OnnxDecoding", "export_seq2seq_onnx",
           "onnx_sessions"]

TOLERANCE = 1e-4
ENCODER_OUT = ["memory_keys", "memory_values"]
DECODER_IN = ["input_ids", "src_mask", "memory_keys", "memory_values", "past_keys",
              "past_values"]
DECODER_OUT = ["logits", "present_keys", "present_values"]


class EncoderGraph(nn.Module):
    """The encoder and every decoder block's cross-attention keys and values, stacked."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = model

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.model.memory_kv(self.model.encode(src_ids, src_mask.bool()))
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class DecoderWithPast(nn.Module):
    """``EncoderDecoder.decode`` with the cache as tensors (concatenated, not kept in a list),
    for tracing: the same modules and arithmetic."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = model
        table = model.tgt_pos.table
        self.positions = table.weight if isinstance(table, nn.Embedding) else table.table

    def forward(self, input_ids: torch.Tensor, src_mask: torch.Tensor,
                memory_keys: torch.Tensor, memory_values: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        B, T = input_ids.shape
        P = past_keys.shape[3]
        x = m.tgt_tok(input_ids) * m.scale + self.positions[torch.arange(T) + P]  # (B, T, C)
        causal = torch.ones(T, P + T, dtype=torch.bool).tril(P)  # query t sees keys ..P+t
        cross = src_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        keys, values = [], []
        for i, block in enumerate(m.decoder):
            q, k, v = block.self_attn.project(block.ln1(x))
            k = torch.cat([past_keys[i], k], dim=2)
            v = torch.cat([past_values[i], v], dim=2)
            keys.append(k)
            values.append(v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
            x = x + block.self_attn.proj(y.transpose(1, 2).reshape(B, T, -1))
            q = block.cross_attn.split(block.cross_attn.q(block.ln2(x)), 1)[0]
            y = F.scaled_dot_product_attention(q, memory_keys[i], memory_values[i],
                                               attn_mask=cross)
            x = x + block.cross_attn.proj(y.transpose(1, 2).reshape(B, T, -1))
            x = x + block.mlp(block.ln3(x))
        weight = m.tgt_tok.weight if m.head is None else m.head.weight
        return F.linear(m.dec_ln(x), weight), torch.stack(keys), torch.stack(values)


class OnnxDecoding:
    """:class:`~dlforge.models.seq2seq.Decoding`'s interface over the two onnxruntime
    sessions, for the same search loops (``greedy_decode``, ``beam_decode``): the encoder
    runs once, its keys and values (and the source mask) repeated for the K beams of each
    source; each step feeds the decoder the last token and the pasts, and keeps its
    ``present_*`` as the next ``past_*``; :meth:`reorder` moves the pasts' rows. Logits come
    back as torch tensors on the sources' device."""

    def __init__(self, encoder: Any, decoder: Any, src: torch.Tensor, src_mask: torch.Tensor,
                 beams: int = 1):
        self.decoder, self.device = decoder, src.device
        mask = src_mask.cpu().numpy().astype(np.int64)  # (B, S), 1 on real tokens
        keys, values = encoder.run(ENCODER_OUT, {"src_ids": src.cpu().numpy().astype(np.int64),
                                                 "src_mask": mask})  # (L, B, nh, S, hs)
        if beams > 1:  # each source's row repeated for its K beams: (L, B·K, ...)
            keys, values = keys.repeat(beams, axis=1), values.repeat(beams, axis=1)
            mask = mask.repeat(beams, axis=0)
        self.mask, self.memory = mask, (keys, values)
        L, N, nh, _, hs = keys.shape
        empty = np.zeros((L, N, nh, 0, hs), dtype=np.float32)  # no positions yet
        self.past = (empty, empty)
        self._never = torch.tensor([PAD, BOS], device=src.device)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (N, t): every row's prefix, [BOS] first → logits (N, V) of token t+1."""
        last = tokens[:, -1:].cpu().numpy()  # the pasts hold the positions before it
        logits, keys, values = self.decoder.run(DECODER_OUT, dict(zip(DECODER_IN, (
            last, self.mask, *self.memory, *self.past), strict=True)))
        self.past = (keys, values)
        logits = torch.from_numpy(logits[:, -1]).to(self.device)
        return logits.index_fill(1, self._never, float("-inf"))  # never [PAD] nor [BOS]

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i continues row ``rows[i]`` (beam search): the pasts follow (batch axis 1)."""
        index = rows.cpu().numpy()
        self.past = tuple(p.take(index, axis=1) for p in self.past)


def encoder_path(out: Path) -> Path:
    """``RUN.encoder.onnx`` beside the decoder's ``RUN.onnx``."""
    return out.with_name(out.name.removesuffix(".onnx") + ".encoder.onnx")


def onnx_sessions(run_dir: Path) -> tuple[Any, Any]:
    """onnxruntime sessions of the run's encoder and decoder graphs (``RUN_DIR.encoder.onnx``,
    ``RUN_DIR.onnx``), exported and verified now if either is missing or older than the run
    (as :func:`dlforge.serve.export.onnx_session`)."""
    require_extra("onnx", "dlforge serve --backend onnx")
    import onnxruntime as ort

    out = run_dir.with_suffix(".onnx")
    files = (encoder_path(out), out)
    stamp = (run_dir / "dlforge.json").stat().st_mtime
    if any(not f.is_file() or f.stat().st_mtime < stamp for f in files):
        export_seq2seq_onnx(run_dir, out)
    enc, dec = (ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
                for f in files)
    return enc, dec


def _samples(model: EncoderDecoder, batch: int, src_len: int, past: int, length: int,
             seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    c = model.config
    rng = np.random.default_rng(seed)
    src = rng.integers(3, c.source_vocab, size=(batch, src_len)).astype(np.int64)
    mask = np.ones((batch, src_len), dtype=np.int64)
    mask[0, max(1, src_len - 2):] = 0  # padding in the first row: the mask's path is traced
    cache = (c.layers, batch, c.heads, past, c.d_model // c.heads)
    dec = [rng.integers(3, c.target_vocab, size=(batch, length)).astype(np.int64), mask,
           *(rng.normal(size=(c.layers, batch, c.heads, src_len, c.d_model // c.heads))
             .astype(np.float32) for _ in range(2)),
           rng.normal(size=cache).astype(np.float32), rng.normal(size=cache).astype(np.float32)]
    return [src, mask], dec


def export_seq2seq_onnx(run_dir: Path, out: Path, opset: int = 17) -> dict[str, Any]:
    """Write the decoder graph to ``out``, the encoder graph beside it (``.encoder.onnx``) and
    their JSON description, once verified (see the module docstring)."""
    require_extra("onnx", "dlforge export")
    import onnxruntime as ort

    s2s = Seq2Seq.load(run_dir, device="cpu")
    if s2s.backend_.kind != "transformer":
        raise DlforgeError(f"{run_dir}: a fine-tuned pretrained model; export it with its own "
                           "tools (optimum) from the run's pretrained/ folder")
    model = s2s.backend_.model.float().eval()
    c = model.config
    enc, dec = EncoderGraph(model).eval(), DecoderWithPast(model).eval()
    enc_path = encoder_path(out)
    src_len = min(5, c.max_source)
    enc_sample, dec_sample = _samples(model, 2, src_len, 3, 2, seed=0)
    layered = {1: "batch", 3: "src_len"}
    cache = {1: "batch", 3: "past"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(enc_path) as enc_tmp, atomic_file(out) as dec_tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
                torch.onnx.export(
                    enc, tuple(torch.from_numpy(a) for a in enc_sample), str(enc_tmp),
                    input_names=["src_ids", "src_mask"], output_names=ENCODER_OUT,
                    dynamic_axes={"src_ids": {0: "batch", 1: "src_len"},
                                  "src_mask": {0: "batch", 1: "src_len"},
                                  "memory_keys": layered, "memory_values": layered},
                    opset_version=opset, dynamo=False)
                torch.onnx.export(
                    dec, tuple(torch.from_numpy(a) for a in dec_sample), str(dec_tmp),
                    input_names=DECODER_IN, output_names=DECODER_OUT,
                    dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                  "src_mask": {0: "batch", 1: "src_len"},
                                  "memory_keys": layered, "memory_values": layered,
                                  "past_keys": cache, "past_values": cache,
                                  "logits": {0: "batch", 1: "length"},
                                  "present_keys": {1: "batch", 3: "past_plus_length"},
                                  "present_values": {1: "batch", 3: "past_plus_length"}},
                    opset_version=opset, dynamo=False)
        except Exception as err:  # noqa: BLE001 - the exporter raises many kinds: one line
            raise DlforgeError(f"{run_dir}: ONNX export failed: "
                               f"{str(err).strip().splitlines()[0]}") from None
        providers = ["CPUExecutionProvider"]
        enc_s = ort.InferenceSession(str(enc_tmp), providers=providers)
        dec_s = ort.InferenceSession(str(dec_tmp), providers=providers)
        worst = 0.0
        for batch, slen, past, length in ((1, min(3, c.max_source), 0, 1),
                                          (3, min(7, c.max_source), 4, 1), (2, 2, 1, 3)):
            e, d = _samples(model, batch, slen, past, length, seed=batch + past)
            with torch.no_grad():
                want = [*enc(*map(torch.from_numpy, e)), *dec(*map(torch.from_numpy, d))]
            got = [*enc_s.run(ENCODER_OUT, dict(zip(["src_ids", "src_mask"], e, strict=True))),
                   *dec_s.run(DECODER_OUT, dict(zip(DECODER_IN, d, strict=True)))]
            worst = max(worst, *(float(np.abs(g - w.numpy()).max())
                                 for g, w in zip(got, want, strict=True)))
        if worst > TOLERANCE:
            raise DlforgeError(f"{run_dir}: the ONNX graphs differ from PyTorch by up to "
                               f"{worst:.2e} (more than {TOLERANCE:g}); not written")
        _same_tokens(run_dir, s2s, model, enc_s, dec_s)
    hs = c.d_model // c.heads
    beams = s2s.config_.beam_size
    searched = "greedy" if beams == 1 else f"greedy and {beams}-beam search"
    info = {"model": out.name, "encoder": enc_path.name, "run_dir": str(run_dir.resolve()),
            "opset": opset, "task": "seq2seq",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "length"]},
                       {"name": "src_mask", "dtype": "int64", "shape": ["batch", "src_len"]},
                       *({"name": n, "dtype": "float32",
                          "shape": ["layers", "batch", "heads", "src_len", "head_size"]}
                         for n in ENCODER_OUT),
                       *({"name": n, "dtype": "float32",
                          "shape": ["layers", "batch", "heads", "past", "head_size"]}
                         for n in ("past_keys", "past_values"))],
            "encoder_inputs": [{"name": "src_ids", "dtype": "int64",
                                "shape": ["batch", "src_len"]},
                               {"name": "src_mask", "dtype": "int64",
                                "shape": ["batch", "src_len"]}],
            "sizes": {"layers": c.layers, "heads": c.heads, "head_size": hs,
                      "vocab": c.target_vocab, "max_source": c.max_source,
                      "max_target": c.max_target},
            "special_tokens": {"pad": PAD, "bos": BOS, "eos": EOS},
            "max_abs_difference": worst,
            "verified_against": f"PyTorch (and its {searched} tokens)",
            "preprocessing": "the run's tokenizer.json (or source_/target_tokenizer.json); "
                             "run the encoder once, then the decoder from [BOS] with pasts of "
                             "length 0, feeding each step's present_* back as past_*"}
    with atomic_file(out.with_suffix(".onnx.json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def _same_tokens(run_dir: Path, s2s: Seq2Seq, model: EncoderDecoder, encoder: Any,
                 decoder: Any) -> None:
    """Greedy decoding (and beam search, with the run's beam size and length penalty) of a
    few sources through the graphs gives PyTorch's tokens, or a DlforgeError."""
    src, mask = _sources(s2s)
    cfg, n = s2s.config_, model.config.max_target
    for k in sorted({1, cfg.beam_size}):
        with torch.inference_mode():
            state = OnnxDecoding(encoder, decoder, src, mask, k)
            if k == 1:
                want = greedy_search(model, src, mask, n)
                got = greedy_decode(state, src.shape[0], n, src.device)
            else:
                want = beam_search(model, src, mask, k, n, cfg.length_penalty)
                got = beam_decode(state, src.shape[0], k, n, cfg.length_penalty, src.device)
        if got != want:
            how = "greedy decoding" if k == 1 else f"beam search ({k} beams)"
            raise DlforgeError(f"{run_dir}: {how} through the ONNX graphs gives other tokens "
                               "than PyTorch; not written")


def _sources(s2s: Seq2Seq) -> tuple[torch.Tensor, torch.Tensor]:
    """A few real-looking sources (pieces of the vocabulary), of different lengths, to decode
    both ways: token ids (B, S) and the mask (True on real tokens)."""
    texts = ["a", "hello world", "the 3 cats"]
    ids = [row[:s2s.backend_.max_source] or [3] for row in s2s.backend_.encode_sources(texts)]
    width = max(map(len, ids))
    src = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        src[i, :len(row)] = torch.tensor(row)
    return src, src != PAD
