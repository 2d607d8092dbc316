"""Generation speed: decoding with the KV cache against recomputing the whole context for every
new token, for 256 new tokens, greedy (both must give the same tokens; checked).

The weights do not change the speed, so the model is a freshly initialised GPT. Shapes
(layers x d_model x window, heads = d_model / 32): the "baby GPT" 4x128x64 (256 tokens slide
the window, see dlforge.lm.generate), the same with a 512-token window (no sliding: the context
grows to prompt + 256), and nanoGPT's Shakespeare model 6x384 with a 512-token window.

    .venv/bin/python benchmarks/lm_generate.py                     # 256 new tokens, 3 repeats
    .venv/bin/python benchmarks/lm_generate.py --new-tokens 64 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import time

import torch

from dlforge.lm.generate import sample_tokens
from dlforge.models.gpt import GPT, GPTConfig


def tokens_per_second(model: GPT, prompt: list[int], n: int, use_cache: bool,
                      repeats: int) -> tuple[float, list[int]]:
    best, out = 0.0, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = list(sample_tokens(model, prompt, n, temperature=0, use_cache=use_cache))
        best = max(best, n / (time.perf_counter() - t0))
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="best of R")
    ap.add_argument("--shapes", default="4x128x64,4x128x512,6x384x512",
                    help="LAYERSxD_MODELxWINDOW, comma-separated")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.new_tokens} new tokens after a {args.prompt_tokens}-token prompt, greedy, "
          f"batch 1, fp32, {torch.get_num_threads()} threads")
    print(f"{'model':34} {'cache tok/s':>11} {'recompute tok/s':>15} {'ratio':>6}")
    for shape in args.shapes.split(","):
        layers, width, block = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=65, block_size=block, n_layer=layers,
                        n_head=max(1, width // 32), d_model=width)
        model = GPT(cfg).eval()
        prompt = torch.randint(0, 65, (args.prompt_tokens,)).tolist()
        list(sample_tokens(model, prompt, 8, temperature=0))  # warm-up
        cached, a = tokens_per_second(model, prompt, args.new_tokens, True, args.repeats)
        full, b = tokens_per_second(model, prompt, args.new_tokens, False, args.repeats)
        same = "same tokens" if a == b else "TOKENS DIFFER"
        name = f"{layers} layers, d_model {width}, block {block}"
        print(f"{name:34} {cached:11,.0f} {full:15,.0f} "
              f"{cached / full:6.2f}  ({same})")


if __name__ == "__main__":
    main()
