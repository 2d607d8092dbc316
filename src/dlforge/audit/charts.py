"""The fairness audit's charts: a bar chart per metric and attribute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge._atomic import atomic_file

__all__ = ["SHORT", "bar_chart"]

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


