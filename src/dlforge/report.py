"""What the CLI and the quickstart print: the metrics table and how to call dlforge again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["cv_summary", "metrics_table", "prog"]


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
    from rich.table import Table

    table = Table(title="Metrics (majority-class baseline alongside)")
    table.add_column("split")
    table.add_column("model", justify="left")
    for key in ("accuracy", "macro_f1", "roc_auc"):
        table.add_column(key, justify="right")
    for split in splits:
        m = metrics.get(split)
        if not m:
            continue
        table.add_row(split, "ours", *[_fmt(m.get(k)) for k in ("accuracy", "macro_f1",
                                                                 "roc_auc")])
        b = m["baseline"]
        table.add_row("", "majority baseline", _fmt(b["accuracy"]), _fmt(b["macro_f1"]), "0.5000"
                      if m.get("roc_auc") is not None else "-")
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
