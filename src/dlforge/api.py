"""File-level operations behind the CLI: train from a config, evaluate, predict, info.

Each one reads files, calls the estimator, and writes its outputs atomically.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge.config import RunConfig, load_config
from dlforge.data.clean import clean_frame
from dlforge.data.io import read_table, require_columns, write_table
from dlforge.data.split import kfold
from dlforge.errors import DataError, RunDirError
from dlforge.estimators import TextClassifier, encode_labels
from dlforge.run import MANIFEST, check_run, load, partial_dir, save_run

__all__ = ["cross_validate", "evaluate", "info", "predict", "train"]

CV_METRICS = ("accuracy", "macro_f1", "roc_auc", "micro_f1", "loss")


def train(cfg: RunConfig | None, out: str | Path, *, resume: bool = False,
          overwrite: bool = False, verbose: int = 1, callbacks: tuple = ()) -> TextClassifier:
    """Train the run ``cfg`` describes into the run directory ``out``.

    Checkpoints go to a hidden ``.NAME.partial`` folder beside ``out`` after every epoch; if
    training is interrupted, ``resume=True`` continues from there (with the saved config) to
    the same result an uninterrupted run gives.
    """
    out = Path(out)
    work = partial_dir(out)
    if resume:
        if not (work / "checkpoints" / "train_state.pt").is_file():
            if (out / MANIFEST).is_file():
                raise RunDirError(f"{out}: this run is complete; there is nothing to resume")
            raise RunDirError(f"{out}: no unfinished run to resume (looked in {work})")
        cfg = load_config(work / "config.yaml")
    elif cfg is None:
        raise ValueError("cfg is required unless resume=True")
    else:
        if out.exists() and not out.is_dir():
            raise RunDirError(f"{out}: exists and is a file; choose another --out folder")
        if out.is_dir() and any(out.iterdir()):
            if not (out / MANIFEST).exists():
                raise RunDirError(f"{out}: exists and is not a dlforge run; choose another "
                                  "--out folder")
            if not overwrite:
                raise RunDirError(f"{out}: a run already exists there; pass --overwrite to "
                                  "replace it or choose another --out folder")
        if work.exists():
            shutil.rmtree(work)
    if cfg.data.path is None:
        raise DataError("data.path: no data file given; use --data FILE or data.path in the "
                        "config")
    df = read_table(cfg.data.path, cfg.data.format)
    require_columns(df, {cfg.text.name: "--text", cfg.output.name: "--label"}, cfg.data.path)
    cv_report = (cross_validate(cfg, cfg.train.cv, frame=df, verbose=verbose)
                 if cfg.train.cv else None)
    clf = TextClassifier(config=cfg, verbose=verbose)
    clf._fit_frame(df, cfg, source=str(cfg.data.path), workdir=work, resume=resume,
                   callbacks=callbacks)
    if cv_report is not None:
        clf.metrics_["cross_validation"] = cv_report
    save_run(clf, out, checkpoints=work / "checkpoints")
    shutil.rmtree(work, ignore_errors=True)
    return clf


def cross_validate(cfg: RunConfig, k: int, *, frame: pd.DataFrame | None = None,
                   verbose: int = 1) -> dict[str, Any]:
    """Score the run ``cfg`` describes by ``k``-fold cross-validation (stratified by label).

    The data is cleaned once; each fold trains a fresh model on the other folds (with its own
    validation split for early stopping) and scores the held-out fold. Returns every fold's
    metrics and their mean and standard deviation.
    """
    source = str(cfg.data.path or "data")
    if frame is None:
        if cfg.data.path is None:
            raise DataError("data.path: no data file given for cross-validation")
        frame = read_table(cfg.data.path, cfg.data.format)
        require_columns(frame, {cfg.text.name: "--text", cfg.output.name: "--label"}, source)
    text, label = cfg.text.name, cfg.output.name
    df, _ = clean_frame(frame, text, label, cfg.data.clean, source=source)
    _, _, strata = encode_labels(df, cfg, source)
    try:
        folds = kfold(strata, k, cfg.data.seed)
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    rows = []
    for i, (tr, te) in enumerate(folds, start=1):
        clf = TextClassifier(config=cfg, verbose=0)
        clf._fit_frame(df.iloc[tr], cfg, source=f"{source} (fold {i})")
        m = clf.evaluate(df[text].iloc[te], df[label].iloc[te])
        row = {key: m[key] for key in CV_METRICS if m.get(key) is not None}
        row["baseline_accuracy"] = m["baseline"]["accuracy"]
        rows.append(row)
        if verbose:
            print(f"cross-validation fold {i}/{k}: " + ", ".join(
                f"{key} {v:.4f}" for key, v in row.items()), file=sys.stderr, flush=True)
    keys = list(rows[0])
    return {
        "k": k,
        "seed": cfg.data.seed,
        "folds": rows,
        "mean": {key: float(np.mean([r[key] for r in rows])) for key in keys},
        "std": {key: float(np.std([r[key] for r in rows], ddof=1)) for key in keys},
    }


def _load_eval_frame(clf: TextClassifier, data: str | Path, text: str | None,
                     label: str | None) -> tuple[pd.DataFrame, str]:
    df = read_table(data)
    text_col = text or clf.config_.text.name
    cols = {text_col: "--text"}
    if label is not None:
        cols[label] = "--label"
    require_columns(df, cols, str(data))
    return df, text_col


def evaluate(run_dir: str | Path, data: str | Path, *, text: str | None = None,
             label: str | None = None) -> dict[str, Any]:
    """Score a run on a labelled file: the same metrics as training, with the baseline."""
    clf = load(run_dir)
    label = label or clf.config_.output.name
    df, text_col = _load_eval_frame(clf, data, text, label)
    clean = clf.config_.data.clean.model_copy(update={"drop_duplicates": False,
                                                      "drop_missing_label": True})
    df, report = clean_frame(df, text_col, label, clean, source=str(data))
    metrics = clf.evaluate(df[text_col], df[label])
    metrics["cleaning"] = report
    return metrics


def predict(run_dir: str | Path, data: str | Path, out: str | Path, *,
            text: str | None = None) -> pd.DataFrame:
    """Predict every row of ``data``; write its columns plus ``prediction`` and one
    ``proba_<class>`` column per class to ``out`` (format from its extension)."""
    clf = load(run_dir)
    df, text_col = _load_eval_frame(clf, data, text, None)
    proba = clf.predict_proba(df[text_col])
    pred = clf.decode(proba)
    result = df.copy()
    kind, classes = clf.labels_.kind, clf.labels_.classes
    sep = clf.config_.output.separator
    result["prediction"] = [sep.join(map(str, p)) for p in pred] if kind == "multilabel" else pred
    for j, c in enumerate(classes):
        result[f"proba_{c}"] = proba[:, j]
    write_table(result, Path(out))
    return result


def info(run_dir: str | Path) -> dict[str, Any]:
    """What a run is: task, model, size, data, metrics, files."""
    path = Path(run_dir)
    manifest = check_run(path)
    cfg = load_config(path / "config.yaml")
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", framework="pt") as fh:
        n_params = sum(_prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118 (safe_open)
    return {
        "path": str(path),
        "task": manifest["task"],
        "created": manifest["created"],
        "dlforge_version": manifest["dlforge_version"],
        "model": cfg.model.model_dump(),
        "parameters": n_params,
        "labels": json.loads((path / "labels.json").read_text(encoding="utf-8")),
        "data": json.loads((path / "data.json").read_text(encoding="utf-8")),
        "metrics": json.loads((path / "metrics.json").read_text(encoding="utf-8")),
        "files": sorted(manifest["files"]),
    }


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
