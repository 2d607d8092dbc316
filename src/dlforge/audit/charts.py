"""The fairness audit's output: a bar chart per metric and attribute, and the tables the CLI
prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge._atomic import atomic_file
from dlforge.audit.fairness import METRICS

__all__ = ["bar_chart", "fairness_tables"]

SHORT = {"accuracy": "accuracy", "selection_rate": "selection", "true_positive_rate": "TPR",
         "false_positive_rate": "FPR"}


def bar_chart(entry: dict[str, Any], name: str, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [k for k in ("model", "mitigated") if k in entry]
    groups = list(entry["model"]["by_group"])
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) + 2), 3.2))
    x = np.arange(len(groups))
    for i, key in enumerate(shown):
        bg = entry[key]["by_group"]
        vals = np.array([np.nan if bg[g][metric] is None else bg[g][metric] for g in groups])
        lo = np.array([v - (bg[g][f"{metric}_ci"] or [v, v])[0] if np.isfinite(v) else 0
                       for v, g in zip(vals, groups, strict=True)])
        hi = np.array([(bg[g][f"{metric}_ci"] or [v, v])[1] - v if np.isfinite(v) else 0
                       for v, g in zip(vals, groups, strict=True)])
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, np.nan_to_num(vals), width,
               yerr=np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)]), capsize=3,
               label=key, color=("#4C72B0", "#DD8452")[i])
    ax.set_xticks(x, [f"{g}\n(n={entry['model']['by_group'][g]['count']})" for g in groups],
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ')} by {name} (95% bootstrap intervals)", fontsize=9)
    if len(shown) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _fmt(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ±{(ci[1] - ci[0]) / 2:.2f}" if ci else "")


def fairness_tables(result: dict[str, Any]) -> list[Any]:
    """Rich tables (one per attribute and decision rule) and verdict lines to print."""
    from rich.table import Table

    out: list[Any] = []
    for name, entry in result["attributes"].items():
        for key in ("model", "mitigated"):
            if key not in entry:
                continue
            r = entry[key]
            what = "the model's decisions" if key == "model" else "after mitigation"
            table = Table(title=f"{name}: {what} (positive = {result['positive']!r}; ± half "
                                "the 95% bootstrap interval)")
            table.add_column("group", no_wrap=True)
            table.add_column("n", justify="right")
            for m in METRICS:
                table.add_column(SHORT[m], justify="right")
            for g, row in r["by_group"].items():
                table.add_row(g + (" (small)" if row["small"] else ""), str(row["count"]),
                              *[_fmt(row[m], row[f"{m}_ci"]) for m in METRICS])
            out.append(table)
            v = r["verdict"]
            out.append(f"{name} ({key}): demographic parity difference "
                       f"{_fmt(r['demographic_parity_difference'])}, ratio "
                       f"{_fmt(r['demographic_parity_ratio'])}; equalized-odds difference "
                       f"{_fmt(r['equalized_odds_difference'])}"
                       + (f" (small groups left out: {', '.join(r['small_groups_excluded'])})"
                          if r["small_groups_excluded"] else "")
                       + f" -> [b]{v['result']}[/b]"
                       + "".join(f"; {c['check']} {_fmt(c['value'])} vs {c['threshold']}"
                                 for c in v["checks"]))
    return out

