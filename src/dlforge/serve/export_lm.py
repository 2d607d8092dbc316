"""ONNX export of a language model (GPT) run, with its key/value cache as inputs and outputs,
verified on the spot with onnxruntime.

One graph serves both phases of generation: ``input_ids`` int64 [batch, length] and the cache
so far, ``past_keys`` / ``past_values`` float [layers, batch, heads, past, head_size] (``past``
0 for the prompt); out come ``logits`` float [batch, length, vocab] and ``present_keys`` /
``present_values`` [layers, batch, heads, past + length, head_size], the inputs of the next
step. Positions continue from ``past``; ``past + length`` must stay within the run's
``block_size``. The tokenizer is the run's ``tokenizer.json``.
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
from dlforge.estimators.language import LanguageModel
from dlforge.models.gpt import GPT

__all__ = ["GPTWithPast", "export_lm_onnx"]

TOLERANCE = 1e-4


class GPTWithPast(nn.Module):
    """``GPT.forward`` with the cache as tensors (concatenated, not written in place), for
    tracing: the same modules and arithmetic (tested against ``GPT.forward`` with a cache)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.gpt
        B, T = input_ids.shape
        P = past_keys.shape[3]
        C, nh = g.config.d_model, g.config.n_head
        x = g.tok_emb(input_ids) + g.pos_emb(torch.arange(T) + P)  # positions P .. P+T-1
        # Query t (position P + t) sees keys 0 .. P + t.
        mask = torch.ones(T, P + T, dtype=torch.bool).tril(P)
        keys, values = [], []
        for i, block in enumerate(g.blocks):
            a = block.attn
            q, k, v = a.qkv(block.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
            k = torch.cat([past_keys[i], k], dim=2)
            v = torch.cat([past_values[i], v], dim=2)
            keys.append(k)
            values.append(v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + a.proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln2(x))
        logits = F.linear(g.ln_f(x), g.tok_emb.weight)
        return logits, torch.stack(keys), torch.stack(values)


def _inputs(gpt: GPT, batch: int, past: int, length: int, seed: int) -> list[np.ndarray]:
    c = gpt.config
    rng = np.random.default_rng(seed)
    shape = (c.n_layer, batch, c.n_head, past, c.d_model // c.n_head)
    return [rng.integers(0, c.vocab_size, size=(batch, length)).astype(np.int64),
            rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)]


def export_lm_onnx(run_dir: Path, out: Path, opset: int = 17) -> dict[str, Any]:
    """Write ``out`` and its JSON description; onnxruntime must match PyTorch within 1e-4 on
    a prompt (no past), one token after a past and a few tokens after a past, or nothing is
    written."""
    require_extra("onnx", "dlforge export")
    import onnxruntime as ort

    lm = LanguageModel.load(run_dir, device="cpu")
    gpt = lm.model_.float().eval()
    wrapper = GPTWithPast(gpt).eval()
    c = gpt.config
    names = ["input_ids", "past_keys", "past_values"]
    outputs = ["logits", "present_keys", "present_values"]
    cache_axes = {1: "batch", 3: "past"}
    axes = {"input_ids": {0: "batch", 1: "length"}, "past_keys": cache_axes,
            "past_values": cache_axes, "logits": {0: "batch", 1: "length"},
            "present_keys": {1: "batch", 3: "past_plus_length"},
            "present_values": {1: "batch", 3: "past_plus_length"}}
    sample = _inputs(gpt, 2, min(3, c.block_size - 2), 2, seed=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
                torch.onnx.export(wrapper, tuple(torch.from_numpy(a) for a in sample),
                                  str(tmp), input_names=names, output_names=outputs,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as err:
            raise DlforgeError(f"{run_dir}: ONNX export failed: "
                               f"{str(err).strip().splitlines()[0]}") from None
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch, past, length in ((1, 0, min(7, c.block_size)), (2, c.block_size // 2, 1),
                                    (3, 1, min(3, c.block_size - 1))):
            feeds = _inputs(gpt, batch, past, length, seed=past + length)
            with torch.no_grad():
                want = wrapper(*(torch.from_numpy(a) for a in feeds))
            got = session.run(outputs, dict(zip(names, feeds, strict=True)))
            for g, w in zip(got, want, strict=True):
                worst = max(worst, float(np.abs(g - w.numpy()).max()))
        if worst > TOLERANCE:
            raise DlforgeError(f"{run_dir}: the ONNX model differs from PyTorch by up to "
                               f"{worst:.2e} (more than {TOLERANCE:g}); not written")
    hs = c.d_model // c.n_head
    cache = ["layers", "batch", "heads", "past", "head_size"]
    info = {"model": out.name, "run_dir": str(run_dir.resolve()), "opset": opset,
            "task": "language_model",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "length"]},
                       {"name": "past_keys", "dtype": "float32", "shape": cache},
                       {"name": "past_values", "dtype": "float32", "shape": cache}],
            "outputs": [{"name": "logits", "dtype": "float32",
                         "shape": ["batch", "length", c.vocab_size]},
                        {"name": "present_keys", "dtype": "float32",
                         "shape": [*cache[:3], "past + length", "head_size"]},
                        {"name": "present_values", "dtype": "float32",
                         "shape": [*cache[:3], "past + length", "head_size"]}],
            "sizes": {"layers": c.n_layer, "heads": c.n_head, "head_size": hs,
                      "vocab": c.vocab_size, "block_size": c.block_size},
            "max_abs_difference": worst,
            "preprocessing": "the run directory's tokenizer.json; start with past_keys and "
                             "past_values of past length 0, feed each step's present_* back "
                             "as the next past_*; past + length <= block_size"}
    with atomic_file(out.with_suffix(".onnx.json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info
