"""What the CLI and the quickstart print: the metrics table and how to call dlforge again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["cv_summary", "leaderboard_table", "metrics_table", "prog"]


def prog() -> str:
    """How to call dlforge again: ``dlforge`` when that is on PATH, else the path this run was
    started with (``.venv/bin/dlforge`` after ``make quickstart``)."""
    argv0 = sys.argv[0]
    if Path(argv0).name != "dlforge":
        return "dlforge"
    found = shutil.which("dlforge")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return "dlforge"
    return argv0


def metrics_table(metrics: dict[str, Any], splits: tuple[str, ...] = ("validation", "test")):
    """Our scores next to the baseline's (majority class, or the training mean for
    regression), one pair of rows per split; and on validation the strong simple baseline's
    (TF-IDF + LR, gradient boosting) fitted on the same training rows."""
    shown = [metrics[s] for s in splits if metrics.get(s)]
    if shown and "smape" in shown[0]:
        return _forecast_table(metrics, splits)
    regression = bool(shown) and "rmse" in shown[0]
    keys = ("mae", "rmse", "r2") if regression else ("accuracy", "macro_f1", "roc_auc")
    what = "training-mean" if regression else "majority-class"
    table = _table(f"Metrics ({what} and simple baselines alongside)", keys)
    for split in splits:
        m = metrics.get(split)
        if not m:
            continue
        table.add_row(split, "ours", *[_fmt(m.get(k)) for k in keys])
        b = m["baseline"]
        if regression:
            table.add_row("", "mean baseline", *[_fmt(b.get(k)) for k in keys])
        else:
            table.add_row("", "majority baseline", _fmt(b["accuracy"]), _fmt(b["macro_f1"]),
                          "0.5000" if m.get("roc_auc") is not None else "-")
        simple = metrics.get("simple_baseline") or {}
        if split in simple:  # the strong simple baseline on the same rows (validation)
            table.add_row("", f"simple baseline ({simple['model']})",
                          *[_fmt(simple[split].get(k)) for k in keys])
    return table


def _table(title: str, keys: tuple[str, ...]):
    """A metrics table: split, model, then one right-aligned column per metric."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    table.add_column("model", justify="left")
    for key in keys:
        table.add_column(key, justify="right")
    return table


def _forecast_table(metrics: dict[str, Any], splits: tuple[str, ...]):
    keys = ("mae", "rmse", "smape")
    table = _table("Forecast metrics (naive and seasonal-naive forecasts alongside; sMAPE in %)",
                   keys)
    for split in splits:
        m = metrics.get(split)
        if not m:
            continue
        table.add_row(f"{split} ({m['n_windows']} windows)", "ours",
                      *[_fmt(m.get(k)) for k in keys])
        table.add_row("", m["baseline"]["strategy"], *[_fmt(m["baseline"].get(k)) for k in keys])
        if "seasonal_naive" in m:
            sn = m["seasonal_naive"]
            table.add_row("", sn["strategy"], *[_fmt(sn.get(k)) for k in keys])
    return table


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def cv_summary(metrics: dict[str, Any]) -> str | None:
    """One line of k-fold cross-validation results (mean ± std), if the run has them."""
    cv = metrics.get("cross_validation")
    if not cv:
        return None
    return f"{cv['k']}-fold cross-validation: " + ", ".join(
        f"{key} {cv['mean'][key]:.4f} ± {cv['std'][key]:.4f}" for key in cv["mean"])


def leaderboard_table(metrics: dict[str, Any]):
    """The model-selection leaderboard of a ``model: auto`` run, best first; None without."""
    sel = metrics.get("model_selection")
    if not sel:
        return None
    from rich.table import Table

    b = sel["budget"]
    given = ", ".join(f"{name} {b[key]:g}" for key, name in (
        ("epochs", "epochs"), ("batch_size", "batch"), ("lr", "lr")) if b.get(key) is not None)
    halved = any("stopped" in r for r in sel["leaderboard"])
    table = Table(title=f"Model selection: {sel['k']}-fold cross-validation"
                        + (" (the weakest networks stopped after one fold)" if halved else "")
                        + ", "
                        + (f"same budget for each ({given}" + (
                            "; the rest from each family's recipe)" if None in (
                                b.get("epochs"), b.get("batch_size"), b.get("lr")) else ")")
                           if given else "each family's data-size recipe"))
    for col in ("rank", "model", f"{sel['metric']} (mean ± std)", "baseline share",
                "parameters", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right",
                         no_wrap=col == "model")
    for i, r in enumerate(sel["leaderboard"], start=1):
        share = r.get("baseline_weight")
        name = r["model"] + (f" ({' + '.join(r['members'])})" if r.get("members") else "")
        name += (" ← kept" if r["model"] == sel["winner"] else
                 " (not kept: better on too few folds)" if r.get("not_kept") else "")
        table.add_row(str(i), name,
                      f"{r['mean']:.4f} ± {r['std']:.4f}" if r.get("std") is not None
                      else f"{r['mean']:.4f} (1 fold)",
                      "-" if share is None else f"{share:.2f}", f"{r['parameters']:,}",
                      f"{r['seconds']:.1f}")
    return table
