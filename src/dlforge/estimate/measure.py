"""``dlforge estimate --measure RUN_CONFIG``: time a few real training steps of a run on this
machine, derive the achieved FLOP/s, and predict the whole run's time.

The run is prepared exactly as ``dlforge train`` prepares it (clean, split, fit the inputs on
the training rows, bucketed loaders, the same model, optimizer and precision); then a few
warm-up steps, ``steps`` timed steps (each its own FLOPs, from the batch's padded length) and
a few validation batches. Prediction: epochs x (training batches x mean step time +
validation batches x mean validation-batch time); early stopping can only shorten it.
Memory: the peak resident set growth (CPU; after a throwaway step warms PyTorch's runtime and the
peak is reset, where Linux allows) or
``torch.cuda.max_memory_allocated`` over the steps, next to the prediction.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.config import load_config, resolve_data_path
from dlforge.data.clean import clean_frame
from dlforge.data.frames import encode_labels, read_data, take, take_columns
from dlforge.data.inputs import build_features
from dlforge.data.loader import FeatureDataset, make_loader
from dlforge.data.split import stratified_split
from dlforge.errors import ConfigError
from dlforge.estimate.memory import training_memory
from dlforge.estimate.ours import count_ours
from dlforge.models.registry import build_model
from dlforge.train.recipe import apply_recipe
from dlforge.train.trainer import Trainer, make_optimizer, make_scheduler, predict_logits

__all__ = ["measure_run"]


def _rss_reset() -> bool:
    try:  # Linux: writing 5 resets the process's peak resident set (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_now() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _rss_peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_runtime() -> None:
    """One step of a throwaway model first: PyTorch's lazily created thread pools, kernel
    caches and autograd engine (~90 MB of resident memory on the CPU) are then not charged
    to the model."""
    m = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8),
                            torch.nn.LayerNorm(8))
    opt = torch.optim.AdamW(m.parameters(), fused=True)
    x = m(torch.randint(0, 10, (2, 3)))
    (x @ x.transpose(1, 2)).softmax(-1).sum().backward()
    opt.step()


def _prepare(path: Path) -> dict[str, Any]:
    """Everything ``DeepModel._fit_frame`` builds before its training loop."""

    if not path.is_file():
        raise ConfigError(f"{path}: run config not found (--measure takes a run config YAML)")
    cfg = load_config(path)
    resolve_data_path(cfg, path)
    if cfg.forecast is not None or cfg.model.name in ("auto", "pretrained"):
        raise ConfigError(f"{path}: --measure supports runs with inputs and a model family "
                          "(transformer, cnn, rnn, mlp); not forecasting, auto or pretrained")
    source = str(cfg.data.path)
    torch.manual_seed(cfg.train.seed)
    df = read_data(cfg)
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, _ = clean_frame(df, texts, cfg.output.name, cfg.data.clean, source=source,
                        key_cols=[i.name for i in cfg.inputs])
    target, y, strata = encode_labels(df, cfg, source)
    idx = np.arange(len(df))
    if cfg.data.test_split > 0:
        idx, _ = stratified_split(strata, cfg.data.test_split, cfg.data.seed)
    val_idx = np.array([], dtype=np.int64)
    if cfg.data.validation_split > 0:
        tr, va = stratified_split(strata[idx], cfg.data.validation_split, cfg.data.seed)
        idx, val_idx = idx[tr], idx[va]
    cfg = apply_recipe(cfg, len(idx), lambda _: None)  # unset settings, as training picks them
    features = build_features(cfg)
    encoded = {}
    for name, feat in features.items():
        loaded = feat.load(df[name].tolist(), source)
        feat.fit(take(loaded, idx), source)
        encoded[name] = feat.encode(loaded)
    bs, seed = cfg.train.batch_size, cfg.train.seed
    augmenters = {n: a for n, f in features.items() if (a := f.make_augmenter(seed)) is not None}
    train = make_loader(FeatureDataset(features, take_columns(encoded, idx), y[idx], augmenters),
                        bs, True, seed, cfg.train.bucket_by_length)
    val = (make_loader(FeatureDataset(features, take_columns(encoded, val_idx)), max(bs, 256),
                       False, seed, cfg.train.bucket_by_length) if len(val_idx) else None)
    return {"cfg": cfg, "target": target, "features": features, "train": train, "val": val}


def _batch_tokens(batch: dict[str, Any]) -> dict[str, int]:
    return {n: int(x["attention_mask"].shape[1]) for n, x in batch["inputs"].items()
            if isinstance(x, dict)}


def measure_run(path: str | Path, steps: int = 10, warmup: int = 2) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup``) of the run config at ``path``."""

    if steps < 1 or warmup < 0:
        raise ConfigError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    path = Path(path)
    p = _prepare(path)
    cfg, features, train, val = p["cfg"], p["features"], p["train"], p["val"]
    specs = {n: f.spec() for n, f in features.items()}
    kinds = {i.name: i.type for i in cfg.inputs}
    n_out = p["target"].n_outputs
    cuda = cfg.train.device.startswith("cuda") or (cfg.train.device == "auto"
                                                   and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _warm_runtime()
        reset = _rss_reset()
        base = _rss_now() if reset else _rss_peak()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    net = build_model(cfg, specs, n_out)
    trainer = Trainer(net, p["target"].kind, cfg.train, lambda *a: {}, "loss", verbose=0)
    trainer.optimizer = make_optimizer(trainer.model, cfg.train)
    trainer.scheduler = make_scheduler(trainer.optimizer, cfg.train, 10**9)
    trainer.model.train()
    acts_bytes = 2 if trainer.precision == "bf16" else 4
    times, flops, max_tokens, done, epoch = [], [], {}, 0, 0
    while done < warmup + steps:
        epoch += 1
        if hasattr(train.batch_sampler, "set_epoch"):
            train.batch_sampler.set_epoch(epoch)
        for batch in train:
            t0 = time.perf_counter()
            trainer.train_step(batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            done += 1
            if done > warmup:
                tokens = _batch_tokens(batch)
                for k, v in tokens.items():
                    max_tokens[k] = max(max_tokens.get(k, 0), v)
                c = count_ours(cfg, specs, kinds, n_out, seq_len=tokens, act_bytes=acts_bytes)
                times.append(dt)
                flops.append(c.train_flops * len(batch["labels"]))
            if done >= warmup + steps:
                break
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_peak()) - base
    step_s = float(np.mean(times))
    val_s, val_batches = 0.0, 0
    if val is not None:
        val_batches = len(val.batch_sampler)

        t0 = time.perf_counter()
        predict_logits(trainer.model, val, trainer.device, trainer.precision)
        val_s = (time.perf_counter() - t0) / max(val_batches, 1)
    steps_per_epoch = len(train)
    updates = math.ceil(steps_per_epoch / cfg.train.accumulate)
    train_s = cfg.train.epochs * steps_per_epoch * step_s
    eval_s = cfg.train.epochs * val_batches * val_s
    counts = count_ours(cfg, specs, kinds, n_out, seq_len=max_tokens or None,
                        act_bytes=acts_bytes, name=path.stem)
    mem = training_memory(counts, cfg.train.batch_size, optimizer="adamw")
    achieved = sum(flops) / sum(times)
    return {
        "config": str(path), "device": str(trainer.device), "precision": trainer.precision,
        "steps_timed": len(times), "warmup_steps": warmup,
        "step_seconds": step_s, "step_seconds_min": float(np.min(times)),
        "achieved_flops_per_s": achieved,
        "steps_per_epoch": steps_per_epoch, "optimizer_steps_per_epoch": updates,
        "epochs": cfg.train.epochs, "validation_batch_seconds": val_s,
        "predicted_train_seconds": train_s, "predicted_eval_seconds": eval_s,
        "predicted_total_seconds": train_s + eval_s,
        "memory": {"predicted_bytes": mem["total"], "measured_peak_bytes": int(peak),
                   "ratio_measured_to_predicted": peak / mem["total"] if mem["total"] else None,
                   "how": "torch.cuda.max_memory_allocated" if cuda
                   else "peak resident set growth (VmHWM)"},
        "note": "early stopping (train.patience) can end the run sooner",
    }
