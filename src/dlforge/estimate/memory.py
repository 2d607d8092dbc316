"""Memory per device: training (weights, gradients, optimizer states, activations; sharded
over N devices by ZeRO stages 1-3 / FSDP) and inference (weights by dtype, KV cache).

Bytes per parameter follow Rajbhandari et al. 2020 (ZeRO, Sec. 3.1): mixed-precision AdamW
keeps 16-bit weights and gradients (2 + 2 bytes) and K = 12 bytes of fp32 optimizer state
(master weights, first and second moments). ZeRO stage 1 shards the optimizer states over
the N data-parallel devices, stage 2 the gradients too, stage 3 the weights too (= FSDP's
FULL_SHARD; SHARD_GRAD_OP is stage 2).
"""

from __future__ import annotations

from typing import Any

from dlforge.errors import ConfigError
from dlforge.estimate.counts import Counts

__all__ = ["DTYPE_BYTES", "OPTIMIZERS", "inference_memory", "training_memory"]

# optimizer -> bytes per parameter for (weights, gradients, optimizer states)
OPTIMIZERS: dict[str, tuple[float, float, float]] = {
    "adamw": (4, 4, 8),  # fp32 weights and gradients; m and v in fp32 (also: fp32 + autocast)
    "adamw-mixed": (2, 2, 12),  # 16-bit weights/grads; fp32 master copy, m and v
    "sgd": (4, 4, 4),  # fp32, with a momentum buffer
}
DTYPE_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "int4": 0.5}
ZERO_STAGES = (0, 1, 2, 3)


def check_choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def training_memory(c: Counts, batch_size: int, optimizer: str = "adamw-mixed",
                    zero: int = 0, devices: int = 1, checkpointing: bool = False
                    ) -> dict[str, Any]:
    """Bytes per device to train ``c`` on a micro-batch of ``batch_size`` samples per device."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("zero", zero, ZERO_STAGES)
    w, g, o = OPTIMIZERS[optimizer]
    n = c.params
    weights = n * w / (devices if zero >= 3 else 1)
    grads = n * g / (devices if zero >= 2 else 1)
    states = n * o / (devices if zero >= 1 else 1)
    per_sample = c.activation_bytes
    note = None
    if checkpointing:
        if c.activation_bytes_ckpt is None:
            note = "activation checkpointing: not modelled for this family; shown without it"
        else:
            per_sample = c.activation_bytes_ckpt
    acts = per_sample * batch_size
    out = {"optimizer": optimizer, "zero_stage": zero, "devices": devices,
           "batch_size_per_device": batch_size, "checkpointing": checkpointing,
           "bytes_per_param": {"weights": w, "gradients": g, "optimizer_states": o},
           "weights": weights, "gradients": grads, "optimizer_states": states,
           "activations": acts, "total": weights + grads + states + acts}
    if c.activation_bytes_ckpt is not None:
        out["activations_without_checkpointing"] = c.activation_bytes * batch_size
        out["activations_with_checkpointing"] = c.activation_bytes_ckpt * batch_size
    if note:
        out["note"] = note
    return out


def inference_memory(c: Counts, batch_size: int = 1, context: int | None = None,
                     kv_dtype: str = "bf16") -> dict[str, Any]:
    """Weights in each dtype, plus (decoders) the KV cache for ``batch_size`` sequences of
    ``context`` tokens: 2 (K and V) x layers x kv_heads x head_dim entries per token."""
    check_choice("kv_dtype", kv_dtype, DTYPE_BYTES)
    out: dict[str, Any] = {"weights": {k: c.params * b for k, b in DTYPE_BYTES.items()}}
    if c.kv_elements_per_token is not None:
        ctx = context if context is not None else c.seq_len
        kv = c.kv_elements_per_token * DTYPE_BYTES[kv_dtype] * ctx * batch_size
        out.update(kv_cache=kv, kv_cache_per_token=c.kv_elements_per_token
                   * DTYPE_BYTES[kv_dtype], kv_dtype=kv_dtype, batch_size=batch_size,
                   context=ctx, total_bf16=c.params * 2 + kv)
    return out
