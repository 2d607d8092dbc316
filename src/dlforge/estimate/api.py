"""``dlforge.estimate(...)``: parameters, FLOPs, memory, time, cost and data for a model, as one
JSON-ready report (``dlforge estimate`` prints it as tables, or as JSON with ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlforge.errors import ConfigError
from dlforge.estimate.arch import Arch, arch_from
from dlforge.estimate.counts import Counts, count_arch
from dlforge.estimate.hardware import CATALOGUE, device, time_and_cost
from dlforge.estimate.memory import inference_memory, training_memory
from dlforge.estimate.presets import PRESETS, preset
from dlforge.estimate.scaling import data_report, optimal_for_compute

__all__ = ["estimate"]

ARCH_FLAGS = ("layers", "d_model", "heads", "kv_heads", "ffn", "ffn_kind", "vocab", "context")


def _positive(name: str, value: Any, allow_float: bool = False) -> None:
    ok = isinstance(value, int | float) if allow_float else isinstance(value, int)
    if value is not None and (isinstance(value, bool) or not ok or value <= 0):
        kind = "a number" if allow_float else "a whole number"
        raise ConfigError(f"{name} must be {kind} > 0, got {value!r}")


def _resolve(source: Any, free: dict[str, Any], untied: bool | None) -> tuple[Any, str]:
    """(Arch or RunInfo, what it is) from a preset name, a path, an object, or free sizes."""
    if isinstance(source, str | Path) and not (isinstance(source, str) and
                                               source.strip().lower().replace("_", "-")
                                               in PRESETS):
        path = Path(source)
        from dlforge.estimate.runs import from_config, from_run_dir, is_run_dir

        if is_run_dir(path):
            return from_run_dir(path), "run directory"
        if path.is_dir():
            raise ConfigError(f"{path}: not a dlforge run directory (no dlforge.json)")
        if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in str(source):
            return from_config(path), "run config"
        raise ConfigError(f"unknown preset {str(source)!r} (and no such file); known presets: "
                          f"{', '.join(PRESETS)}")
    changes = {k: v for k, v in free.items() if v is not None}
    if untied is not None:
        changes["tied"] = not untied
    if source is None:
        if not changes:
            raise ConfigError("nothing to estimate: give a preset (" + ", ".join(PRESETS)
                              + "), a run config or run directory, or the sizes --layers "
                              "--d-model --heads --vocab --context")
        missing = [k for k in ("layers", "d_model", "heads", "vocab", "context")
                   if k not in changes]
        if missing:
            raise ConfigError("free architecture: missing " + ", ".join(
                "--" + m.replace("_", "-") for m in missing))
        return Arch(**changes), "architecture"
    arch = preset(source) if isinstance(source, str) else arch_from(source)
    if changes:  # a preset with some sizes changed
        arch = arch.with_(**changes, name=f"{arch.name} (modified)")
    return arch, "preset" if isinstance(source, str) else "architecture"


def _language_model_run(source: Any) -> tuple[Arch, dict[str, Any]] | None:
    if not isinstance(source, str | Path):
        return None
    from dlforge.estimate.runs import lm_run

    return lm_run(Path(source))


def estimate(source: Any = None, *, layers: int | None = None, d_model: int | None = None,
             heads: int | None = None, kv_heads: int | None = None, ffn: int | None = None,
             ffn_kind: str | None = None, vocab: int | None = None, context: int | None = None,
             untied: bool | None = None, seq_len: int | None = None,
             batch_size: int | None = None, tokens: float | None = None,
             epochs: int | None = None, hardware: str = "h100", devices: int = 1,
             mfu: float = 0.4, price: float | None = None, precision: str | None = None,
             optimizer: str | None = None, zero: int = 0, checkpointing: bool = False,
             flash: bool = True, inference_batch: int = 1, measure: str | Path | None = None,
             measure_steps: int = 10, budget: float | None = None) -> dict[str, Any]:
    """Estimate parameters, FLOPs, memory, time, cost and data for ``source``: a preset name
    (``"gpt2-small"``, ``"llama2-70b"``, ...), a run config YAML or run directory, an
    :class:`~dlforge.estimate.Arch` (or mapping, or registered config object), or free sizes
    (``layers=12, d_model=768, heads=12, vocab=50257, context=1024``). ``budget``: a compute
    budget in FLOPs, answered with the compute-optimal model size and tokens. Returns the
    report."""
    for name, value in (("layers", layers), ("d_model", d_model), ("heads", heads),
                        ("kv_heads", kv_heads), ("ffn", ffn), ("vocab", vocab),
                        ("context", context), ("seq_len", seq_len), ("batch_size", batch_size),
                        ("epochs", epochs), ("devices", devices),
                        ("inference_batch", inference_batch), ("measure_steps", measure_steps)):
        _positive(name, value)
    _positive("tokens", tokens, allow_float=True)
    _positive("budget", budget, allow_float=True)
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    if precision not in (None, "bf16", "fp32"):
        raise ConfigError(f"precision must be bf16 or fp32, got {precision!r}")
    if measure is not None and source is None:
        source = measure
    free = dict(layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn,
                ffn_kind=ffn_kind, vocab=vocab, context=context)
    lm = _language_model_run(source)
    if lm is not None:  # our GPT's run: its architecture, and the tokens it trained on
        source, seen = lm
        tokens = tokens if tokens is not None else seen["tokens"]
        batch_size = batch_size or seen["batch_size"]
        seq_len = seq_len or seen["seq_len"]
        precision = precision or seen["precision"]
    what, kind = _resolve(source, free, untied)
    if lm is not None:
        kind = "language-model run"
    dev = device(hardware, price)
    if isinstance(what, Arch):
        if seq_len is not None and what.positions == "learned" and seq_len > what.context:
            raise ConfigError(f"seq_len ({seq_len}) is longer than the context ({what.context}) "
                              "its learned position table covers; raise --context too")
        precision = precision or "bf16"
        optimizer = optimizer or ("adamw-mixed" if precision == "bf16" else "adamw")
        counts = count_arch(what, seq_len, act_bytes=2 if precision == "bf16" else 4,
                            flash=flash)
        batch = batch_size or 1
        if epochs is not None:
            raise ConfigError("epochs: a preset or architecture has no dataset; give tokens")
        n_tokens = float(tokens) if tokens is not None else 20.0 * counts.params
        samples = n_tokens / counts.seq_len
        data_desc = ("compute-optimal default (20 tokens/parameter)" if tokens is None
                     else "given")
        train_rows = None
    else:
        if any(v is not None for v in free.values()) or untied is not None:
            raise ConfigError("--layers/--d-model/... describe a free architecture; for a run "
                              "config or run directory change the config instead")
        counts, cfg, train_rows = what.counts, what.cfg, what.train_rows
        from dlforge.estimate.runs import run_precision
        from dlforge.train.recipe import apply_recipe

        if train_rows is not None:  # the settings a run leaves unset, as training picks them
            cfg = apply_recipe(cfg, train_rows, lambda _: None)
        elif batch_size is None and cfg.train.batch_size is None:
            raise ConfigError(f"{what.source}: the number of training rows is unknown, so the "
                              "batch size training would choose is too; give --batch-size")

        precision = precision or run_precision(cfg)
        optimizer = optimizer or "adamw"  # the trainer keeps fp32 weights (autocast for bf16)
        batch = batch_size or cfg.train.batch_size
        checkpointing = checkpointing or bool(getattr(cfg.model, "checkpointing", False))
        if tokens is not None:
            samples = float(tokens) / counts.seq_len
            data_desc = "given"
        else:
            if train_rows is None:
                raise ConfigError(f"{what.source}: the number of training rows is unknown; "
                                  "give tokens")
            samples = float(train_rows * (epochs or cfg.train.epochs))
            data_desc = f"{train_rows} training rows x {epochs or cfg.train.epochs} epochs"
        n_tokens = samples * counts.seq_len
    flops_total = counts.train_flops * samples
    six_nd = 6.0 * counts.params * n_tokens
    timing = time_and_cost(flops_total, dev, devices, mfu, precision)
    mem = training_memory(counts, batch, optimizer, zero, devices, checkpointing)
    mem["fits_device"] = mem["total"] <= dev.memory_gb * 1e9
    report: dict[str, Any] = {
        "model": {"name": counts.name, "kind": kind, "family": counts.family,
                  "architecture": counts.arch, "notes": counts.notes},
        "convention": "FLOPs = 2 x multiply-adds of matrix products (FlopCounterMode's); "
                      "attention over the full T x T; backward = 2 x forward",
        "parameters": _params(counts),
        "flops": {
            "seq_len": counts.seq_len,
            "per_sample": {"forward": counts.forward_flops, "forward_backward": counts.train_flops,
                           "attention_forward": counts.attention_flops},
            "per_token": {"forward": counts.forward_flops / counts.seq_len,
                          "forward_backward": counts.train_flops / counts.seq_len,
                          "six_n": 6.0 * counts.params},
            "training": {"tokens": n_tokens, "samples": samples, "data": data_desc,
                         "total": flops_total, "six_n_d": six_nd,
                         "with_recompute": flops_total * 4 / 3 if checkpointing else None},
        },
        "training_memory": mem,
        "inference_memory": inference_memory(counts, inference_batch,
                                             counts.seq_len, "bf16"),
        "time": timing,
        "time_on_catalogue": {name: time_and_cost(flops_total, d, devices, mfu, precision)
                              ["seconds"] for name, d in CATALOGUE.items()},
        "data": data_report(counts.params, n_tokens, flops_total),
    }
    if train_rows is not None:
        report["data"]["train_rows"] = train_rows
    if budget is not None:
        report["data"]["optimal_for_budget"] = {"flops": float(budget),
                                                **optimal_for_compute(float(budget))}
    if measure is not None:
        from dlforge.estimate.measure import measure_run

        report["measured"] = measure_run(measure, steps=measure_steps)
    from dlforge.estimate.report import faq

    report["faq"] = faq(report)
    return report


def _params(c: Counts) -> dict[str, Any]:
    return {"total": c.params, "embedding": c.embedding_params,
            "without_embeddings": c.non_embedding_params, "breakdown": c.breakdown,
            "note": "tied weights counted once; 'embedding' = look-up tables (+ an untied "
                    "output head)"}
