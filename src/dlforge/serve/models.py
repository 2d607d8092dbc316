"""What the server serves: a run directory loaded for prediction (``ServedModel``), its inputs
checked field by field (HTTP 422 naming the field; an audio clip, base64 file bytes in JSON or
raw bytes, decoded here, see :func:`decode_audio`), a forecaster (``ServedForecaster``, in
``serve/forecast.py``) or a language model (``ServedLM``, in ``serve/generate.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import HTTPException

from dlforge.errors import ConfigError, DlforgeError
from dlforge.estimators.load import load
from dlforge.run import FINETUNE_TASK, LM_TASK, SEQ2SEQ_TASK, read_manifest
from dlforge.serve import check_backend

__all__ = ["ServedModel", "decode_audio", "served_run"]


def served_run(run_dir: str | Path, name: str | None = None, backend: str = "torch") -> Any:
    """The run at ``run_dir``, ready to serve: a classifier/regressor (``ServedModel``), a
    forecaster (``ServedForecaster``, in ``serve/forecast.py``), a sequence-to-sequence run
    (``ServedSeq2Seq``, in ``serve/seq2seq.py``) or a language model
    (``ServedLM``, served through the generate and OpenAI routes: a GPT run, a pretrained
    model's folder, or a fine-tune run of one)."""
    from dlforge.lm.hf import is_hf_folder
    from dlforge.serve.forecast import ServedForecaster
    from dlforge.serve.generate import ServedLM

    if is_hf_folder(Path(run_dir)):  # a Hugging Face folder (dlforge lm import writes one)
        return ServedLM(run_dir, name, backend)
    manifest = read_manifest(Path(run_dir))
    if manifest.get("task") in (LM_TASK, FINETUNE_TASK):
        return ServedLM(run_dir, name, backend)
    if manifest.get("estimator") == "Forecaster":
        return ServedForecaster(run_dir, name, backend)
    if manifest.get("task") == SEQ2SEQ_TASK:  # text in, text out (serve/seq2seq.py)
        from dlforge.serve.seq2seq import ServedSeq2Seq

        return ServedSeq2Seq(run_dir, name, backend)
    return ServedModel(run_dir, name, backend)


class ServedModel:
    """A loaded run: checks instances against its inputs, predicts a batch of them."""

    def __init__(self, run_dir: str | Path, name: str | None = None, backend: str = "torch"):
        self.path = Path(run_dir)
        self.name = name or self.path.resolve().name
        self.clf = load(self.path)
        cfg = self.clf.config_
        if cfg.forecast is not None:
            raise ConfigError(f"{self.path}: a forecasting run; serve it with served_run "
                              "(ServedForecaster)")
        self.inputs = [(i.name, i.type) for i in cfg.inputs]
        # A run mitigated by dlforge audit --mitigate decides per group: each instance must
        # also carry its sensitive value(s), which are not model inputs (422 if missing).
        rule = getattr(self.clf, "postprocess_", None)
        names = {n for n, _ in self.inputs}
        self.sensitive = [c for c in (rule.columns if rule else []) if c not in names]
        self.optional: list[str] = []
        self.target = self.clf.labels_
        self.backend = check_backend(backend)
        # onnx: the run's graph (the network's, or the simple baseline's for a baseline run)
        # and, for a network that blends the baseline in, the baseline's graph beside it.
        self.session = self.baseline_session = None
        if backend == "onnx":
            from dlforge.serve.export import onnx_session

            self.session = onnx_session(self.path)
            if self.clf.model_ is not None and getattr(self.clf, "simple_", None) is not None:
                self.baseline_session = onnx_session(self.path, baseline=True)

    def _logits(self, df: pd.DataFrame) -> np.ndarray:
        """The run's logits for a frame of requests: as ``predict`` computes them (torch), or
        from the exported graphs, blended as ``predict`` blends (onnx)."""
        if self.session is None:
            return self.clf._logits_frame(df, "request")
        from dlforge.serve.export_simple import onnx_feeds
        from dlforge.train.metrics import blend_logits

        loaded = self.clf._load_frame(df, "request")  # exactly as the torch path loads
        simple = getattr(self.clf, "simple_", None)
        if self.clf.model_ is None:  # the simple baseline's run
            return self.session.run(["logits"], onnx_feeds(simple, loaded))[0]
        feeds = {}
        for name, feat in self.clf.features_.items():
            batch = feat.collate(list(feat.encode(loaded[name])))
            if isinstance(batch, dict):
                values = batch.get("input_ids", batch.get("values"))
                feeds[name] = values.numpy()
                feeds[f"{name}_mask"] = batch["attention_mask"].numpy()
            else:
                feeds[name] = batch.numpy()
        net = self.session.run(["logits"], feeds)[0]
        if self.baseline_session is None:
            return net
        theirs = self.baseline_session.run(["logits"], onnx_feeds(simple, loaded))[0]
        return blend_logits(self.target.kind, net, theirs,
                            float(self.clf.config_.train.baseline_weight))

    # -------------------------------------------------------------- checks
    def check(self, instances: list[Any], where: str = "instances") -> list[dict[str, Any]]:
        """Each instance as a row, or HTTP 422 naming the first bad field."""
        rows = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise HTTPException(422, f"{where}[{i}]: expected an object with the fields "
                                         f"{', '.join(n for n, _ in self.inputs)}")
            row = {}
            for name, kind in self.inputs:
                if name not in inst:
                    raise HTTPException(422, f"{where}[{i}].{name}: missing ({kind} input)")
                value = _check_value(inst[name], kind, f"{where}[{i}].{name}")
                if kind == "image" and self._eight_bit(name):
                    value = _as_uint8(value, f"{where}[{i}].{name}")
                if kind == "audio":  # decoded per request: a bad clip fails its request only
                    value = decode_audio(value, self.clf.features_[name].cfg.sample_rate,
                                         f"{where}[{i}].{name}")
                row[name] = value
            for name in self.sensitive:
                if name not in inst:
                    raise HTTPException(422, f"{where}[{i}].{name}: missing (sensitive value: "
                                             "this model's decisions are post-processed for "
                                             "fairness per group)")
                row[name] = _check_value(inst[name], "category", f"{where}[{i}].{name}")
            fields = [n for n, _ in self.inputs] + self.sensitive
            extra = sorted(set(inst) - set(fields))
            if extra:
                raise HTTPException(422, f"{where}[{i}].{extra[0]}: unknown field; the fields "
                                         f"are {', '.join(fields)}")
            rows.append(row)
        rule = getattr(self.clf, "postprocess_", None)
        if rule is not None and rows:
            try:
                rule.check_groups(rule.groups(pd.DataFrame(rows), n=len(rows)),
                                  f"{where}: sensitive value")
            except DlforgeError as err:
                raise HTTPException(422, str(err)) from None
        return rows

    # -------------------------------------------------------------- predict
    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        df = pd.DataFrame({name: pd.Series([r[name] for r in rows], dtype=object)
                           for name in [n for n, _ in self.inputs] + self.sensitive})
        for name, kind in self.inputs:
            if kind == "numeric":
                df[name] = pd.to_numeric(df[name])
        logits = self._logits(df)
        if self.target.kind == "numeric":
            return [{"prediction": float(v)} for v in self.target.decode(logits)]
        from dlforge.train.metrics import probabilities

        proba = probabilities(self.target.kind, logits)
        try:
            groups = self.clf.sensitive_groups(df, None, len(df), "instances")
        except DlforgeError as err:  # an unseen or missing group
            raise HTTPException(422, str(err)) from None
        labels = self.clf.decode(proba, groups)
        classes = [str(c) for c in self.target.classes]
        return [{"label": _plain(lab),
                 "probabilities": {c: float(p) for c, p in zip(classes, row, strict=True)}}
                for lab, row in zip(labels, proba, strict=True)]

    def infer_outputs(self, preds: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        """Open Inference Protocol v2 outputs: the predictions, or labels and probabilities."""
        if self.target.kind == "numeric":
            return [{"name": "prediction", "datatype": "FP32", "shape": [n],
                     "data": [p["prediction"] for p in preds]}]
        classes = [str(c) for c in self.target.classes]
        return [{"name": "label", "datatype": "BYTES", "shape": [n],
                 "data": [str(p["label"]) for p in preds]},
                {"name": "probabilities", "datatype": "FP32", "shape": [n, len(classes)],
                 "data": [p["probabilities"][c] for p in preds for c in classes]}]

    def _eight_bit(self, name: str) -> bool:
        """Whether the image input was trained on 8-bit (0-255) pixels."""
        return getattr(self.clf.features_[name], "scale", 1.0) != 1.0

    def metadata(self) -> dict[str, Any]:
        datatype = {"text": "BYTES", "category": "BYTES", "numeric": "FP32", "image": "FP32",
                    "sequence": "FP32", "audio": "BYTES"}
        outputs = ([{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
                   if self.target.kind == "numeric" else
                   [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32",
                     "shape": [-1, len(self.target.classes)]}])
        inputs = []
        for n, k in self.inputs:
            entry = {"name": n, "datatype": datatype[k], "shape": [-1], "kind": k}
            if k == "image":  # what a client must send: H x W [x C] numbers in this range
                c, h, w = self.clf.features_[n].shape
                entry["shape"] = [-1, h, w] + ([c] if c > 1 else [])
                entry["image"] = {"height": h, "width": w, "channels": c,
                                  "range": "0-255" if self._eight_bit(n) else "float"}
            if k == "audio":  # a file's bytes (base64 in JSON), any rate, cut to the window
                a = self.clf.features_[n].cfg
                entry["audio"] = {"sample_rate": a.sample_rate, "seconds": a.seconds,
                                  "encoding": "WAV, FLAC, OGG or MP3 file bytes; base64 in "
                                              "JSON"}
            inputs.append(entry)
        return {"name": self.name, "versions": ["1"], "platform": "dlforge",
                "inputs": inputs,
                "outputs": outputs,
                "parameters": {"task": self.clf.metrics_.get("task"),
                               "labels": [_plain(c) for c in self.target.classes],
                               "model": self.clf.config_.model.name}}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _as_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """JSON has no 8-bit type: whole numbers in 0-255 for a model trained on 8-bit images."""
    if arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.round(arr)):
        raise HTTPException(422, f"{where}: expected whole numbers in 0-255 (the model was "
                                 "trained on 8-bit images)")
    return arr.astype(np.uint8)


def decode_audio(value: Any, sample_rate: int, where: str) -> np.ndarray:
    """One audio instance as a mono float32 waveform at ``sample_rate``, or HTTP 422 naming
    ``where``: the bytes of a WAV, FLAC, OGG or MP3 file (raw, as OIP v2 binary BYTES send
    them; or base64 text, as JSON must, optionally a ``data:audio/...;base64,`` URL), or a
    list of samples already at ``sample_rate``."""
    import base64
    import binascii

    from dlforge.data.audio import read_audio

    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, f"{where}: expected base64-encoded bytes of a WAV, FLAC, "
                                     "OGG or MP3 file") from None
    elif isinstance(value, list):
        try:
            value = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise HTTPException(422, f"{where}: expected a list of samples (numbers)") from None
    elif not isinstance(value, bytes | bytearray | np.ndarray):
        raise HTTPException(422, f"{where}: expected base64-encoded audio file bytes, got "
                                 f"{type(value).__name__}")
    try:
        return read_audio(value, sample_rate, where)
    except DlforgeError as err:
        raise HTTPException(422, str(err)) from None


def _check_value(v: Any, kind: str, where: str) -> Any:
    if kind == "audio":
        return v  # decoded by decode_audio, which needs the run's sample rate
    if kind == "text":
        if not isinstance(v, str):
            raise HTTPException(422, f"{where}: expected a string, got {type(v).__name__}")
        return v
    if kind == "numeric":
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise HTTPException(422, f"{where}: expected a finite number or null, got {v!r}")
        return float(v)
    if kind == "category":
        if v is not None and not isinstance(v, str | int | float | bool):
            raise HTTPException(422, f"{where}: expected a string, number or null")
        return v
    # image (nested lists H x W [x C]) or sequence (list of numbers or vectors, or a string)
    if kind == "sequence" and isinstance(v, str):
        return v
    try:
        arr = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        raise HTTPException(422, f"{where}: expected nested lists of numbers") from None
    want = (2, 3) if kind == "image" else (1, 2)
    if arr.ndim not in want or arr.size == 0 or not np.isfinite(arr).all():
        shape = "H x W [x C]" if kind == "image" else "T or T x F"
        raise HTTPException(422, f"{where}: expected a finite array of {shape} numbers")
    return arr
