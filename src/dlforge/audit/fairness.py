"""The fairness audit: how a binary model's decisions differ between groups of people.

For each sensitive attribute (a column, a numeric column cut into bands, or the intersection
of several columns) Fairlearn's ``MetricFrame`` gives per-group count, accuracy, selection
rate, true- and false-positive rates; each rate gets a seeded bootstrap 95% interval (wide
for small groups, which are flagged). From those: the demographic-parity difference and ratio
(lowest selection rate / highest) and the equalized-odds difference (the larger of the TPR
and FPR gaps). The verdict checks them against thresholds, by default the four-fifths rule
(ratio >= 0.8). A run mitigated by ``--mitigate`` is audited twice: the model's own
decisions ("model") and the post-processed ones ("mitigated").

Results go to ``RUN_DIR/audit/fairness.json`` and one bar chart per metric and attribute in
``RUN_DIR/audit/plots/``; the model card is rebuilt to include them.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge._atomic import atomic_file
from dlforge._extras import require
from dlforge.audit.card import write_card
from dlforge.audit.charts import bar_chart
from dlforge.audit.mitigate import fit_thresholds
from dlforge.data.clean import clean_frame
from dlforge.data.frames import read_data
from dlforge.errors import ConfigError, DataError
from dlforge.run import update_run
from dlforge.train.metrics import predict_indices, probabilities
from dlforge.train.thresholds import FILE, group_labels

__all__ = ["METRICS", "Thresholds", "audit_model", "audit_predictions", "parse_bins"]

METRICS = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
MAX_GROUPS_UNBINNED = 20  # a numeric column with more distinct values must be binned
CONSTRAINTS = ("demographic_parity", "equalized_odds")
AUDIT_FEATURE = "dlforge audit --sensitive"  # Fairlearn, in the audit extra


@dataclass
class Thresholds:
    """What the verdict checks. ``min_ratio`` 0.8 is the four-fifths rule (US EEOC); the
    differences are unchecked unless given."""

    min_ratio: float | None = 0.8
    max_difference: float | None = None  # demographic-parity difference
    max_eo_difference: float | None = None  # equalized-odds difference

    def __post_init__(self) -> None:
        for name in ("min_ratio", "max_difference", "max_eo_difference"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}: expected a number between 0 and 1, got {v!r}")


# ---------------------------------------------------------------------------------- inputs
def parse_bins(specs: list[str] | str | None) -> dict[str, list[float]]:
    """``["age:25,40,60"]`` (or ``"age:25,40,60;income:1000,5000"``) -> {column: edges}."""
    if not specs:
        return {}
    items = [s for spec in ([specs] if isinstance(specs, str) else specs)
             for s in spec.split(";") if s.strip()]
    out: dict[str, list[float]] = {}
    for item in items:
        col, sep, edges = item.partition(":")
        try:
            values = [float(e) for e in edges.split(",") if e.strip()]
        except ValueError:
            values = []
        if not sep or not col.strip() or not values:
            raise ConfigError(f"--bins: expected COLUMN:EDGE,EDGE,... such as age:25,40,60, "
                              f"got {item!r}")
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ConfigError(f"--bins {col.strip()}: edges must increase, got {edges!r}")
        out[col.strip()] = values
    return out


def _check_attribute(df: pd.DataFrame, col: str, bins: dict[str, list[float]],
                     source: str) -> None:
    if col not in df.columns:
        raise DataError(f"{source}: sensitive column {col!r} not found; columns are: "
                        f"{', '.join(map(str, df.columns))}")
    values = df[col].dropna()
    if col not in bins and pd.api.types.is_numeric_dtype(df[col]) and \
            values.nunique() > MAX_GROUPS_UNBINNED:
        lo, hi = float(values.min()), float(values.max())
        raise DataError(f"{source}: sensitive column {col!r} is numeric with "
                        f"{values.nunique()} distinct values ({lo:g} to {hi:g}); cut it into "
                        f"groups with --bins {col}:EDGE,EDGE,... (e.g. --bins {col}:"
                        f"{_example_edges(lo, hi)})")


def _example_edges(lo: float, hi: float) -> str:
    return ",".join(f"{v:g}" for v in np.unique(np.round(np.linspace(lo, hi, 5)[1:-1])))


# ---------------------------------------------------------------------------------- metrics
def _tpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    pos = np.asarray(y_true) == 1
    return float(np.asarray(y_pred)[pos].mean()) if pos.any() else float("nan")


def _fpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    neg = np.asarray(y_true) == 0
    return float(np.asarray(y_pred)[neg].mean()) if neg.any() else float("nan")


def _bootstrap(yt: np.ndarray, yp: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """95% percentile intervals of each rate, from ``resamples`` resamples of the group."""
    rng = np.random.default_rng(seed)
    n = len(yt)
    draws = {m: [] for m in METRICS}
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        t, p = yt[idx], yp[idx]
        pos = t.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws["accuracy"].append((t == p).mean(axis=1))
            draws["selection_rate"].append(p.mean(axis=1))
            draws["true_positive_rate"].append((p & t).sum(axis=1) / pos)
            draws["false_positive_rate"].append((p & ~t).sum(axis=1) / (n - pos))
    out = {}
    for m, parts in draws.items():
        a = np.concatenate(parts)
        a = a[np.isfinite(a)]
        out[m] = ([float(v) for v in np.percentile(a, [2.5, 97.5])]
                  if len(a) >= max(10, resamples // 10) else None)
    return out


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def audit_predictions(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                      thresholds: Thresholds | None = None, *, resamples: int = 1000,
                      seed: int = 0, min_group_size: int = 30) -> dict[str, Any]:
    """Per-group metrics (Fairlearn's MetricFrame), bootstrap intervals, the disparity
    measures and the verdict, for 0/1 labels and decisions and a group name per row."""
    require("fairlearn", "audit", AUDIT_FEATURE)
    from fairlearn.metrics import MetricFrame, count, selection_rate
    from sklearn.metrics import accuracy_score

    thresholds = thresholds or Thresholds()
    yt = np.asarray(y_true).astype(bool)
    yp = np.asarray(y_pred).astype(bool)
    groups = np.asarray(groups, dtype=object)
    frame = MetricFrame(
        metrics={"count": count, "accuracy": accuracy_score, "selection_rate": selection_rate,
                 "true_positive_rate": _tpr, "false_positive_rate": _fpr},
        y_true=yt.astype(int), y_pred=yp.astype(int), sensitive_features=groups)
    by_group: dict[str, Any] = {}
    for g, row in frame.by_group.iterrows():
        rows = groups == g
        n = int(row["count"])
        ci = _bootstrap(yt[rows], yp[rows], resamples,
                        seed * 1_000_003 + zlib.crc32(str(g).encode("utf-8")))
        notes = []
        if n < min_group_size:
            notes.append(f"small group (n={n} < {min_group_size}): estimates are uncertain; "
                         "see the intervals")
        if not yt[rows].any():
            notes.append("no positive labels: TPR undefined")
        if yt[rows].all():
            notes.append("no negative labels: FPR undefined")
        by_group[str(g)] = {"count": n, **{m: _num(row[m]) for m in METRICS},
                            **{f"{m}_ci": ci[m] for m in METRICS},
                            "small": n < min_group_size, "notes": notes}
    # The disparity measures compare the groups large enough to measure (n >= min_group_size);
    # a group of 3 rows would otherwise decide the verdict by chance. Small groups stay in
    # by_group with their (wide) intervals. If fewer than two groups are large, all count.
    large = [g for g, v in by_group.items() if not v["small"]]
    measured = large if len(large) >= 2 else list(by_group)
    sel = [by_group[g]["selection_rate"] for g in measured]
    dp_diff = max(sel) - min(sel)
    dp_ratio = min(sel) / max(sel) if max(sel) > 0 else None
    gaps = []
    for m in ("true_positive_rate", "false_positive_rate"):
        vals = [by_group[g][m] for g in measured if by_group[g][m] is not None]
        if len(vals) >= 2:
            gaps.append(max(vals) - min(vals))
    eo_diff = max(gaps) if gaps else None
    summary = {"demographic_parity_difference": dp_diff, "demographic_parity_ratio": dp_ratio,
               "equalized_odds_difference": eo_diff}
    overall = {m: _num(frame.overall[m]) for m in METRICS}
    return {"rows": len(yt), "overall": overall, "by_group": by_group, **summary,
            "measured_over": measured,
            "small_groups_excluded": [g for g in by_group if g not in measured],
            "verdict": _verdict(summary, thresholds)}


def _verdict(s: dict[str, Any], t: Thresholds) -> dict[str, Any]:
    checks = []
    for name, metric, limit, ok in (
            ("four-fifths rule" if t.min_ratio == 0.8 else "minimum ratio",
             "demographic_parity_ratio", t.min_ratio, lambda v, lim: v >= lim),
            ("demographic-parity difference", "demographic_parity_difference",
             t.max_difference, lambda v, lim: v <= lim),
            ("equalized-odds difference", "equalized_odds_difference", t.max_eo_difference,
             lambda v, lim: v <= lim)):
        if limit is None:
            continue
        v = s[metric]
        checks.append({"check": name, "metric": metric, "threshold": limit, "value": v,
                       "passed": None if v is None else bool(ok(v, limit))})
    results = [c["passed"] for c in checks]
    passed = False if False in results else (None if None in results or not checks else True)
    word = {True: "pass", False: "fail", None: "undetermined"}[passed]
    return {"passed": passed, "result": word, "checks": checks}


# ---------------------------------------------------------------------------------- the audit
def audit_model(model: Any, run_dir: str | Path, data: str | Path | pd.DataFrame,
                sensitive: str | list[str], *,
                bins: dict[str, list[float]] | list[str] | str | None = None,
                positive: Any = None, label: str | None = None,
                thresholds: Thresholds | None = None, mitigate: str | None = None,
                resamples: int = 1000, seed: int = 0, min_group_size: int = 30,
                write: bool = True) -> dict[str, Any]:
    """Audit the decisions of ``model``, the fitted estimator of the binary run ``run_dir``
    (``dlforge.audit`` loads it), by the ``sensitive`` column(s) of a labelled ``data``
    file (or DataFrame); the columns need not be model inputs. ``bins`` cuts numeric columns
    into bands ({"age": [25, 40, 60]} or "age:25,40,60"). ``mitigate`` ("demographic_parity"
    or "equalized_odds") fits Fairlearn's ThresholdOptimizer on the model's scores, saves the
    rule with the run (applied by predict and serve from then on) and audits before and after;
    "none" removes a saved rule (either is saved in the run whatever ``write`` says). With
    ``write``, the results, charts and model card are written into the run. Returns the
    results (as in ``audit/fairness.json``); ``verdict`` sums up every attribute's verdict on
    the decisions predict now makes (mitigated, if the run has a rule)."""
    require("fairlearn", "audit", AUDIT_FEATURE)
    run_dir = Path(run_dir)
    thresholds = thresholds or Thresholds()
    columns = [c.strip() for c in sensitive.split(",")] if isinstance(sensitive, str) else list(
        sensitive)
    columns = [c for c in columns if c]
    if not columns:
        raise ConfigError("--sensitive: name at least one column, e.g. --sensitive Marital")
    bins = bins if isinstance(bins, dict) else parse_bins(bins)
    unknown_bins = sorted(set(bins) - set(columns))
    if unknown_bins:
        raise ConfigError(f"--bins {unknown_bins[0]}: not one of the sensitive columns "
                          f"({', '.join(columns)})")
    if mitigate not in (None, "none", *CONSTRAINTS):
        raise ConfigError(f"--mitigate: expected {' or '.join(CONSTRAINTS)} (or none), got "
                          f"{mitigate!r}")
    if min_group_size < 1:
        raise ConfigError(f"--min-group-size: at least 1, got {min_group_size}")
    if resamples < 10:
        raise ConfigError(f"--bootstrap: at least 10 resamples, got {resamples}")

    clf = model
    target = clf.labels_
    if target.kind != "binary":
        what = ("a number" if target.kind == "numeric" else
                f"{target.kind} labels ({len(target.classes)} classes)")
        raise ConfigError(f"{run_dir}: the fairness audit is for binary outputs only; this run "
                          f"predicts {what}. Audit a binary model, e.g. one class against the "
                          "rest")
    classes = list(target.classes)
    if positive is None:
        positive = classes[1]
    match = [c for c in classes if str(c) == str(positive)]
    if not match:
        raise ConfigError(f"--positive: {positive!r} is not one of the run's classes: "
                          f"{', '.join(map(str, classes))}")
    positive = match[0]
    pos = classes.index(positive)

    df, source = _read(clf, data, label)
    for col in columns:
        _check_attribute(df, col, bins, source)
    attrs = {c: [c] for c in columns}
    if len(columns) > 1:
        attrs[" & ".join(columns)] = columns
    groups = {name: group_labels(df, cols, bins, source) for name, cols in attrs.items()}
    for name, g in groups.items():
        found = sorted(set(g.tolist()))
        if len(found) < 2:
            raise DataError(f"{source}: sensitive column {name!r} has a single group "
                            f"({found[0]!r} in all {len(g)} rows); a fairness audit compares "
                            "at least two groups")

    proba = probabilities("binary", clf._logits_frame(df, source))
    y = target.encode(df[clf.config_.output.name].tolist(), clf.config_.output.separator,
                      source=source) == pos
    raw = predict_indices("binary", proba) == pos  # the model's own decisions, as predict

    mitigation = None
    if mitigate is not None:
        mitigation = _mitigate(run_dir, clf, mitigate, proba, y, df, columns, bins, positive,
                               source)
    rule = getattr(clf, "postprocess_", None)
    mitigated = None
    if rule is not None:
        mitigated = clf.sensitive_groups(df, None, len(df), source)
        mitigated = rule.predict_indices(proba, mitigated) == pos

    kwargs = dict(resamples=resamples, seed=seed, min_group_size=min_group_size)
    result: dict[str, Any] = {
        "run": str(run_dir), "data": source, "rows": len(df), "positive": positive,
        "classes": classes, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "thresholds": vars(thresholds), "bootstrap": {"resamples": resamples, "seed": seed,
                                                      "level": 0.95},
        "min_group_size": min_group_size, "bins": bins, "attributes": {},
        "mitigation": rule.to_dict() if rule else None,
    }
    if mitigation is not None:
        result["mitigation_fit"] = mitigation
    for name, cols in attrs.items():
        entry = {"columns": cols,
                 "model": audit_predictions(y, raw, groups[name], thresholds, **kwargs)}
        if mitigated is not None:
            entry["mitigated"] = audit_predictions(y, mitigated, groups[name], thresholds,
                                                   **kwargs)
        result["attributes"][name] = entry
    final = [(e.get("mitigated") or e["model"])["verdict"]["passed"]
             for e in result["attributes"].values()]
    result["verdict"] = ("fail" if False in final else "undetermined" if None in final
                         else "pass")  # of the decisions predict now makes, every attribute
    if write:
        _write(run_dir, result)
    return result


def _read(clf: Any, data: str | Path | pd.DataFrame, label: str | None
          ) -> tuple[pd.DataFrame, str]:
    """The labelled rows to audit, cleaned as ``dlforge evaluate`` cleans them."""
    cfg = clf.config_
    renames = {label: cfg.output.name} if label and label != cfg.output.name else {}
    if isinstance(data, pd.DataFrame):
        source, df = "data", data.rename(columns=renames).reset_index(drop=True)
        missing = [c for c in [*(i.name for i in cfg.inputs), cfg.output.name]
                   if c not in df.columns]
        if missing:
            hint = (" (name the label column with label=..., --label)"
                    if missing[0] == cfg.output.name else "")
            raise DataError(f"data: column {missing[0]!r} not found; columns are: "
                            f"{', '.join(map(str, df.columns))}{hint}")
    else:
        source, df = str(data), read_data(cfg, data, labelled=True, renames=renames)
    clean = cfg.data.clean.model_copy(update={"drop_duplicates": False,
                                              "drop_missing_label": True})
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, _ = clean_frame(df, texts, cfg.output.name, clean, source=source)
    return df, source


def _mitigate(run_dir: Path, clf: Any, constraint: str, proba: np.ndarray, y: np.ndarray,
              df: pd.DataFrame, columns: list[str], bins: dict[str, list[float]],
              positive: Any, source: str) -> dict[str, Any]:
    """Fit (or with "none", remove) the run's group-threshold rule and save it in the run."""
    if constraint == "none":
        update_run(run_dir, lambda tmp: (tmp / FILE).unlink(missing_ok=True))
        clf.postprocess_ = None
        return {"removed": True}
    groups = group_labels(df, columns, bins, source)
    rule = fit_thresholds(proba[:, list(clf.labels_.classes).index(positive)], y, groups,
                          constraint, columns=columns, bins=bins,
                          classes=list(clf.labels_.classes), positive=positive,
                          fitted_on={"data": source, "rows": len(df)})
    update_run(run_dir, lambda tmp: rule.save(tmp / FILE))
    clf.postprocess_ = rule
    return {"constraint": constraint, "columns": columns, "groups": sorted(rule.rules),
            "fitted_on": rule.fitted_on}


# ---------------------------------------------------------------------------------- output
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "attribute"


def _write(run_dir: Path, result: dict[str, Any]) -> None:
    folder = run_dir / "audit"
    plots = folder / "plots"
    result["plots"] = []
    for name, entry in result["attributes"].items():
        for metric in METRICS:
            rel = f"audit/plots/{_safe(name)}_{metric}.png"
            bar_chart(entry, name, metric, run_dir / rel)
            result["plots"].append(rel)
    keep = {Path(p).name for p in result["plots"]}
    if plots.is_dir():  # charts of attributes no longer audited
        for old in plots.glob("*.png"):
            if old.name not in keep:
                old.unlink()
    with atomic_file(folder / "fairness.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n",
                       encoding="utf-8")
    write_card(run_dir)
