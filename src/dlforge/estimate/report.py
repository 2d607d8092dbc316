"""The estimate as words and tables: the three FAQ one-liners, and rich tables for the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["faq", "finetune_faq", "finetune_tables", "human_bytes", "human_count",
           "human_seconds", "tables"]


def _sectioned(title: str) -> tuple[Any, Callable[[str, list[tuple[str, str]]], None]]:
    """A section / quantity / value table and ``section(name, rows)``, which adds rows under
    one section name and closes the section."""
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("section")
    table.add_column("quantity")
    table.add_column("value", justify="right")

    def section(name: str, rows: list[tuple[str, str]]) -> None:
        for i, (k, v) in enumerate(rows):
            table.add_row(name if i == 0 else "", k, v)
        table.add_section()

    return table, section

def human_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600),
                       ("minutes", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def faq(r: dict[str, Any]) -> dict[str, str]:
    """One line for each of the article's questions: how much data, time, compute."""
    p, d, t, tr = r["parameters"]["total"], r["data"], r["time"], r["flops"]["training"]
    data = (f"How much data? {human_count(d['optimal_tokens'])} tokens is compute-optimal for "
            f"{human_count(p)} parameters (20 per parameter, Hoffmann et al. 2022); this plan "
            f"uses {human_count(tr['tokens'])} ({d['tokens_per_param']:.3g} per parameter), "
            f"predicted loss {d['chinchilla_loss']:.3f} nats/token by the Chinchilla fit"
            + ("" if d.get("in_fit_range", True) else
               " (an extrapolation: the fit was made on 70M-16B parameters and 5B-500B tokens)")
            + ("." if r["model"]["family"] == "decoder"
               else " (rules fitted on language-model pre-training)."))
    if "optimal_for_budget" in d:
        b = d["optimal_for_budget"]
        data += (f" A budget of {b['flops']:.3g} FLOPs is best spent on "
                 f"{human_count(b['params'])} parameters and {human_count(b['tokens'])} tokens.")
    when = (f"How long? {human_seconds(t['seconds'])} on {t['devices']} x {t['hardware']} at "
            f"{t['mfu']:.0%} MFU ({t['precision']}).")
    m = r.get("measured")
    if m:
        when += (f" Measured here: {human_seconds(m['predicted_total_seconds'])} for the run "
                 f"({m['achieved_flops_per_s']:.3g} FLOP/s achieved).")
    compute = (f"How much compute? {tr['total']:.3g} FLOPs ({tr['six_n_d']:.3g} by 6ND) = "
               f"{t['device_hours']:.3g} device-hours"
               + (f", ${t['cost_usd']:,.0f} at ${t['price_per_device_hour']}/device-hour."
                  if t["price_per_device_hour"] else " (no price given)."))
    return {"data": data, "time": when, "compute": compute}


def tables(r: dict[str, Any]) -> list[Any]:
    """Rich renderables: the FAQ lines, then one table of every figure."""
    from rich.text import Text

    out: list[Any] = [Text(line) for line in r["faq"].values()]
    m = r["model"]
    table, section = _sectioned(f"Estimate: {m['name']} ({m['kind']}, {m['family']})")

    pa = r["parameters"]
    section("parameters", [("total (tied counted once)", f"{pa['total']:,}"),
                           ("embeddings", f"{pa['embedding']:,}"),
                           ("without embeddings", f"{pa['without_embeddings']:,}")])
    f = r["flops"]
    section("FLOPs (2 x MACs)", [
        ("sequence length", f"{f['seq_len']:,}"),
        ("forward / token", f"{f['per_token']['forward']:.4g}"),
        ("forward+backward / token", f"{f['per_token']['forward_backward']:.4g}"),
        ("6N / token (Kaplan)", f"{f['per_token']['six_n']:.4g}"),
        ("forward / sample", f"{f['per_sample']['forward']:.4g}"),
        ("training tokens", f"{f['training']['tokens']:.4g} ({f['training']['data']})"),
        ("training total", f"{f['training']['total']:.4g}"),
        ("training 6ND", f"{f['training']['six_n_d']:.4g}")])
    tm = r["training_memory"]
    rows = [("setting", f"{tm['optimizer']}, ZeRO {tm['zero_stage']}, {tm['devices']} devices, "
                        f"batch {tm['batch_size_per_device']}/device"
                        + (", checkpointing" if tm["checkpointing"] else "")),
            ("weights", human_bytes(tm["weights"])), ("gradients", human_bytes(tm["gradients"])),
            ("optimizer states", human_bytes(tm["optimizer_states"])),
            ("activations", human_bytes(tm["activations"]))]
    if "activations_with_checkpointing" in tm:
        rows.append(("activations (checkpointing)",
                     human_bytes(tm["activations_with_checkpointing"])))
    rows.append(("total per device", human_bytes(tm["total"])
                 + ("" if tm["fits_device"] else "  (does not fit)")))
    section("training memory", rows)
    im = r["inference_memory"]
    rows = [(f"weights {k}", human_bytes(v)) for k, v in im["weights"].items()]
    if "kv_cache" in im:
        rows.append((f"KV cache ({im['kv_dtype']}, batch {im['batch_size']}, "
                     f"{im['context']} tokens)", human_bytes(im["kv_cache"])))
    section("inference memory", rows)
    t = r["time"]
    section("time and cost", [
        ("hardware", f"{t['devices']} x {t['hardware']} at {t['mfu']:.0%} MFU, {t['precision']}"),
        ("time", human_seconds(t["seconds"])),
        ("device-hours", f"{t['device_hours']:.4g}"),
        ("cost", f"${t['cost_usd']:,.2f}" if t["price_per_device_hour"] else "no price"),
        *[(f"time on {k}", human_seconds(v)) for k, v in r["time_on_catalogue"].items()]])
    d = r["data"]
    opt = d["optimal_for_this_compute"]
    section("data (Chinchilla)", [
        ("compute-optimal tokens", human_count(d["optimal_tokens"])),
        ("tokens per parameter", f"{d['tokens_per_param']:.3g}"),
        ("optimal size for this compute", f"{human_count(opt['params'])} params, "
                                          f"{human_count(opt['tokens'])} tokens"),
        *([("optimal size for the budget", f"{human_count(d['optimal_for_budget']['params'])} "
            f"params, {human_count(d['optimal_for_budget']['tokens'])} tokens "
            f"({d['optimal_for_budget']['flops']:.3g} FLOPs)")] if "optimal_for_budget" in d
          else []),
        ("predicted loss", f"{d['chinchilla_loss']:.3f}"),
        ("fit constants", ", ".join(f"{k}={v}" for k, v in d["constants"].items()))])
    if "measured" in r:
        me = r["measured"]
        section("measured here", [
            ("step time", f"{me['step_seconds'] * 1e3:.3g} ms ({me['steps_timed']} steps)"),
            ("achieved FLOP/s", f"{me['achieved_flops_per_s']:.3g}"),
            ("predicted run time", human_seconds(me["predicted_total_seconds"])),
            ("memory peak / predicted", f"{human_bytes(me['memory']['measured_peak_bytes'])} / "
                                        f"{human_bytes(me['memory']['predicted_bytes'])}")])
    out.append(table)
    return out


# ------------------------------------------------------------------- fine-tuning an LM
_SETTINGS = {"full": "full", "full+checkpointing": "full, checkpointing", "lora": "LoRA",
             "lora+checkpointing": "LoRA, checkpointing"}


def finetune_faq(r: dict[str, Any]) -> dict[str, str]:
    """One line each: what is trained, how much memory, how long."""
    pa, m, t, d, s = r["parameters"], r["memory"], r["time"], r["data"], r["settings"]
    how = (f"LoRA r={r['lora']['r']} on {', '.join(r['lora']['target_modules'])}"
           if r["lora"] else "a full fine-tune")
    params = (f"What is trained? {how}: {human_count(pa['trained'])} of "
              f"{human_count(pa['total'])} parameters ({pa['trained_share']:.2%}).")
    rows, length = m["batch"]
    memory = (f"How much memory? {human_bytes(m['total'])} at its largest batch ({rows} x "
              f"{length} tokens, {s['precision']}): weights {human_bytes(m['weights'])}, "
              f"gradients {human_bytes(m['gradients'])}, AdamW states "
              f"{human_bytes(m['optimizer_states'])}, activations "
              f"{human_bytes(m['activations'])}, logits {human_bytes(m['logits'])}"
              + (f", 16-bit weight copies {human_bytes(m['autocast_weight_copies'])}"
                 if m["autocast_weight_copies"] else "") + ". "
              + "; ".join(f"{_SETTINGS[k]} {human_bytes(v)}"
                          for k, v in r["memory_compare"].items()) + ".")
    when = (f"How long? {human_seconds(t['seconds_per_epoch'])} per epoch on "
            f"{t['hardware']} ({d['batches']:,} batches, {human_count(d['padded_tokens'])} "
            f"tokens with padding, {r['flops']['per_epoch']:.3g} FLOPs at "
            f"{t['flops_per_s']:.3g} FLOP/s: {t['how']}); {human_seconds(t['total_seconds'])} "
            f"for {t['optimizer_steps']:,} optimizer steps with validation before and after.")
    return {"parameters": params, "memory": memory, "time": when}


def finetune_tables(r: dict[str, Any]) -> list[Any]:
    """Rich renderables for a fine-tune estimate: the FAQ lines, then one table."""
    from rich.text import Text

    out: list[Any] = [Text(line) for line in r["faq"].values()]
    mo = r["model"]
    table, section = _sectioned(f"Fine-tune estimate: {mo['name']} ({mo['architecture']}, "
                                f"{r['method']})")

    pa = r["parameters"]
    section("parameters", [("total", f"{pa['total']:,}"), ("trained", f"{pa['trained']:,}"),
                           *([("LoRA modules", f"{r['lora']['modules']} "
                               f"({', '.join(r['lora']['target_modules'])}, r="
                               f"{r['lora']['r']})")] if r["lora"] else [])])
    d = r["data"]
    section("data (one epoch)", [
        ("source", d["source"] or "-"), ("training sequences", f"{d['sequences']:,}"),
        ("batches / optimizer steps", f"{d['batches']:,} / {d['optimizer_steps']:,}"),
        ("tokens (with padding)", f"{d['tokens']:,} ({d['padded_tokens']:,})"),
        ("supervised tokens", f"{d['supervised_tokens']:,}")])
    f = r["flops"]
    section("FLOPs per epoch", [
        ("forward / backward", f"{f['forward']:.4g} / {f['backward']:.4g}"),
        ("recomputed (checkpointing)", f"{f['recompute']:.4g}"),
        ("total", f"{f['per_epoch']:.4g}"),
        (f"rule of thumb {f['rule']}", f"{f['rule_of_thumb']:.4g}")])
    m = r["memory"]
    rows = [(k.replace("_", " "), human_bytes(m[k])) for k in (
        "weights", "gradients", "optimizer_states", "activations", "logits",
        "autocast_weight_copies") if m[k] or k != "autocast_weight_copies"]
    rows.append(("total (peak)", human_bytes(m["total"])))
    rows += [(f"total: {_SETTINGS[k]}", human_bytes(v))
             for k, v in r["memory_compare"].items()]
    section("memory", rows)
    t = r["time"]
    trows = [("rate", f"{t['flops_per_s']:.3g} FLOP/s ({t['how']})"),
             ("per epoch", human_seconds(t["seconds_per_epoch"])),
             ("validation (before and after)", human_seconds(t["validation_seconds"])),
             ("whole run", human_seconds(t["total_seconds"]))]
    if "measured" in t:
        me = t["measured"]
        trows += [("measured step", f"{me['step_seconds'] * 1e3:.3g} ms"),
                  ("measured peak memory", human_bytes(me["peak_memory_bytes"]))]
    section("time", trows)
    out.append(table)
    return out
