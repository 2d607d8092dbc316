"""The hardware catalogue, "this machine" measured on the spot, and time and cost.

Time = model FLOPs / (devices x peak FLOP/s x MFU). MFU, model-FLOPs utilisation, is the
fraction of the peak spent on the model's own FLOPs, recomputation not counted (Chowdhery et
al. 2022, App. B); 30-50% is typical of large training runs (PaLM: 46%).
Peaks are dense (no 2:4 sparsity) tensor-core figures from the vendors' data sheets; prices
are illustrative on-demand list prices in USD per device-hour: pass your own.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from dlforge.errors import ConfigError

__all__ = ["CATALOGUE", "Device", "device", "measure_this_machine", "time_and_cost"]


@dataclass(frozen=True)
class Device:
    name: str
    bf16_tflops: float  # 16-bit tensor peak (fp16 where the device has no bf16)
    fp32_tflops: float
    memory_gb: float
    price_per_hour: float
    source: str = ""

    def peak(self, precision: str) -> float:
        """Peak FLOP/s at ``precision`` (bf16 or fp32)."""
        return 1e12 * (self.fp32_tflops if precision == "fp32" else self.bf16_tflops)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CATALOGUE: dict[str, Device] = {
    "h100": Device("h100", 989.4, 66.9, 80, 2.99, "NVIDIA H100 SXM5 data sheet"),
    "h200": Device("h200", 989.4, 66.9, 141, 3.79, "NVIDIA H200 SXM data sheet"),
    "a100-80gb": Device("a100-80gb", 312.0, 19.5, 80, 1.79, "NVIDIA A100 SXM data sheet"),
    "a100-40gb": Device("a100-40gb", 312.0, 19.5, 40, 1.29, "NVIDIA A100 data sheet"),
    "l4": Device("l4", 121.0, 30.3, 24, 0.80, "NVIDIA L4 data sheet (242 TFLOP/s is sparse)"),
    "t4": Device("t4", 65.0, 8.1, 16, 0.35, "NVIDIA T4 data sheet (fp16; no bf16)"),
}
THIS = "this-machine"
_MEASURED: dict[str, Device] = {}


def device(name: str, price: float | None = None) -> Device:
    """A catalogue entry, or ``this-machine`` (measured once per process)."""
    key = name.strip().lower()
    if key in ("this", "local", "this_machine"):
        key = THIS
    if key == THIS:
        dev = measure_this_machine()
    elif key in CATALOGUE:
        dev = CATALOGUE[key]
    else:
        raise ConfigError(f"unknown hardware {name!r}; known: {', '.join([*CATALOGUE, THIS])}")
    if price is not None:
        if price < 0:
            raise ConfigError(f"price must be >= 0 (USD per device-hour), got {price}")
        dev = replace(dev, price_per_hour=price)
    return dev


def _matmul_flops(dtype: Any, dev: Any, n: int, budget_s: float) -> float:
    import torch

    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    a @ b  # warm-up (kernel selection)
    sync()
    reps, best = 1, 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * n**3 * reps / max(dt, 1e-9))
        if dt < 0.02:
            reps *= 2
    return best


def measure_this_machine(budget_s: float = 0.25) -> Device:
    """This machine's matrix-multiply throughput in fp32 and bf16 (a few square products on the
    first CUDA device, else the CPU), its memory, and price 0 (give --price)."""
    if THIS in _MEASURED:
        return _MEASURED[THIS]
    import torch

    if torch.cuda.is_available():
        dev, n = torch.device("cuda"), 4096
        props = torch.cuda.get_device_properties(dev)
        mem, label = props.total_memory / 1e9, props.name
    else:
        dev, n = torch.device("cpu"), 512
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
        label = f"CPU, {torch.get_num_threads()} threads"
    fp32 = _matmul_flops(torch.float32, dev, n, budget_s)
    bf16 = _matmul_flops(torch.bfloat16, dev, n, budget_s)
    _MEASURED[THIS] = Device(THIS, bf16 / 1e12, fp32 / 1e12, round(mem, 1), 0.0,
                             f"measured now: {n}x{n} matmuls on {label}")
    return _MEASURED[THIS]


def time_and_cost(flops: float, dev: Device, devices: int = 1, mfu: float = 0.4,
                  precision: str = "bf16") -> dict[str, Any]:
    """Seconds and cost to spend ``flops`` model FLOPs on ``devices`` x ``dev`` at ``mfu``."""
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    if devices < 1:
        raise ConfigError(f"devices must be a whole number >= 1, got {devices}")
    rate = devices * dev.peak(precision) * mfu
    seconds = flops / rate
    hours = seconds / 3600
    return {"hardware": dev.name, "devices": devices, "mfu": mfu, "precision": precision,
            "peak_flops_per_device": dev.peak(precision), "effective_flops": rate,
            "seconds": seconds, "device_hours": hours * devices,
            "cost_usd": hours * devices * dev.price_per_hour,
            "price_per_device_hour": dev.price_per_hour, "memory_gb": dev.memory_gb,
            "source": dev.source}
