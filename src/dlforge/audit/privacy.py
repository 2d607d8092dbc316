"""Does the model give away who was in its training data? A membership-inference audit.

The loss-threshold attack (Yeom et al., 2018, "Privacy Risk in Machine Learning"): a model
usually fits the rows it was trained on better than rows it never saw, so an attacker who
guesses "member" whenever a row's loss is below a threshold beats chance on an over-fitted
model. Sweeping the threshold gives a ROC curve; we report its AUC (0.5: the attacker learns
nothing) and the true-positive rate at a 1% false-positive rate (Carlini et al., 2022,
"Membership Inference Attacks From First Principles": what matters is confident hits on a
few rows, not average accuracy). Differentially private training bounds what any such attack
can achieve.

Members are the run's training rows, non-members its held-out (validation and test) rows:
the split is rebuilt from the data file exactly as training made it (same cleaning, labels,
seed) and checked against the split sizes the run recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

from dlforge._atomic import atomic_file
from dlforge.audit.card import write_card
from dlforge.data.clean import clean_frame
from dlforge.data.frames import encode_labels, read_data
from dlforge.data.split import split_rows
from dlforge.errors import DataError, RunDirError

if TYPE_CHECKING:  # the estimators sit above this layer: they hand us a fitted one
    from dlforge.estimators.base import DeepModel

__all__ = ["membership_attack", "privacy_audit", "recorded_split", "row_losses"]

TARGET_FPR = 0.01


def row_losses(kind: str, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's training loss (the loss :func:`dlforge.train.trainer.loss_fn` averages):
    binary and multi-label cross-entropy, softmax cross-entropy, squared error."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets))
    if kind == "numeric":
        out = z[:, 0] if y.dim() == 1 else z
        err = (out - y.float()) ** 2
        return (err if err.dim() == 1 else err.mean(dim=1)).numpy()
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(z[:, 0], y.float(), reduction="none").numpy()
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(z, y.float(), reduction="none").mean(1).numpy()
    return F.cross_entropy(z, y.long(), reduction="none").numpy()


def _losses(model: DeepModel, frame: pd.DataFrame, what: str) -> np.ndarray:
    cfg = model.config_
    col = cfg.output.name
    if col not in frame.columns:
        raise DataError(f"{what}: the output column {col!r} is missing; the attack needs each "
                        "row's label")
    if len(frame) == 0:
        raise DataError(f"{what}: no rows; the attack needs members and non-members")
    targets = model.labels_.encode(frame[col].tolist(), cfg.output.separator, source=what)
    return row_losses(model.labels_.kind, model._logits_frame(frame, what), targets)


def membership_attack(model: DeepModel, run_dir: str | Path, members: pd.DataFrame,
                      non_members: pd.DataFrame, *, save: bool = True,
                      source: str | None = None) -> dict[str, Any]:
    """Run the loss-threshold attack on ``model``, the fitted estimator of the run
    ``run_dir``: ``members`` are rows it was trained on,
    ``non_members`` rows it never saw (each with the run's input and output columns).
    Returns (and with ``save`` writes to ``RUN_DIR/audit/privacy.json``, atomically) the
    attack's AUC, its TPR at 1% FPR, its best advantage (TPR - FPR) and the mean losses."""
    run_dir = Path(run_dir)
    return _attack(_check(model, run_dir), run_dir, members, non_members, save, source)


def _check(model: DeepModel, run_dir: Path) -> DeepModel:
    if model.config_.forecast is not None:
        raise RunDirError(f"{run_dir}: the membership audit is for classifiers and regressors; "
                          "a forecasting run's training windows overlap its held-out ones")
    return model


def _attack(model: DeepModel, run_dir: Path, members: pd.DataFrame,
            non_members: pd.DataFrame, save: bool, source: str | None) -> dict[str, Any]:
    m_loss = _losses(model, members, "members")
    n_loss = _losses(model, non_members, "non-members")
    truth = np.r_[np.ones(len(m_loss)), np.zeros(len(n_loss))]
    score = -np.r_[m_loss, n_loss]  # lower loss: more likely a member
    score = np.nan_to_num(score, nan=-np.inf)
    fpr, tpr, _ = roc_curve(truth, score)
    report: dict[str, Any] = {
        "attack": "loss threshold (Yeom et al. 2018): a row is called a member when its loss "
                  "is below a threshold; every threshold swept",
        "auc": float(roc_auc_score(truth, score)),
        "tpr_at_1pct_fpr": float(tpr[fpr <= TARGET_FPR].max()),
        "advantage": float(np.max(tpr - fpr)),
        "members": len(m_loss),
        "non_members": len(n_loss),
        "member_loss_mean": float(np.mean(m_loss)),
        "non_member_loss_mean": float(np.mean(n_loss)),
        "differential_privacy": getattr(model, "privacy_", None),
    }
    if source is not None:
        report["data"] = source
    if len(n_loss) < 1 / TARGET_FPR:
        report["note"] = (f"only {len(n_loss)} non-members: the smallest false-positive rate "
                          f"measurable is {1 / len(n_loss):.1%}, so the TPR at 1% FPR is the TPR "
                          "at no false positive at all")
    if save:
        out = run_dir / "audit" / "privacy.json"
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_card(run_dir)  # the card's Privacy section shows the attack
    return report


def recorded_split(model: DeepModel, run_dir: str | Path, data: str | Path | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, non-members) of ``model``, the fitted estimator of the run ``run_dir``: its
    training rows and its held-out (validation and
    test) rows, rebuilt from ``data`` (default: the run's ``data.path``) with the run's
    cleaning, labels and split seed, and checked against the split sizes it recorded."""
    run_dir = Path(run_dir)
    return _split(_check(model, run_dir), run_dir, data)


def _split(model: DeepModel, run_dir: Path, data: str | Path | None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = model.config_
    path = data if data is not None else cfg.data.path
    if path is None:
        raise DataError(f"{run_dir}: the run does not record its data file (it was trained from "
                        "Python); pass the training data with --data FILE")
    if not Path(path).exists():
        raise DataError(f"{path}: the run's training data is not found; pass it with --data "
                        "FILE")
    df = read_data(cfg, path)
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, _ = clean_frame(df, texts, cfg.output.name, cfg.data.clean, source=str(path),
                        key_cols=[i.name for i in cfg.inputs])
    _, _, strata = encode_labels(df, cfg, str(path))
    train_idx, val_idx, test_idx = split_rows(strata, cfg)
    recorded = model.data_report_.get("splits", {})
    got = {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)}
    if recorded and any(recorded.get(k) != v for k, v in got.items()):
        raise DataError(f"{path}: does not give the split the run was trained on ({got['train']}"
                        f" train / {got['validation'] + got['test']} held-out rows here, "
                        f"{recorded.get('train')} / "
                        f"{recorded.get('validation', 0) + recorded.get('test', 0)} recorded); "
                        "pass the file the run was trained on with --data")
    held_out = np.sort(np.r_[val_idx, test_idx])
    if len(held_out) == 0:
        raise DataError(f"{run_dir}: the run held out no rows (validation_split and test_split "
                        "are 0), so there are no known non-members to attack with")
    return df.iloc[train_idx].reset_index(drop=True), df.iloc[held_out].reset_index(drop=True)


def privacy_audit(model: DeepModel, run_dir: str | Path, data: str | Path | None = None
                  ) -> dict[str, Any]:
    """``dlforge audit RUN_DIR --privacy``: the membership attack on the run's own split
    (``model`` is the run's fitted estimator)."""
    run_dir = Path(run_dir)
    model = _check(model, run_dir)
    members, non_members = _split(model, run_dir, data)
    source = data if data is not None else model.config_.data.path
    return _attack(model, run_dir, members, non_members, save=True, source=str(source))
