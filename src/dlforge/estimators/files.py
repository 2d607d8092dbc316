"""File-level operations behind the CLI: train from a config, evaluate, predict, info.

Each one reads files, calls the estimator, and writes its outputs atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors import safe_open

from dlforge.config import RunConfig, load_config
from dlforge.data.clean import clean_frame
from dlforge.data.frames import output_kind, read_data
from dlforge.data.io import read_table, require_columns, write_table
from dlforge.data.pairs import read_pairs
from dlforge.data.rows import load_fingerprints, overlap
from dlforge.errors import DataError, DlforgeError, RunDirError
from dlforge.estimators.audio import AudioClassifier
from dlforge.estimators.base import DeepModel
from dlforge.estimators.forecast import Forecaster, cross_validate_series
from dlforge.estimators.image import ImageClassifier
from dlforge.estimators.load import load_deep_model
from dlforge.estimators.persist import save_run
from dlforge.estimators.select import cross_validate_frame
from dlforge.estimators.seq2seq import Seq2Seq
from dlforge.estimators.sequence import SequenceModel
from dlforge.estimators.tabular import TabularClassifier, TabularRegressor
from dlforge.estimators.text import TextClassifier
from dlforge.run import (
    FINETUNE_TASK,
    LM_TASK,
    MANIFEST,
    SEQ2SEQ_TASK,
    check_out,
    check_run,
    partial_dir,
    read_manifest,
)
from dlforge.train.distributed import is_main_process
from dlforge.train.metrics import probabilities
from dlforge.train.tracking import Tracker

__all__ = ["cross_validate", "estimator_for", "evaluate", "info", "predict", "preflight",
           "resumable", "train"]


def estimator_for(cfg: RunConfig, output_kind: str) -> type[DeepModel]:
    """The estimator class a config trains: by its inputs, and the output's kind."""
    if cfg.forecast is not None:
        return Forecaster
    kinds = {i.type for i in cfg.inputs}
    if output_kind == "numeric":
        return TabularRegressor
    if kinds == {"text"}:
        return TextClassifier
    if kinds == {"image"}:
        return ImageClassifier
    if kinds == {"audio"}:
        return AudioClassifier
    if kinds == {"sequence"}:
        return SequenceModel
    return TabularClassifier


def train(cfg: RunConfig | None, out: str | Path, *, resume: bool = False,
          overwrite: bool = False, verbose: int = 1, callbacks: tuple = ()) -> DeepModel:
    """Train the run ``cfg`` describes into the run directory ``out``.

    Checkpoints go to a hidden ``.NAME.partial`` folder beside ``out`` after every epoch; if
    training is interrupted, ``resume=True`` continues from there (with the saved config) to
    the same result an uninterrupted run gives.

    With ``cfg.tracking`` (``--track``) the run is logged to MLflow and/or TensorBoard, named
    after ``out``: every epoch's metrics, then the resolved config, the final metrics and the
    run directory's files (:mod:`dlforge.train.tracking`). A Tracker among ``callbacks`` is
    the caller's (``dlforge tune`` nests the best run under its study) and is used instead.
    """
    out = Path(out)
    cfg = preflight(cfg, out, resume=resume, overwrite=overwrite)
    if (cfg.tracking is None or not is_main_process()
            or any(isinstance(c, Tracker) for c in callbacks)):
        return _train(cfg, out, resume, verbose, tuple(callbacks))
    with Tracker.open(cfg, out.name, verbose=verbose) as tracker:
        clf = _train(cfg, out, resume, verbose, (*callbacks, tracker))
        tracker.finish(clf.config_, clf.metrics_, out)
    return clf


def _train(cfg: RunConfig, out: Path, resume: bool, verbose: int, callbacks: tuple
           ) -> DeepModel:
    """:func:`train` once ``out`` is checked (and the tracker, if any, started)."""
    work = partial_dir(out)
    if not resume and work.exists() and is_main_process():
        shutil.rmtree(work)  # a stale unfinished run; under torchrun rank 0 alone clears it
    df = read_data(cfg)
    cv_report = (cross_validate(cfg, cfg.train.cv, frame=df, verbose=verbose)
                 if cfg.train.cv else None)
    cls = estimator_for(cfg, output_kind(cfg, df, str(cfg.data.path)))
    clf = cls(config=cfg, verbose=verbose)
    try:
        clf._fit_frame(df, cfg, source=str(cfg.data.path), workdir=work, resume=resume,
                       callbacks=callbacks)
    except (DlforgeError, KeyboardInterrupt):
        if not resume and not resumable(out) and is_main_process():
            shutil.rmtree(work, ignore_errors=True)  # no epoch finished: nothing to resume
        raise
    if cv_report is not None:
        clf.metrics_["cross_validation"] = cv_report
    if is_main_process():  # under torchrun, one process writes the run
        save_run(clf, out, checkpoints=work / "checkpoints")
        shutil.rmtree(work, ignore_errors=True)
    return clf


def resumable(out: str | Path) -> bool:
    """Whether ``dlforge train --resume out`` has a checkpoint to continue from (one is
    written at the end of every epoch)."""
    return (partial_dir(Path(out)) / "checkpoints" / "train_state.pt").is_file()


def preflight(cfg: RunConfig | None, out: Path, *, resume: bool = False,
              overwrite: bool = False) -> RunConfig:
    """Check that a run can be written to ``out`` (and resumed from it); return the config to
    train (the saved one when resuming). Writes nothing."""
    work = partial_dir(out)
    if resume:
        if not resumable(out):
            if (out / MANIFEST).is_file():
                raise RunDirError(f"{out}: this run is complete; there is nothing to resume")
            raise RunDirError(f"{out}: no unfinished run to resume (looked in {work})")
        return load_config(work / "config.yaml")
    if cfg is None:
        raise ValueError("cfg is required unless resume=True")
    check_out(out, overwrite)
    if cfg.data.path is None:
        raise DataError("data.path: no data file given; use --data FILE or data.path in the "
                        "config")
    return cfg


def cross_validate(cfg: RunConfig, k: int, *, frame: pd.DataFrame | None = None,
                   verbose: int = 1) -> dict[str, Any]:
    """Score the run ``cfg`` describes by ``k``-fold cross-validation (stratified by label
    for classification; expanding windows in time for forecasting).

    The data is cleaned once; each fold trains a fresh model on the other folds (with its own
    validation split for early stopping) and scores the held-out fold. Returns every fold's
    metrics and their mean and standard deviation.
    """
    source = str(cfg.data.path or "data")
    if frame is None:
        if cfg.data.path is None:
            raise DataError("data.path: no data file given for cross-validation")
        frame = read_data(cfg)
    if cfg.forecast is not None:
        return cross_validate_series(cfg, k, frame, source, verbose)
    return cross_validate_frame(lambda kind: estimator_for(cfg, kind), cfg, k, frame, source,
                                verbose)


def _load_eval_frame(clf: DeepModel, data: str | Path, text: str | None,
                     label: str | None) -> pd.DataFrame:
    """The file to score, with a renamed text column (``text``) and output (``label``)
    brought to the names the run was trained with."""
    cfg = clf.config_
    renames = {}
    if text is not None and text != cfg.text.name:
        renames[text] = cfg.text.name
    if label is not None and label != cfg.output.name:
        renames[label] = cfg.output.name
    return read_data(cfg, data, labelled=label is not None, renames=renames)


def evaluate(run_dir: str | Path, data: str | Path, *, text: str | None = None,
             label: str | None = None) -> dict[str, Any]:
    """Score a run on a labelled file: the same metrics as training, with the baseline."""
    if _task(run_dir) == SEQ2SEQ_TASK:  # text to text: BLEU, chrF, exact match
        return evaluate_seq2seq(run_dir, data, source=text, target=label)
    clf = load_deep_model(run_dir, "dlforge evaluate")
    cfg = clf.config_
    if cfg.forecast is not None:
        return clf.evaluate_frame(read_data(cfg, data), str(data))
    df = _load_eval_frame(clf, data, text, label or cfg.output.name)
    clean = cfg.data.clean.model_copy(update={"drop_duplicates": False,
                                              "drop_missing_label": True})
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, report = clean_frame(df, texts, cfg.output.name, clean, source=str(data))
    metrics = clf.evaluate_frame(df, str(data))
    metrics["cleaning"] = report
    fitted = load_fingerprints(Path(run_dir))
    if fitted is not None:  # rows the model was fitted on score higher than new ones
        metrics["overlap"] = {"rows": overlap(df, [i.name for i in cfg.inputs], fitted),
                              "of": len(df)}
    return metrics


def predict(run_dir: str | Path, data: str | Path, out: str | Path, *,
            text: str | None = None) -> pd.DataFrame:
    """Predict every row of ``data``; write its columns plus ``prediction`` (and for
    classification one ``proba_<class>`` column per class) to ``out`` (format from its
    extension). Image arrays are not written back; image paths are."""
    if _task(run_dir) == SEQ2SEQ_TASK:
        return predict_seq2seq(run_dir, data, out, source=text)
    clf = load_deep_model(run_dir, "dlforge predict")
    if clf.config_.forecast is not None:
        forecast = clf.predict(read_data(clf.config_, data, labelled=True))
        write_table(forecast, Path(out))
        return forecast
    df = _load_eval_frame(clf, data, text, None)
    logits = clf._logits_frame(df, str(data))
    result = df.copy()
    for inp in clf.config_.inputs:
        if inp.type == "image" and not all(isinstance(v, str) for v in result[inp.name]):
            result = result.drop(columns=inp.name)
    target = clf.labels_
    if target.kind == "numeric":
        result["prediction"] = target.decode(logits)
    else:
        proba = probabilities(target.kind, logits)
        # A run mitigated by dlforge audit --mitigate decides per group of its sensitive
        # column(s), which the file must then hold (DataError naming them if not).
        pred = clf.decode(proba, clf.sensitive_groups(df, None, len(df), str(data)))
        sep = clf.config_.output.separator
        result["prediction"] = ([sep.join(map(str, p)) for p in pred]
                                if target.kind == "multilabel" else pred)
        for j, c in enumerate(target.classes):
            result[f"proba_{c}"] = proba[:, j]
    write_table(result, Path(out))
    return result


def info(run_dir: str | Path) -> dict[str, Any]:
    """What a run is: task, model, size, data, metrics, files."""
    path = Path(run_dir)
    manifest = check_run(path)
    n_params = 0
    if "model.safetensors" in manifest["files"]:  # not in the simple baseline's run
        with safe_open(path / "model.safetensors", framework="pt") as fh:
            n_params = sum(_prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118 (safe_open)
    if manifest["task"] == FINETUNE_TASK:  # a pretrained causal LM's fine-tune
        read = lambda name: json.loads((path / name).read_text(encoding="utf-8"))  # noqa: E731
        return {"path": str(path), "task": FINETUNE_TASK, "created": manifest["created"],
                "dlforge_version": manifest["dlforge_version"], "estimator": "PretrainedLM",
                "model": {"name": manifest.get("model"), "base": read("base.json")},
                "parameters": read("metrics.json").get("parameters", 0),
                "metrics": read("metrics.json"), "files": sorted(manifest["files"])}
    if manifest["task"] == SEQ2SEQ_TASK:
        read = lambda name: json.loads((path / name).read_text(encoding="utf-8"))  # noqa: E731
        metrics = read("metrics.json")
        return {"path": str(path), "task": SEQ2SEQ_TASK, "created": manifest["created"],
                "dlforge_version": manifest["dlforge_version"], "estimator": "Seq2Seq",
                "model": {"name": manifest.get("model"),
                          **(read("model.json") if (path / "model.json").is_file() else {})},
                "parameters": n_params or metrics.get("parameters", 0),
                "data": read("data.json"), "metrics": metrics,
                "files": sorted(manifest["files"])}
    if manifest["task"] == LM_TASK:
        read = lambda name: json.loads((path / name).read_text(encoding="utf-8"))  # noqa: E731
        return {"path": str(path), "task": LM_TASK, "created": manifest["created"],
                "dlforge_version": manifest["dlforge_version"], "estimator": "LanguageModel",
                "model": {"name": "gpt", **read("model.json")}, "parameters": n_params,
                "data": read("data.json"), "metrics": read("metrics.json"),
                "privacy": _privacy(path), "files": sorted(manifest["files"])}
    cfg = load_config(path / "config.yaml")
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    return {
        "path": str(path),
        "task": manifest["task"],
        "created": manifest["created"],
        "dlforge_version": manifest["dlforge_version"],
        "model": cfg.model.model_dump(),
        "parameters": n_params or metrics.get("parameters", 0),
        "baseline_weight": cfg.train.baseline_weight,  # the simple baseline's share
        "estimator": manifest.get("estimator"),
        "inputs": [{"name": i.name, "type": i.type} for i in cfg.inputs],
        "forecast": cfg.forecast.model_dump() if cfg.forecast else None,
        "labels": json.loads((path / "labels.json").read_text(encoding="utf-8")),
        "data": json.loads((path / "data.json").read_text(encoding="utf-8")),
        "metrics": metrics,
        "files": sorted(manifest["files"]),
        "fairness": _fairness_summary(path),
        "privacy": _privacy(path),
    }


def _privacy(path: Path) -> dict[str, Any] | None:
    """The run's privacy.json (trained with DP-SGD), else None."""
    f = path / "privacy.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def _fairness_summary(path: Path) -> dict[str, Any] | None:
    """The last audit's verdict and the saved mitigation, if any."""
    audit_file, rule_file = path / "audit" / "fairness.json", path / "postprocess.json"
    if not audit_file.is_file() and not rule_file.is_file():
        return None
    out: dict[str, Any] = {}
    if audit_file.is_file():
        a = json.loads(audit_file.read_text(encoding="utf-8"))
        out.update(verdict=a.get("verdict"), attributes=list(a.get("attributes", {})),
                   data=a.get("data"), created=a.get("created"))
    if rule_file.is_file():
        r = json.loads(rule_file.read_text(encoding="utf-8"))
        out["mitigation"] = {"constraint": r.get("constraint"), "columns": r.get("columns")}
    return out


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ------------------------------------------------------------------------ sequence to sequence
def _task(run_dir: str | Path) -> str | None:
    return read_manifest(Path(run_dir)).get("task")


def evaluate_seq2seq(run_dir: str | Path, data: str | Path, *, source: str | None = None,
                     target: str | None = None) -> dict[str, Any]:
    """A seq2seq run's BLEU, chrF and exact match on the pairs of ``data`` (its source and
    target columns as trained, or ``source``/``target``), beside the copy baseline's."""
    s2s = Seq2Seq.load(run_dir)
    cfg = s2s.config_
    sources, targets, dropped = read_pairs(data, source or cfg.source, target or cfg.target)
    scores = s2s.evaluate(sources, targets)
    return {"task": SEQ2SEQ_TASK, **scores, "dropped": dropped}


def predict_seq2seq(run_dir: str | Path, data: str | Path, out: str | Path, *,
                    source: str | None = None) -> pd.DataFrame:
    """Generate the text of every row's source column (as trained, or ``source``); write the
    file's columns plus ``prediction`` to ``out``."""
    s2s = Seq2Seq.load(run_dir)
    column = source or s2s.config_.source
    df = read_table(data)
    require_columns(df, {column: "--text"}, str(data))
    texts = df[column]
    blank = [i for i, v in enumerate(texts) if not isinstance(v, str) or not v.strip()]
    if blank:
        raise DataError(f"{data}: row {blank[0] + 1}: the source column {column!r} is empty; "
                        f"every row needs a source ({len(blank)} row(s) without one)")
    result = df.copy()
    result["prediction"] = s2s.predict(texts.tolist())
    write_table(result, Path(out))
    return result
