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
from dlforge.data.io import write_table
from dlforge.data.rows import load_fingerprints, overlap
from dlforge.errors import DataError, DlforgeError, RunDirError
from dlforge.estimators.base import DeepModel
from dlforge.estimators.forecast import Forecaster, cross_validate_series
from dlforge.estimators.image import ImageClassifier
from dlforge.estimators.load import load_deep_model
from dlforge.estimators.persist import save_run
from dlforge.estimators.select import cross_validate_frame
from dlforge.estimators.sequence import SequenceModel
from dlforge.estimators.tabular import TabularClassifier, TabularRegressor
from dlforge.estimators.text import TextClassifier
from dlforge.run import FINETUNE_TASK, LM_TASK, MANIFEST, check_out, check_run, partial_dir
from dlforge.train.distributed import is_main_process
from dlforge.train.metrics import probabilities

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
    if kinds == {"sequence"}:
        return SequenceModel
    return TabularClassifier


def train(cfg: RunConfig | None, out: str | Path, *, resume: bool = False,
          overwrite: bool = False, verbose: int = 1, callbacks: tuple = ()) -> DeepModel:
    """Train the run ``cfg`` describes into the run directory ``out``.

    Checkpoints go to a hidden ``.NAME.partial`` folder beside ``out`` after every epoch; if
    training is interrupted, ``resume=True`` continues from there (with the saved config) to
    the same result an uninterrupted run gives.
    """
    out = Path(out)
    work = partial_dir(out)
    cfg = preflight(cfg, out, resume=resume, overwrite=overwrite)
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
