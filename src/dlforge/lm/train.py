"""The language-model training loop: steps, not epochs.

AdamW (the fused kernel where PyTorch has one) with weight decay on matrices only; linear
warm-up then cosine decay to ``min_lr``; gradient accumulation and clipping; bf16 autocast where
the device supports it; optional ``torch.compile``. Every ``eval_interval`` steps (and at the
first and last step) the train and val losses are estimated on ``eval_iters`` fixed batches,
the best weights by val loss are kept, and, with a checkpoint folder, the last weights, the
optimizer state (safetensors) and the loop's state (JSON: step, RNG states, history) are
written so that ``resume`` continues to exactly the loss curve of an uninterrupted run. With
``privacy`` set, each step is DP-SGD instead (``dlforge.lm.dp``: Poisson batches of disjoint
records, per-record clipping, Gaussian noise; ε accounted).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dlforge.config.lm import LMConfig
from dlforge.lm.corpus import TokenData
from dlforge.models.gpt import GPT
from dlforge.train.device import autocast
from dlforge.train.trainer import adamw

__all__ = ["LMTrainResult", "lr_at", "make_lm_optimizer", "train_lm"]

EVAL_SEED_OFFSET = 1_000_003  # the eval batches' generator: seed + this, the same every time


def make_lm_optimizer(model: GPT, cfg: LMConfig) -> torch.optim.AdamW:
    """The training loop's AdamW (:func:`dlforge.train.trainer.adamw`: decay on matrices and
    embeddings only, fused where PyTorch has the kernel) with the language model's betas."""
    return adamw([(list(model.parameters()), cfg.lr)], cfg.weight_decay,
                 betas=(cfg.beta1, cfg.beta2))


def lr_at(step: int, cfg: LMConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``min_lr`` at
    ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


@dataclass
class LMTrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_val_loss: float = math.inf
    best_step: int = 0
    steps: int = 0
    tokens_per_second: float = 0.0
    seconds: float = 0.0
    privacy: dict[str, Any] | None = None  # with DP-SGD: the run's privacy.json


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, data: TokenData, cfg: LMConfig,
                  device: torch.device, precision: str) -> dict[str, float]:
    """Mean loss over ``eval_iters`` batches of each split; the same batches every call. A
    private run (``cfg.privacy``) measures the validation split only: a loss on the training
    text, released without noise, would not be covered by its ε."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
    out = {}
    for split in ("val",) if cfg.privacy is not None else ("train", "val"):
        total = 0.0
        for _ in range(cfg.eval_iters):
            x, y = data.batch(split, cfg.batch_size, gen)
            with autocast(device, precision):
                _, loss = model(x.to(device), y.to(device))
            total += float(loss)
        out[split] = total / cfg.eval_iters
    model.train(was_training)
    return out


class _Log:
    """A rich progress bar (loss, tokens/s, ETA) on a terminal; otherwise one plain line per
    evaluation: ``step 500: train loss 2.08, val loss 2.10, 22.1k tok/s``."""

    def __init__(self, total: int, start: int, verbose: int, stream: Any = None):
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.bar = None
        if verbose and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.3f}"),
                                TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
                                console=Console(file=self.stream), transient=True)
            self.task = self.bar.add_task("train", total=total, completed=start, loss=0.0,
                                          speed="")
            self.bar.start()

    def step(self, loss: float, tok_s: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, speed=f"{_k(tok_s)} tok/s")

    def line(self, msg: str) -> None:
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.console.print(msg, highlight=False)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def train_lm(model: GPT, data: TokenData, cfg: LMConfig, device: torch.device,
             precision: str, checkpoint_dir: Path | None = None, resume: bool = False,
             verbose: int = 1, on_step: Callable[[int], None] | None = None) -> LMTrainResult:
    """Train ``model`` (already on ``device``) for ``cfg.max_steps`` optimizer steps."""
    opt = make_lm_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    private, noise = None, None
    if cfg.privacy is not None:  # DP-SGD (dlforge.lm.dp): Poisson batches of records, noise
        from dlforge.lm.dp import PrivateLM

        private = PrivateLM(cfg.privacy, data.records(), cfg.batch_size, cfg.max_steps)
        noise = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    res = LMTrainResult()
    start = 0
    if resume and checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
        start = _load_checkpoint(checkpoint_dir, model, opt, gen, res, device, noise)
        if private is not None:
            private.resume(start)
    step_fn = torch.compile(model) if cfg.compile else model
    log = _Log(cfg.max_steps, start, verbose)
    if start:
        log.line(f"resuming at step {start} of {cfg.max_steps}")
    tokens_per_step = cfg.batch_size * cfg.accumulate * cfg.block_size
    model.train()
    timed_tokens, timed_s, speed = 0, 0.0, 0.0
    t_begin = time.perf_counter()
    try:
        for step in range(start, cfg.max_steps + 1):
            due = step % cfg.eval_interval == 0 or step == cfg.max_steps
            if due and not (start and step == start):  # a resumed step was evaluated before
                _evaluate(step, step_fn, data, cfg, device, precision, res, speed, log)
                if checkpoint_dir is not None and step > 0:
                    _save_checkpoint(checkpoint_dir, step, model, opt, gen, res, noise)
                timed_tokens, timed_s = 0, 0.0
            if step == cfg.max_steps:
                break
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            if private is not None:
                x, y = data.record_batch(private.sample(gen))
                loss_value = private.backward(model, x.to(device), y.to(device),
                                              lambda: autocast(device, precision), noise)
                step_tokens = x.numel()
            else:
                loss_sum = 0.0
                for _ in range(cfg.accumulate):
                    x, y = data.batch("train", cfg.batch_size, gen)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with autocast(device, precision):
                        _, loss = step_fn(x, y)
                    (loss / cfg.accumulate).backward()
                    loss_sum += loss.detach()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                loss_value = float(loss_sum) / cfg.accumulate  # syncs: honest timing
                step_tokens = tokens_per_step
            opt.step()
            opt.zero_grad(set_to_none=True)
            timed_s += time.perf_counter() - t0
            timed_tokens += step_tokens
            speed = timed_tokens / timed_s if timed_s > 0 else 0.0
            log.step(loss_value, speed)
            if on_step is not None:
                on_step(step + 1)
    finally:
        log.close()
    res.steps = cfg.max_steps
    res.seconds = time.perf_counter() - t_begin
    if private is not None:
        res.privacy = private.report(cfg.block_size)
    return res


def _evaluate(step: int, model: torch.nn.Module, data: TokenData, cfg: LMConfig,
              device: torch.device, precision: str, res: LMTrainResult, speed: float,
              log: _Log) -> None:
    losses = estimate_loss(model, data, cfg, device, precision)
    train = losses.get("train")  # None in a private run (see estimate_loss)
    row = {"step": step, "train_loss": None if train is None else round(train, 6),
           "val_loss": round(losses["val"], 6), "lr": lr_at(max(step - 1, 0), cfg),
           "tokens_per_second": round(speed, 1)}
    res.history.append(row)
    if speed:
        res.tokens_per_second = speed
    msg = (f"step {step}: " + ("" if train is None else f"train loss {train:.2f}, ")
           + f"val loss {losses['val']:.2f}" + (f", {_k(speed)} tok/s" if speed else ""))
    if losses["val"] < res.best_val_loss:
        res.best_val_loss, res.best_step = losses["val"], step
        res.best_state = {k: v.detach().clone() for k, v in
                          getattr(model, "_orig_mod", model).state_dict().items()}
    log.line(msg)


# ------------------------------------------------------------------------- checkpoints
def _save_checkpoint(d: Path, step: int, model: GPT, opt: torch.optim.Optimizer,
                     gen: torch.Generator, res: LMTrainResult,
                     noise: torch.Generator | None = None) -> None:
    """``last.safetensors`` (weights), ``best.safetensors``, ``optimizer.safetensors`` (Adam's
    moments and the RNG states as uint8 tensors) and ``state.json`` (the rest), each written
    to a temporary name and renamed; ``state.json`` last, so it names a complete set."""
    d.mkdir(parents=True, exist_ok=True)
    _save(d / "last.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    _save(d / "best.safetensors", {k: v.contiguous() for k, v in res.best_state.items()})
    sd = opt.state_dict()
    tensors = {f"{i}.{name}": t.contiguous() for i, st in sd["state"].items()
               for name, t in st.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = gen.get_state()
    if noise is not None:  # DP-SGD's noise
        tensors["rng.noise"] = noise.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    _save(d / "optimizer.safetensors", tensors)
    state = {"step": step, "history": res.history, "best_val_loss": res.best_val_loss,
             "best_step": res.best_step, "tokens_per_second": res.tokens_per_second,
             "param_groups": sd["param_groups"]}
    tmp = d / ".state.json.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(d / "state.json")


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu() for k, v in tensors.items()}, tmp)
    tmp.replace(path)


def _load_checkpoint(d: Path, model: GPT, opt: torch.optim.Optimizer, gen: torch.Generator,
                     res: LMTrainResult, device: torch.device,
                     noise: torch.Generator | None = None) -> int:
    state = json.loads((d / "state.json").read_text(encoding="utf-8"))
    model.load_state_dict(load_file(d / "last.safetensors", device=str(device)))
    res.best_state = load_file(d / "best.safetensors", device=str(device))
    tensors = load_file(d / "optimizer.safetensors")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("rng."):
            continue
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.batches"])
    if noise is not None and "rng.noise" in tensors:
        noise.set_state(tensors["rng.noise"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    res.history = state["history"]
    res.best_val_loss, res.best_step = state["best_val_loss"], state["best_step"]
    res.tokens_per_second = state["tokens_per_second"]
    return int(state["step"])
