"""Group-specific decision thresholds: the fairness mitigation, applied when predicting.

``dlforge audit --mitigate`` fits Fairlearn's ``ThresholdOptimizer`` on a binary model's
scores (:mod:`dlforge.audit.fairness`). What it learned is kept here as plain JSON in the run
(``postprocess.json``, never a pickle) and applied with NumPy, so predicting needs neither
Fairlearn nor the data it was fitted on.

The rule, per group of the sensitive column(s), is Fairlearn's ``InterpolatedThresholder``:
the probability of deciding "positive" is ``p0 * op0(score) + p1 * op1(score)``, each ``op`` a
threshold ``score > t`` or ``score < t``; for equalized odds that is further mixed with a
constant: ``p_ignore * constant + (1 - p_ignore) * (...)``. The decision is then
``probability >= u`` for a uniform ``u``:

- ``random_state=int``: ``u`` from ``numpy.random.RandomState(random_state).rand(n)``, exactly
  Fairlearn's draw, so the decisions equal ``ThresholdOptimizer.predict`` with that state;
- ``random_state=None`` (how predict and serve decide): ``u`` is a hash of the row's score and
  group, so the same row always gets the same decision, in any batch, on any server.

Rows whose sensitive value was not seen when fitting, or whose sensitive column is missing,
raise :class:`~dlforge.errors.DataError`: the rule has no threshold for them.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge._atomic import atomic_file
from dlforge.errors import DataError, RunDirError

__all__ = ["FILE", "MISSING", "SEP", "GroupThresholds", "bin_label", "group_labels"]

FILE = "postprocess.json"
SEP = ","  # joins the values of several sensitive columns into one group, as Fairlearn does
MISSING = "missing"


def bin_label(edges: list[float], value: float) -> str:
    """The band of ``value`` among sorted ``edges``: ``<25``, ``[25,40)``, ..., ``>=60``."""
    i = int(np.searchsorted(edges, value, side="right"))
    if i == 0:
        return f"<{edges[0]:g}"
    if i == len(edges):
        return f">={edges[-1]:g}"
    return f"[{edges[i - 1]:g},{edges[i]:g})"


def _plain_label(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 1.0 read from a CSV column with gaps is the group "1"
    return str(value)


def group_labels(frame: pd.DataFrame, columns: list[str], bins: dict[str, list[float]],
                 source: str = "data") -> np.ndarray:
    """One group name per row: each column's value (or its band, for a binned column; missing
    values are the group ``missing``), several columns joined by ``,``."""
    parts = []
    for col in columns:
        if col not in frame.columns:
            raise DataError(f"{source}: sensitive column {col!r} not found; columns are: "
                            f"{', '.join(map(str, frame.columns))}")
        values = frame[col].tolist()
        edges = bins.get(col)
        out = []
        for v in values:
            if v is None or v is pd.NA or (isinstance(v, float | np.floating) and np.isnan(v)):
                out.append(MISSING)
            elif edges is not None:
                try:
                    out.append(bin_label(edges, float(v)))
                except (TypeError, ValueError):
                    raise DataError(f"{source}: column {col!r} is binned but holds the "
                                    f"non-number {v!r}; bin only numeric columns") from None
            else:
                out.append(_plain_label(v))
        parts.append(out)
    arr = np.empty(len(frame), dtype=object)
    arr[:] = [SEP.join(p) for p in zip(*parts, strict=True)] if parts else []
    return arr


def _enc(x: float) -> float | str:  # JSON has no infinity: Fairlearn's outer thresholds are
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _dec(x: float | str) -> float:
    return float(x)


@dataclass
class GroupThresholds:
    """A fitted per-group threshold rule over the positive class's probability."""

    constraint: str  # demographic_parity or equalized_odds
    columns: list[str]  # the sensitive columns, in order
    bins: dict[str, list[float]]  # numeric columns cut into bands
    classes: list[Any]  # the run's two classes
    positive: Any  # the class whose probability is the score
    rules: dict[str, dict[str, Any]]  # group -> p0, op0, t0, p1, op1, t1[, p_ignore, constant]
    fitted_on: dict[str, Any] = field(default_factory=dict)  # file and rows, for the record

    # ------------------------------------------------------------------ apply
    def groups(self, frame: pd.DataFrame | None = None, sensitive: Any = None,
               n: int | None = None, source: str = "X") -> np.ndarray:
        """Group names of ``n`` rows from ``sensitive`` (a frame, a mapping of columns, a
        list/array for one column or of tuples for several), else from ``frame``'s columns."""
        if sensitive is not None:
            if isinstance(sensitive, pd.DataFrame | dict):
                frame = pd.DataFrame(sensitive)
            else:
                arr = np.asarray(list(sensitive), dtype=object)
                if arr.ndim == 1:
                    arr = arr.reshape(-1, 1) if len(self.columns) == 1 else np.array(
                        [tuple(v) for v in arr], dtype=object)
                if arr.ndim != 2 or arr.shape[1] != len(self.columns):
                    raise DataError(f"sensitive_features: expected one value per row for each "
                                    f"of {', '.join(self.columns)}")
                frame = pd.DataFrame(arr, columns=self.columns)
            source = "sensitive_features"
        if frame is None or any(c not in frame.columns for c in self.columns):
            raise DataError(self.missing_message(source))
        if n is not None and len(frame) != n:
            raise DataError(f"{source}: {len(frame)} sensitive values for {n} rows")
        return group_labels(frame, self.columns, self.bins, source)

    def missing_message(self, source: str = "X") -> str:
        cols = ", ".join(repr(c) for c in self.columns)
        return (f"{source}: this run's predictions are post-processed for fairness "
                f"({self.constraint} over {cols}, fitted by dlforge audit --mitigate), so each "
                f"row needs its sensitive value(s) {cols}: a column of the data file for "
                "dlforge predict, a field of each instance for dlforge serve, "
                "sensitive_features=... (or a column of X) in Python. predict_proba and "
                "dlforge evaluate give the unmitigated model's scores")

    def check_groups(self, groups: np.ndarray, source: str = "sensitive value") -> None:
        """DataError for a group the rule has no thresholds for."""
        unseen = sorted(set(np.asarray(groups, dtype=object).tolist()) - set(self.rules))
        if unseen:
            raise DataError(f"{source} {unseen[0]!r} was not seen when the mitigation was "
                            f"fitted; its groups are: {', '.join(sorted(self.rules))}. Re-run "
                            "dlforge audit --mitigate on data that has this group")

    def probability(self, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The probability of the positive decision for each row (Fairlearn's
        ``_pmf_predict``)."""
        scores = np.asarray(scores, dtype=np.float64)
        groups = np.asarray(groups, dtype=object)
        self.check_groups(groups)
        out = np.zeros(len(scores), dtype=np.float64)
        for g, r in self.rules.items():
            rows = groups == g
            if not rows.any():
                continue
            s = scores[rows]
            p = r["p0"] * _op(r["op0"], _dec(r["t0"]), s) + r["p1"] * _op(r["op1"],
                                                                          _dec(r["t1"]), s)
            if "p_ignore" in r:
                p = r["p_ignore"] * r["constant"] + (1 - r["p_ignore"]) * p
            out[rows] = p
        return out

    def decide(self, scores: np.ndarray, groups: np.ndarray,
               random_state: int | None = None) -> np.ndarray:
        """True where the decision is the positive class (see the module's docstring)."""
        p = self.probability(scores, groups)
        if random_state is not None:
            u = np.random.RandomState(random_state).rand(len(p))
        else:
            u = _row_uniform(np.asarray(scores, dtype=np.float64), groups)
        return p >= u

    def predict_indices(self, proba: np.ndarray, groups: np.ndarray,
                        random_state: int | None = None) -> np.ndarray:
        """Class indices (into ``classes``) from the model's (N, 2) probabilities."""
        pos = self.classes.index(self.positive)
        yes = self.decide(proba[:, pos], groups, random_state)
        return np.where(yes, pos, 1 - pos).astype(np.int64)

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "group_thresholds", "constraint": self.constraint,
                "columns": self.columns, "bins": self.bins, "classes": self.classes,
                "positive": self.positive, "fitted_on": self.fitted_on,
                "rules": {g: {k: _enc(v) if k in ("t0", "t1") else v for k, v in r.items()}
                          for g, r in self.rules.items()}}

    def save(self, path: Path) -> None:
        with atomic_file(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = FILE) -> GroupThresholds:
        try:
            if d.get("kind") != "group_thresholds":
                raise KeyError("kind")
            return cls(constraint=d["constraint"], columns=list(d["columns"]),
                       bins={k: [float(e) for e in v] for k, v in d["bins"].items()},
                       classes=list(d["classes"]), positive=d["positive"],
                       rules={str(g): dict(r) for g, r in d["rules"].items()},
                       fitted_on=dict(d.get("fitted_on", {})))
        except (KeyError, TypeError, AttributeError) as err:
            raise RunDirError(f"{source}: not a valid group-threshold rule ({err})") from None

    @classmethod
    def load(cls, path: Path) -> GroupThresholds:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunDirError(f"{path}: unreadable ({type(err).__name__})") from None
        return cls.from_dict(d, str(path))


def _op(op: str, t: float, s: np.ndarray) -> np.ndarray:
    return s > t if op == ">" else s < t


def _row_uniform(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per row from its score's bits and its group (SplitMix64's
    finaliser): the same row always draws the same number, whatever else is in the batch."""
    bits = np.ascontiguousarray(scores, dtype=np.float64).view(np.uint64)
    salt = np.array([zlib.crc32(str(g).encode("utf-8")) for g in groups], dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = bits ^ (salt * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)
