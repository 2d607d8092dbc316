"""Serving a pretrained causal LM: N concurrent streaming clients of /v1/chat/completions on
`dlforge serve` (its generations decoded together by HFDecodeBatcher) against transformers'
`model.generate` answering the same requests one at a time in one process.

The server runs in a process of its own (`dlforge serve`), the clients in this one (asyncio +
httpx, one stream each, all started at once). Per client: time to first token (request sent
-> first content chunk) and the gaps between chunks (inter-token latency); over all: tokens/s
(completion tokens from `usage` / wall time) and errors. Greedy, so both sides decode the same
prompts to the same lengths (an end-of-text token can end either early; the tokens are
counted, not assumed).

Without --model the model is a random LLaMA of --layers x --width with a tiny byte-level
tokenizer (dlforge.testing.tiny_causal_lm, resized): the weights do not change the speed.
With SmolLM2 imported (`dlforge lm import ... --out models/smollm2`), pass --model.

    .venv/bin/python benchmarks/lm_serve.py                          # clients 1, 8, 32
    .venv/bin/python benchmarks/lm_serve.py --model models/smollm2 --max-tokens 64
    .venv/bin/python benchmarks/lm_serve.py --clients 1,8 --max-tokens 16 --layers 2 --width 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

QUESTIONS = ["What is the capital of France?", "Name three colours.", "How do magnets work?",
             "Write a haiku about the sea.", "What is 12 times 7?", "Why is the sky blue?",
             "Give me a synonym for happy.", "What does a CPU do?"]


def random_llama(folder: Path, layers: int, width: int) -> Path:
    """tiny_causal_lm's tokenizer and chat template, with a LLaMA of the given size."""
    import transformers

    from dlforge.testing import tiny_causal_lm

    tiny_causal_lm(folder, "llama")
    config = transformers.AutoConfig.from_pretrained(str(folder))
    config.update({"hidden_size": width, "intermediate_size": 4 * width,
                   "num_hidden_layers": layers, "num_attention_heads": max(1, width // 64),
                   "num_key_value_heads": max(1, width // 128),
                   "max_position_embeddings": 2048})
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def baseline(folder: Path, messages: list[list[dict]], max_tokens: int) -> tuple[float, int]:
    """transformers' generate, one request after another: (seconds, tokens generated)."""
    from dlforge.estimators.pretrained_lm import PretrainedLM

    lm = PretrainedLM.load(folder)
    pad = lm.tokenizer.pad_token_id
    prompts = [torch.tensor([lm.chat_ids(m)]) for m in messages]
    with torch.inference_mode():
        lm.model.generate(prompts[0], max_new_tokens=4, do_sample=False, pad_token_id=pad)
        t0 = time.perf_counter()
        tokens = 0
        for ids in prompts:
            out = lm.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=pad)
            tokens += out.shape[1] - ids.shape[1]
    return time.perf_counter() - t0, tokens


async def one_client(c: httpx.AsyncClient, model: str, messages: list[dict], max_tokens: int
                     ) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    stamps, tokens = [], 0
    try:
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": f"{r.status_code} {(await r.aread())[:200]!r}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for ch in chunk.get("choices", []):
                    if ch["delta"].get("content"):
                        stamps.append(time.perf_counter())
    except httpx.HTTPError as err:
        return {"error": repr(err)}
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"ttft": stamps[0] - t0 if stamps else None, "gaps": gaps, "tokens": tokens}


async def clients(url: str, model: str, n: int, max_tokens: int) -> tuple[float, list[dict]]:
    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        msgs = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(n)]
        t0 = time.perf_counter()
        out = await asyncio.gather(*(one_client(c, model, m, max_tokens) for m in msgs))
        return time.perf_counter() - t0, out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a model folder (default: a random LLaMA)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the server and of generate (default: torch's); "
                         "on a busy machine 1 is the fair and fast choice for small models")
    args = ap.parse_args()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="lm-serve-")
    folder = args.model or random_llama(Path(tmp.name) / "model", args.layers, args.width)
    counts = [int(v) for v in args.clients.split(",")]
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "dlforge.cli", "serve", str(folder), "--name", "m", "--port",
         str(port), "--max-generations", str(max(counts)), "--timeout", "600"], env=env)
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        asyncio.run(clients(url, "m", 1, 4))  # warm-up
        print(f"model {folder if args.model else f'random LLaMA {args.layers}x{args.width}'}; "
              f"{args.max_tokens} new tokens per request, greedy; {torch.get_num_threads()} "
              "torch threads")
        print(f"{'clients':>7} {'generate tok/s':>14} {'served tok/s':>12} {'x':>6} "
              f"{'TTFT p50':>9} {'p99':>7} {'ITL p50':>8} {'p99':>7} {'errors':>6}")
        for n in counts:
            msgs = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
                    for i in range(n)]
            base_s, base_tok = baseline(folder, msgs, args.max_tokens)
            wall, out = asyncio.run(clients(url, "m", n, args.max_tokens))
            ok = [o for o in out if "error" not in o]
            errors = [o["error"] for o in out if "error" in o]
            served = sum(o["tokens"] for o in ok) / wall
            base = base_tok / base_s
            ttft = [o["ttft"] for o in ok if o["ttft"] is not None]
            gaps = [g for o in ok for g in o["gaps"]]
            print(f"{n:7d} {base:14,.0f} {served:12,.0f} {served / base:6.2f} "
                  f"{pct(ttft, .5) * 1e3:7.0f}ms {pct(ttft, .99) * 1e3:5.0f}ms "
                  f"{pct(gaps, .5) * 1e3:6.1f}ms {pct(gaps, .99) * 1e3:5.1f}ms {len(errors):6d}")
            for e in errors[:3]:
                print("   ", e)
            if ttft and statistics.mean(o["tokens"] for o in ok) < args.max_tokens / 2:
                print("    (answers ended early at an end-of-text token)")
    finally:
        server.terminate()
        server.wait(30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
