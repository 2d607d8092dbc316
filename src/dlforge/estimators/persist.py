"""An estimator into a run directory: config, weights, fitted state, metrics, plots and the
model card, sealed with its manifest and renamed into place (see :mod:`dlforge.run`).
``dlforge.load`` (:mod:`dlforge.estimators.load`) reads it back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlforge.audit.card import write_card
from dlforge.config import dump_config
from dlforge.data.frames import task_name
from dlforge.data.rows import FILE as ROWS
from dlforge.run import history_csv, new_run_dir, save_weights, seal_run, to_json
from dlforge.train.metrics import plot_confusion, plot_history
from dlforge.train.thresholds import FILE as POSTPROCESS

if TYPE_CHECKING:
    from dlforge.estimators.base import DeepModel

__all__ = ["save_run"]


def save_run(clf: DeepModel, path: Path, checkpoints: Path | None = None) -> Path:
    """Write ``clf`` as a run directory at ``path`` (replacing an older run there)."""
    path = Path(path)
    tmp = new_run_dir(path)
    try:
        dump_config(clf.config_, tmp / "config.yaml")
        if clf.model_ is not None:  # the simple baseline writes model.skops instead
            save_weights(clf.model_, tmp)
        clf._save_state(tmp)
        if getattr(clf, "postprocess_", None) is not None:
            clf.postprocess_.save(tmp / POSTPROCESS)
        (tmp / "metrics.json").write_text(to_json(clf.metrics_), encoding="utf-8")
        (tmp / "data.json").write_text(to_json(clf.data_report_), encoding="utf-8")
        rows = getattr(clf, "fit_rows_", None)  # for dlforge evaluate's overlap warning
        if rows is not None:
            np.save(tmp / ROWS, rows, allow_pickle=False)
        if getattr(clf, "privacy_", None):  # trained with DP-SGD: the budget spent
            (tmp / "privacy.json").write_text(to_json(clf.privacy_), encoding="utf-8")
        (tmp / "history.csv").write_text(history_csv(clf.history_), encoding="utf-8")
        (tmp / "plots").mkdir()
        if clf.history_:
            plot_history(clf.history_, clf.metrics_["monitor"], tmp / "plots" / "curves.png")
        scored = clf.metrics_.get("validation") or clf.metrics_.get("test") or {}
        cm = scored.get("confusion_matrix")
        if cm is not None:
            split = "validation" if clf.metrics_.get("validation") else "test"
            plot_confusion(cm, clf.labels_.classes, tmp / "plots" / "confusion_matrix.png",
                           f"Confusion matrix ({split})")
        if checkpoints is not None and checkpoints.is_dir():
            shutil.copytree(checkpoints, tmp / "checkpoints")
        seal_run(tmp, path, task_name(clf.config_, clf.labels_.kind), type(clf).__name__,
                 clf.config_.model.name, documents=write_card)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path

