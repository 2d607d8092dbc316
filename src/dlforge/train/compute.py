"""What training cost: measured time, parameters and forward FLOPs, for the model card."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["compute_report", "forward_flops"]


@torch.no_grad()
def forward_flops(model: nn.Module, loader: DataLoader, device: torch.device) -> int | None:
    """FLOPs of one forward pass per example, counted by ``torch.utils.flop_counter`` on the
    loader's first batch (matrix products, convolutions, attention; element-wise operations
    and recurrent cells are not counted). None if the loader is empty."""
    from torch.utils.flop_counter import FlopCounterMode

    from dlforge.train.trainer import to_device

    batch = next(iter(loader), None)
    if batch is None:
        return None
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(to_device(batch["inputs"], device))
    model.train(was_training)
    return int(counter.get_total_flops() // max(len(batch["labels"]), 1))


def compute_report(model: nn.Module, loader: DataLoader, history: list[dict[str, Any]],
                   device: torch.device, precision: str) -> dict[str, Any]:
    """Training time (the epochs' measured seconds, evaluation excluded), throughput,
    parameters, forward FLOPs per example, device and precision."""
    seconds = float(sum(r.get("seconds", 0.0) for r in history))
    samples = sum(r.get("samples_per_s", 0.0) * r.get("seconds", 0.0) for r in history)
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    return {
        "train_seconds": round(seconds, 3),
        "epochs": len(history),
        "samples_per_s": round(samples / seconds, 1) if seconds > 0 else None,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters()
                                        if p.requires_grad)),
        "forward_flops_per_example": forward_flops(model, loader, device),
        "flops_note": ("torch.utils.flop_counter on one training batch; recurrent cells not "
                       "counted" if recurrent else
                       "torch.utils.flop_counter on one training batch"),
        "device": str(device),
        "precision": precision,
    }
