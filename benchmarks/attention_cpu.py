"""Attention kernels on the CPU: PyTorch's SDPA (flash and math back-ends) against the explicit
softmax(QKᵀ/√d_k)·V, forward + backward (training) and forward only (inference), under bf16
autocast, at the article's shape (batch 64, 4 heads, head size 128) and several lengths.

This is why ``dlforge.models.layers.attention`` computes attention explicitly when training on
the CPU on sequences up to ``EXPLICIT_MAX_LEN`` tokens, and calls SDPA elsewhere.

    .venv/bin/python benchmarks/attention_cpu.py [--lengths 16,40,80,128,256] [--fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from dlforge.models.layers import EXPLICIT_MAX_LEN, explicit_attention


def sdpa_flash(q, k, v, m):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


def sdpa_math(q, k, v, m):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


def explicit(q, k, v, m):
    return explicit_attention(q, k, v, m)


def time_it(fn, T: int, train: bool, dtype: torch.dtype, reps: int = 10) -> float:
    B, H, D = 64, 4, 128
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g, requires_grad=train) for _ in range(3))
    lens = torch.randint(T // 2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lens[:, None])[:, None, None, :]
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        with torch.set_grad_enabled(train), torch.autocast("cpu", dtype=dtype,
                                                            enabled=dtype != torch.float32):
            y = fn(q, k, v, mask)
        if train:
            y.float().sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lengths", default="16,40,80,128,256")
    ap.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 autocast")
    args = ap.parse_args()
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    print(f"batch 64, 4 heads, head size 128, {'fp32' if args.fp32 else 'bf16 autocast'}; "
          f"{torch.get_num_threads()} threads; dlforge trains with the explicit path up to "
          f"T={EXPLICIT_MAX_LEN}")
    print(f"{'T':>5} {'mode':>9} {'flash ms':>9} {'math ms':>8} {'explicit ms':>12} "
          f"{'flash/explicit':>15}")
    for T in (int(x) for x in args.lengths.split(",")):
        for train in (True, False):
            f = time_it(sdpa_flash, T, train, dtype)
            m = time_it(sdpa_math, T, train, dtype)
            e = time_it(explicit, T, train, dtype)
            print(f"{T:>5} {'train' if train else 'inference':>9} {f:>9.2f} {m:>8.2f} {e:>12.2f} "
                  f"{f / e:>15.2f}")


if __name__ == "__main__":
    main()
