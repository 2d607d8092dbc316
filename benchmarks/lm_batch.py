"""Continuous batching: N generations at once, decoded together (dlforge.lm.batch.DecodeBatcher,
what the server runs) against one at a time and against a thread per generation (what the
server did before), in the same process; greedy, so every way must give the same tokens
(checked).

The weights do not change the speed: freshly initialised GPTs. Shapes LAYERSxD_MODELxWINDOW.

    .venv/bin/python benchmarks/lm_batch.py                       # N = 1, 4, 16, 32; 128 tokens
    .venv/bin/python benchmarks/lm_batch.py --streams 8 --new-tokens 64 --shapes 4x128x64
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from dlforge.lm.batch import DecodeBatcher
from dlforge.lm.generate import sample_tokens
from dlforge.models.gpt import GPT, GPTConfig


def one_at_a_time(model: GPT, prompts: list[list[int]], n: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [list(sample_tokens(model, p, n, temperature=0)) for p in prompts]
    return time.perf_counter() - t0, out


def threads(model: GPT, prompts: list[list[int]], n: int) -> tuple[float, list]:
    out: list = [None] * len(prompts)

    def run(i: int) -> None:
        out[i] = list(sample_tokens(model, prompts[i], n, temperature=0))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0, out


def batched(model: GPT, prompts: list[list[int]], n: int) -> tuple[float, list, float]:
    t0 = time.perf_counter()
    with DecodeBatcher(model, max_batch=len(prompts)) as b:
        streams = [b.submit(p, n, temperature=0) for p in prompts]
        out = [list(s) for s in streams]
    return time.perf_counter() - t0, out, b.rows / max(1, b.steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1,4,16,32", help="generations at once, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--shapes", default="4x128x64,6x384x256")
    ap.add_argument("--repeats", type=int, default=2, help="best of R, interleaved")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.new_tokens} new tokens per generation after {args.prompt_tokens}-token "
          f"prompts, greedy, fp32, {torch.get_num_threads()} torch threads; tokens/s over all "
          "generations, best of", args.repeats)
    print(f"{'model':26} {'N':>3} {'one by one':>10} {'threads':>9} {'batched':>9} "
          f"{'x one':>6} {'x thr':>6} {'batch':>5}")
    for shape in args.shapes.split(","):
        layers, width, block = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, block_size=block, n_layer=layers,
                              n_head=max(1, width // 32), d_model=width)).eval()
        list(sample_tokens(model, [1, 2, 3], 8, temperature=0))  # warm-up
        for n_streams in (int(v) for v in args.streams.split(",")):
            gen = torch.Generator().manual_seed(n_streams)
            prompts = [torch.randint(0, 65, (args.prompt_tokens,), generator=gen).tolist()
                       for _ in range(n_streams)]
            total = n_streams * args.new_tokens
            best = {"one": 0.0, "threads": 0.0, "batched": 0.0}
            same, mean_batch = True, 0.0
            for _ in range(args.repeats):
                s, ref = one_at_a_time(model, prompts, args.new_tokens)
                best["one"] = max(best["one"], total / s)
                s, out = threads(model, prompts, args.new_tokens)
                best["threads"] = max(best["threads"], total / s)
                same &= out == ref
                s, out, mean_batch = batched(model, prompts, args.new_tokens)
                best["batched"] = max(best["batched"], total / s)
                same &= out == ref
            name = f"{layers}x{width}, window {block}"
            print(f"{name:26} {n_streams:3d} {best['one']:10,.0f} {best['threads']:9,.0f} "
                  f"{best['batched']:9,.0f} {best['batched'] / best['one']:6.2f} "
                  f"{best['batched'] / best['threads']:6.2f} {mean_batch:5.1f}"
                  + ("" if same else "  TOKENS DIFFER"))


if __name__ == "__main__":
    main()
