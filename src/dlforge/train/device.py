"""Device and precision choice: the same config runs on a laptop CPU, CUDA or Apple MPS."""

from __future__ import annotations

import contextlib

import torch

from dlforge.errors import ConfigError

__all__ = ["autocast", "bf16_supported", "resolve_device", "resolve_precision"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}; use auto, cpu, cuda, cuda:N "
                          "or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but no CUDA device is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but MPS is not available")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matmuls run natively: CUDA with bf16 support, CPUs with AVX-512 BF16 or
    AMX (oneDNN's check). Elsewhere bf16 would be emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name == "bf16" and device.type == "mps":
        raise ConfigError("train.precision: bf16 autocast is not supported on mps; use fp32")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
