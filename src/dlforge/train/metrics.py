"""Classification metrics (scikit-learn underneath) and the plots that show them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
)

from dlforge.errors import ConfigError

__all__ = ["CLASSIFICATION_MONITORS", "REGRESSION_MONITORS", "baseline_metrics",
           "blend_logits", "choose_threshold", "class_weights", "classification_metrics",
           "majority_label",
           "mean_baseline_metrics", "monitor_mode", "plot_confusion", "plot_history",
           "predict_indices", "prior_logits", "probabilities", "regression_metrics",
           "resolve_monitor"]


def probabilities(kind: str, logits: np.ndarray) -> np.ndarray:
    """Logits to probabilities: (N, 2) for binary, (N, C) softmax or per-class sigmoid."""
    from scipy.special import expit  # the logistic function without overflow warnings

    logits = logits.astype(np.float64)
    if kind == "binary":
        p1 = expit(logits[:, 0])
        return np.stack([1.0 - p1, p1], axis=1)
    if kind == "multilabel":
        return expit(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def blend_logits(kind: str, a: np.ndarray, b: np.ndarray, w: float = 0.5) -> np.ndarray:
    """Two models' logits averaged as predictions, ``b`` with weight ``w``: the weighted mean
    of their probabilities (binary, multi-class, multi-label) or numbers (numeric), back as
    logits."""
    if kind == "numeric":
        return ((1 - w) * a + w * b).astype(np.float32)
    p = (1 - w) * probabilities(kind, a) + w * probabilities(kind, b)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    if kind == "binary":
        return np.log(p[:, 1:2] / p[:, 0:1]).astype(np.float32)
    if kind == "multilabel":
        return np.log(p / (1 - p)).astype(np.float32)
    return np.log(p).astype(np.float32)


def predict_indices(kind: str, proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if kind == "multilabel":
        return (proba >= threshold).astype(np.int64)
    if kind == "binary":
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(axis=1)


def classification_metrics(kind: str, y_true: np.ndarray, proba: np.ndarray,
                           classes: list[Any], full: bool = True,
                           threshold: float = 0.5) -> dict[str, Any]:
    """accuracy, macro-F1, ROC-AUC (binary) and, with ``full``, per-class precision/recall/F1
    and the confusion matrix. For multi-label, accuracy is the exact-match (subset) accuracy.
    ``threshold``: the binary decision threshold."""
    y_pred = predict_indices(kind, proba, threshold if kind == "binary" else 0.5)
    y_true = np.asarray(y_true)
    labels = list(range(len(classes)))
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0,
                                   **({} if kind == "multilabel" else {"labels": labels}))),
    }
    if kind == "binary":
        out["roc_auc"] = (float(roc_auc_score(y_true, proba[:, 1]))
                          if len(np.unique(y_true)) == 2 else None)
    if kind == "multilabel":
        out["micro_f1"] = float(f1_score(y_true, y_pred, average="micro", zero_division=0))
    if not full:
        return out
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, zero_division=0, **({} if kind == "multilabel" else {"labels": labels}))
    out["per_class"] = {
        str(c): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                 "support": int(s[i])} for i, c in enumerate(classes)}
    if kind != "multilabel":
        out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, metric: str) -> float:
    """The binary decision threshold (0.05 to 0.95 in steps of 0.01) that scores best on
    ``metric`` (accuracy or macro_f1) for these validation rows; among equal scores the one
    nearest 0.5, so a threshold moves only when it decides more rows right. Other metrics
    do not depend on a threshold: 0.5."""
    if metric not in ("accuracy", "macro_f1") or len(np.unique(y_true)) < 2:
        return 0.5
    y_true = np.asarray(y_true)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    pred = proba[:, 1][None, :] >= grid[:, None]
    if metric == "accuracy":
        scores = (pred == y_true[None, :]).mean(axis=1)
    else:
        scores = np.array([f1_score(y_true, p, average="macro", zero_division=0) for p in pred])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def class_weights(kind: str, y_train: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Balanced class weights, ``n / (classes x count)`` (scikit-learn's "balanced"), for a
    binary or multi-class target; None otherwise."""
    if kind not in ("binary", "category"):
        return None
    n = max(n_classes, 2)
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n).astype(np.float64)
    return (len(y_train) / (n * np.maximum(counts, 1.0))).astype(np.float32)


def majority_label(kind: str, y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """What the majority-class baseline predicts: the most frequent training class as a
    1-element array, or for multi-label each label's majority value (0/1 per class)."""
    if kind == "multilabel":
        return (np.asarray(y_train).mean(axis=0) >= 0.5).astype(np.int64)
    return np.array([int(np.bincount(np.asarray(y_train), minlength=n_classes).argmax())])


def prior_logits(kind: str, y_train: np.ndarray, n_classes: int) -> np.ndarray | None:
    """The training labels' prior as the output layer's logits: log-odds of the positive
    class (binary) or of each label (multi-label), log class frequencies (multi-class); None
    for numbers (their standardised mean is already 0)."""
    y = np.asarray(y_train)
    if kind == "numeric" or len(y) == 0:
        return None
    if kind == "category":
        freq = np.bincount(y, minlength=n_classes) / len(y)
        return np.log(np.clip(freq, 1e-4, 1.0)).astype(np.float32)
    p = np.clip(y.mean(axis=0) if kind == "multilabel" else np.array([y.mean()]), 1e-4,
                1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32)


def baseline_metrics(kind: str, majority: np.ndarray, y_eval: np.ndarray,
                     classes: list[Any]) -> dict[str, Any]:
    """Scores of always predicting ``majority`` (from :func:`majority_label`) on ``y_eval``."""
    majority = np.asarray(majority)
    if kind == "multilabel":
        y_pred = np.tile(majority, (len(y_eval), 1))
        name = [classes[j] for j in np.flatnonzero(majority)]
    else:
        y_pred = np.full(len(y_eval), int(majority[0]))
        name = classes[int(majority[0])]
    kw = {} if kind == "multilabel" else {"labels": list(range(len(classes)))}
    return {
        "strategy": "majority class",
        "predicts": name,
        "accuracy": float(accuracy_score(y_eval, y_pred)),
        "macro_f1": float(f1_score(y_eval, y_pred, average="macro", zero_division=0, **kw)),
    }


CLASSIFICATION_MONITORS = ("loss", "accuracy", "macro_f1", "roc_auc")
REGRESSION_MONITORS = ("loss", "mae", "rmse", "r2")


def resolve_monitor(monitor: str, kind: str) -> str:
    """The metric early stopping watches: ``auto`` resolved for the output's kind (ConfigError
    for a metric that does not score it)."""
    if kind == "numeric":
        if monitor == "auto":
            return "rmse"
        if monitor not in REGRESSION_MONITORS:
            raise ConfigError(f"train.monitor: {monitor!r} is a classification metric; a "
                              f"numeric output monitors one of {', '.join(REGRESSION_MONITORS)}")
        return monitor
    if monitor == "auto":
        return "macro_f1" if kind == "multilabel" else "accuracy"
    if monitor not in CLASSIFICATION_MONITORS:
        raise ConfigError(f"train.monitor: {monitor!r} is a regression metric; a {kind} output "
                          f"monitors one of {', '.join(CLASSIFICATION_MONITORS)}")
    return monitor



def monitor_mode(metric: str) -> str:
    return "min" if metric in ("loss", "mae", "rmse", "smape") else "max"


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R² in the output column's own units."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return {
        "n": int(len(y_true)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
    }


def mean_baseline_metrics(mean: float, y_eval: np.ndarray) -> dict[str, Any]:
    """Scores of always predicting the training mean on ``y_eval``."""
    out = regression_metrics(y_eval, np.full(len(y_eval), mean))
    return {"strategy": "training mean", "predicts": float(mean),
            **{k: v for k, v in out.items() if k != "n"}}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Loss (train and validation) and the monitored metric per epoch, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    if all("val_loss" in r for r in rows):
        a.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="Loss")
    a.legend()
    key = f"val_{metric}"
    b.plot(epochs, [r.get(key) for r in rows], "o-", color="C2")
    b.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric}")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], classes: list[Any], path: Path,
                   title: str = "Confusion matrix") -> None:
    plt = _pyplot()
    m = np.asarray(matrix)
    size = max(3.5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
