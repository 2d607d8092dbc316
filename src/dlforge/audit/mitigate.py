"""Fitting the fairness mitigation: Fairlearn's ThresholdOptimizer on a model's scores.

Post-processing (Hardt et al. 2016) works for any model, ours included (they take no sample
weights): it picks, per group, thresholds on the positive class's probability — randomised
between two thresholds where needed — that satisfy demographic parity or equalized odds on
the given data at the best accuracy. What it fitted is copied into a
:class:`~dlforge.train.thresholds.GroupThresholds` (JSON, no pickle), which predict and serve apply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from dlforge._extras import require
from dlforge.errors import DataError
from dlforge.train.thresholds import GroupThresholds

__all__ = ["fit_thresholds", "threshold_optimizer"]


class _Scores(BaseEstimator):
    """A prefit "model" whose prediction is its one input column: the scores themselves, so
    the optimizer never calls our network and the rule depends only on the scores."""

    def fit(self, X: Any = None, y: Any = None) -> _Scores:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, 0]


def threshold_optimizer(scores: np.ndarray, y: np.ndarray, groups: np.ndarray,
                        constraint: str) -> Any:
    """Fairlearn's ThresholdOptimizer fitted on (scores, 0/1 labels, group per row); its
    ``predict`` takes ``scores.reshape(-1, 1)``."""
    require("fairlearn", "audit", "dlforge audit --mitigate")
    from fairlearn.postprocessing import ThresholdOptimizer

    y = np.asarray(y).astype(int)
    groups = np.asarray(groups, dtype=object)
    for g in sorted(set(groups.tolist())):
        labels = set(y[groups == g].tolist())
        if len(labels) < 2:
            raise DataError(f"--mitigate: group {g!r} has only "
                            f"{'positive' if labels == {1} else 'negative'} labels in this data; "
                            "the thresholds of a group are fitted on both. Use more data or "
                            "coarser groups (--bins)")
    opt = ThresholdOptimizer(estimator=_Scores(), constraints=constraint,
                             objective="accuracy_score", prefit=True, predict_method="predict")
    opt.fit(np.asarray(scores, dtype=np.float64).reshape(-1, 1), y, sensitive_features=groups)
    return opt


def fit_thresholds(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, constraint: str, *,
                   columns: list[str], bins: dict[str, list[float]], classes: list[Any],
                   positive: Any, fitted_on: dict[str, Any] | None = None) -> GroupThresholds:
    """The ThresholdOptimizer's fitted rule as a :class:`GroupThresholds`."""
    opt = threshold_optimizer(scores, y, groups, constraint)
    rules = {}
    for g, b in opt.interpolated_thresholder_.interpolation_dict.items():
        r = {"p0": float(b.p0), "op0": b.operation0.operator,
             "t0": float(b.operation0.threshold), "p1": float(b.p1),
             "op1": b.operation1.operator, "t1": float(b.operation1.threshold)}
        if "p_ignore" in b:
            r["p_ignore"] = float(b.p_ignore)
            r["constant"] = float(b.prediction_constant)
        rules[str(g)] = r
    return GroupThresholds(constraint=constraint, columns=list(columns), bins=dict(bins),
                           classes=list(classes), positive=positive, rules=rules,
                           fitted_on=dict(fitted_on or {}))
