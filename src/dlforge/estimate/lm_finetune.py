"""``dlforge.estimate.estimate_finetune``: the fine-tune estimate as one JSON-ready report
(counts from :mod:`dlforge.estimate.finetune`), with time per epoch on this machine.

Time = the step's FLOPs (recomputation included: it is work the machine does) / a FLOP rate:
by default this machine's matrix-multiply peak (measured on the spot, ``hardware.py``) x ``mfu``;
with ``steps`` > 0, the rate a few real training steps of the model achieve here, on batches of
the plan's shapes (random tokens: the time of a step does not depend on its values).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from dlforge.config.lm import FinetuneConfig
from dlforge.errors import ConfigError
from dlforge.estimate.finetune import (
    Batch,
    DataPlan,
    _flops,
    finetune_costs,
    lora_targets,
    read_shape,
)
from dlforge.estimate.hardware import device as hardware_device
from dlforge.estimate.hardware import time_and_cost

__all__ = ["estimate_finetune", "measure_steps"]


def _executed(f: dict[str, float]) -> float:
    return f["forward"] + f["backward"] + f["recompute"]


def estimate_finetune(model: str | Path, cfg: FinetuneConfig | None = None,
                      plan: DataPlan | None = None, *, hardware: str = "this-machine",
                      mfu: float = 0.4, price: float | None = None, steps: int = 0
                      ) -> dict[str, Any]:
    """What fine-tuning the causal LM in folder ``model`` with ``cfg`` (a
    :class:`~dlforge.config.lm.FinetuneConfig`, as ``dlforge lm finetune`` takes) costs:
    parameters, memory (and the same for full / LoRA x gradient checkpointing), FLOPs and time
    per epoch. ``plan``: one epoch's batches (``dlforge estimate --lm-finetune FOLDER --data
    FILE`` builds it with the fine-tuning loop's own tokenizing and batching); without one, a
    step of ``batch_size`` full rows of ``max_length`` tokens. ``steps`` > 0 times that many
    real training steps here instead of assuming ``mfu`` of the matmul peak."""
    from dlforge.train.device import resolve_device, resolve_precision

    cfg = cfg or FinetuneConfig()
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be a whole number >= 0, got {steps!r}")
    shape = read_shape(Path(model))
    length = cfg.max_length or min(512, shape.context or 512)
    if shape.context and length > shape.context:
        raise ConfigError(f"--max-length {length} is above the model's context of "
                          f"{shape.context} tokens")
    if plan is None:
        plan = DataPlan.uniform(cfg.batch_size, length)
    dev = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, dev)
    costs = finetune_costs(shape, cfg, plan, precision, dev.type)
    flops_epoch = costs["flops"]["per_epoch"]
    if steps:
        measured = measure_steps(Path(model), cfg, plan, steps, precision)
        rate, how = measured["achieved_flops_per_s"], (
            f"{measured['steps_timed']} real steps timed here")
        timing = {"hardware": "this-machine (measured steps)", "devices": 1,
                  "precision": precision, "effective_flops": rate, "mfu": None,
                  "seconds": flops_epoch / rate, "measured": measured}
    else:
        d = hardware_device(hardware, price)
        timing = time_and_cost(flops_epoch, d, 1, mfu, precision)
        rate = timing["effective_flops"]
        how = (f"{d.name}'s {precision} matmul peak {d.peak(precision):.3g} FLOP/s x "
               f"{mfu:.0%} MFU")
    per_epoch_steps = costs["data"]["optimizer_steps"]
    total_steps = min(cfg.max_steps or per_epoch_steps * cfg.epochs,
                      per_epoch_steps * cfg.epochs)
    epochs_run = total_steps / per_epoch_steps
    val_s = costs["flops"]["validation"] / rate
    report: dict[str, Any] = {
        "model": {**shape.to_dict(), "kind": "fine-tune", "folder": str(model)},
        "method": "lora" if cfg.lora else "full",
        "settings": {"batch_size": cfg.batch_size, "accumulate": cfg.accumulate,
                     "max_length": length, "packing": cfg.packing,
                     "gradient_checkpointing": cfg.gradient_checkpointing,
                     "precision": precision, "device": dev.type, "epochs": cfg.epochs,
                     "max_steps": cfg.max_steps},
        **costs,
        "time": {**timing, "how": how, "flops_per_s": rate,
                 "seconds_per_epoch": flops_epoch / rate,
                 "validation_seconds": val_s,
                 "optimizer_steps": total_steps,
                 "total_seconds": flops_epoch / rate * epochs_run + val_s},
    }
    from dlforge.estimate.report import finetune_faq

    report["faq"] = finetune_faq(report)
    return report


# ------------------------------------------------------------------------------ measuring
def _synthetic(b: Batch, vocab: int, gen: Any) -> dict[str, Any]:
    """Random token ids in the batch's shape: its padding as an attention mask, its
    supervised positions as labels (the loop's -100 elsewhere)."""
    import torch

    ids = torch.randint(0, vocab, (b.rows, b.length), generator=gen)
    mask = torch.ones(b.rows, b.length, dtype=torch.long)
    short = b.rows * b.length - b.tokens
    for r in range(b.rows - 1, -1, -1):  # the padding at the ends of the last rows
        cut = min(short, b.length - 1)
        if cut:
            mask[r, b.length - cut:] = 0
        short -= cut
    if b.masked and bool(mask.all()):
        mask[-1, -1] = 0  # a packed batch: a mask reaches the kernel all the same
    labels = torch.full((b.rows, b.length), -100, dtype=torch.long)
    where = mask.flatten().nonzero().flatten()[: b.supervised]
    labels.view(-1)[where] = ids.view(-1)[where]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def measure_steps(model: Path, cfg: FinetuneConfig, plan: DataPlan, steps: int,
                  precision: str, warmup: int = 1) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup``) of the model in folder ``model`` as
    dlforge's fine-tuning loop runs them (the same model loading, LoRA, checkpointing,
    autocast, supervised-position loss and AdamW), on batches of the plan's shapes spread over
    the epoch; returns the achieved FLOP/s and the peak memory growth."""
    import torch
    import torch.nn.functional as F

    from dlforge._extras import require
    from dlforge.estimate.measure import _rss_now, _rss_peak, _rss_reset, _warm_runtime
    from dlforge.train.device import autocast, resolve_device
    from dlforge.train.trainer import adamw

    transformers = require("transformers", "llm", "dlforge estimate --lm-finetune --steps")
    dev = resolve_device(cfg.device)
    shape = read_shape(model)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _warm_runtime()
        base = _rss_now() if _rss_reset() else _rss_peak()
    net = transformers.AutoModelForCausalLM.from_pretrained(
        str(model), local_files_only=True, dtype=torch.float32, attn_implementation="sdpa",
        use_safetensors=True).to(dev)
    adapters: dict[str, int] = {}
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets = lora_targets(shape, cfg.target_modules)
        adapters = {t: cfg.lora_r for t in targets}
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=sorted(set(targets)),
                          task_type="CAUSAL_LM", bias="none")
        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            net = get_peft_model(net, lora)
    if cfg.gradient_checkpointing:
        net.activation_checkpointing_enable({"use_reentrant": False})
        if cfg.lora:
            net.enable_input_require_grads()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = adamw([(params, cfg.learning_rate())], cfg.weight_decay)
    inner = net.get_base_model() if hasattr(net, "get_base_model") else net
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    net.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(plan.train)
    chosen = [plan.train[round(i * (n - 1) / max(1, steps - 1))] for i in range(steps)]
    times, flops = [], []
    for i, b in enumerate([plan.train[0]] * warmup + chosen):
        batch = {k: v.to(dev) for k, v in _synthetic(b, shape.vocab, gen).items()}
        t0 = time.perf_counter()
        # dlforge.lm.finetune's step: the loss at supervised positions only
        with autocast(dev, precision):
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             use_cache=False).last_hidden_state
            where = batch["labels"] != -100
            logits = head(hidden[where]).float()
            loss = F.cross_entropy(logits, batch["labels"][where], reduction="sum")
        del logits, hidden
        (loss / max(1, int(where.sum()))).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            flops.append(_executed(_flops(shape, not cfg.lora, adapters, b,
                                          cfg.gradient_checkpointing)))
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_peak()) - base
    return {"steps_timed": len(times), "warmup_steps": warmup,
            "step_seconds": sum(times) / len(times),
            "achieved_flops_per_s": sum(flops) / sum(times),
            "peak_memory_bytes": int(peak),
            "memory_how": "torch.cuda.max_memory_allocated" if cuda
            else "peak resident set growth (VmHWM), model loading included",
            "tokens_per_second": sum(b.tokens for b in chosen) / sum(times),
            "note": "random tokens in the plan's batch shapes; " + (
                "steps spread over the epoch" if steps > 1 else "the first batch")}
