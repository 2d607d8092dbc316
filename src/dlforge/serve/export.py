"""ONNX export of a run, verified on the spot with onnxruntime.

The ONNX graph takes one tensor per model input, in the config's order: a text or numeric
sequence gives two (``NAME`` token ids int64 [batch, length] or values float [batch, length,
features], and ``NAME_mask`` bool [batch, length]); an image one float [batch, C, H, W]
(normalised as in the run's ``features.json``), an audio clip its log-mel spectrogram float
[batch, 1, mels, frames] (standardised per band as in ``features.json``); a numeric column
one float [batch, 2] (the standardised value and the missing flag); a category one int64
[batch]. The output is ``logits`` [batch, outputs]. Batch and length are dynamic. A JSON
file beside the model says all this and where the preprocessing state lives (the run
directory).

A run of the simple baseline (``model: baseline``) exports the baseline's graph instead (raw
columns in, the same ``logits`` out: :mod:`dlforge.serve.export_simple`), and a network that
blends the baseline in exports the network's graph as above plus the baseline's beside it
(``RUN.baseline.onnx``); the JSON records the share and how the two graphs' logits combine
(``blend``: what ``predict`` does, :func:`dlforge.train.metrics.blend_logits`).

A forecasting run's graph takes ``window`` (float [batch, length, columns], standardised as
described in its JSON) with ``window_mask``, and with exogenous columns ``future`` (float
[batch, horizon x exogenous]); ``logits`` are [batch, horizon x targets] in the same units.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge._atomic import atomic_file
from dlforge._extras import require_extra
from dlforge.errors import DlforgeError, RunDirError
from dlforge.estimators.load import load_deep_model
from dlforge.run import LM_TASK, SEQ2SEQ_TASK, check_run
from dlforge.serve.export_simple import baseline_onnx

__all__ = ["export_onnx", "onnx_session"]

TOLERANCE = 1e-4
FORECAST_PREPROCESSING = (
    "the run directory's features.json: the columns (targets, covariates, exogenous) "
    "standardised with its series scaler; with forecast.normalize 'window' each window then "
    "shifted and scaled by its own per-column mean and std + 0.1 (the future exogenous values "
    "with their column's); the logits are the standardised forecasts, horizon-major: undo the "
    "same steps (dlforge.estimators.forecast.Forecaster._pack and _decode)")
# How a blended run's logits come from its two graphs' (w: the baseline's share), as
# dlforge.train.metrics.blend_logits computes them.
BLEND = {
    "numeric": "(1 - w) * network logits + w * baseline logits",
    "binary": "p1 = (1 - w) * sigmoid(network logits) + w * sigmoid(baseline logits), p0 = "
              "1 - p1, each clipped to [1e-7, 1 - 1e-7]; logits = log(p1 / p0)",
    "category": "p = (1 - w) * softmax(network logits) + w * softmax(baseline logits), "
                "clipped to [1e-7, 1 - 1e-7]; logits = log(p)",
}


class _Flat(nn.Module):
    """The fusion model with positional tensors instead of a dict of inputs."""

    def __init__(self, model: nn.Module, layout: list[tuple[str, str]]):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs: dict[str, Any] = {}
        i = 0
        for name, kind in self.layout:
            if kind in ("text", "sequence"):
                key = "input_ids" if kind == "text" else "values"
                inputs[name] = {key: tensors[i], "attention_mask": tensors[i + 1]}
                i += 2
            else:
                inputs[name] = tensors[i]
                i += 1
        return self.model(inputs)


def _samples(clf: Any, n: int, length: int, seed: int = 0) -> tuple[list[np.ndarray], list[str],
                                                                     dict[str, dict[int, str]]]:
    """Random valid inputs (lengths vary, so padding is exercised), their names, dynamic axes."""
    rng = np.random.default_rng(seed)
    arrays, names, axes = [], [], {}
    for name, feat in clf.features_.items():
        spec, kind = feat.spec(), feat.kind
        if kind in ("text", "sequence"):
            lengths = rng.integers(1, length + 1, size=n)
            lengths[0] = length
            mask = np.arange(length)[None, :] < lengths[:, None]
            if kind == "text":
                x = rng.integers(5, spec["vocab_size"], size=(n, length)) * mask
            else:
                x = (rng.normal(size=(n, length, spec["features"])).astype(np.float32)
                     * mask[..., None])
            arrays += [x.astype(np.int64) if kind == "text" else x, mask]
            names += [name, f"{name}_mask"]
            axes[name] = {0: "batch", 1: "length"}
            axes[f"{name}_mask"] = {0: "batch", 1: "length"}
        elif kind in ("image", "audio"):  # audio: its normalised log-mel spectrogram
            arrays.append(rng.normal(size=(n, spec["channels"], spec["height"],
                                           spec["width"])).astype(np.float32))
            names.append(name)
            axes[name] = {0: "batch"}
        elif kind == "numeric":
            arrays.append(np.stack([rng.normal(size=n), rng.random(n) < 0.2], 1)
                          .astype(np.float32))
            names.append(name)
            axes[name] = {0: "batch"}
        elif kind == "future":  # a forecaster's exogenous values over the horizon
            arrays.append(rng.normal(size=(n, spec["width"])).astype(np.float32))
            names.append(name)
            axes[name] = {0: "batch"}
        else:  # category
            arrays.append(rng.integers(0, spec["categories"], size=n).astype(np.int64))
            names.append(name)
            axes[name] = {0: "batch"}
    return arrays, names, axes


def export_onnx(run_dir: str | Path, out: str | Path | None = None,
                opset: int = 17) -> dict[str, Any]:
    """Write ``out`` (default: ``RUN_DIR.onnx`` beside the run) and its JSON description;
    check onnxruntime against PyTorch on sample inputs (batch 1 and 4, two lengths) and fail
    with the largest difference if it exceeds 1e-4. The simple baseline's graph (``out`` for a
    ``model: baseline`` run; beside the network's, ``RUN.baseline.onnx``, for a run that blends
    it in) is checked the same way against scikit-learn
    (:func:`~dlforge.serve.export_simple.baseline_onnx`)."""
    require_extra("onnx", "dlforge export")
    import onnxruntime as ort

    run_dir = Path(run_dir)
    if check_run(run_dir).get("task") == LM_TASK:  # a GPT: with its key/value cache
        from dlforge.serve.export_lm import export_lm_onnx

        return export_lm_onnx(run_dir, Path(out) if out is not None
                              else run_dir.with_suffix(".onnx"), opset)
    if check_run(run_dir).get("task") == SEQ2SEQ_TASK:  # encoder + decoder with past
        from dlforge.serve.export_seq2seq import export_seq2seq_onnx

        return export_seq2seq_onnx(run_dir, Path(out) if out is not None
                                   else run_dir.with_suffix(".onnx"), opset)
    clf = load_deep_model(run_dir, "ONNX export", device="cpu")
    if getattr(clf, "members_", None):  # one graph per run: each member is a run of its own
        from dlforge.config.models import member_folder

        folders = [member_folder(m) for m in clf.config_.model.members]
        raise RunDirError(
            f"{run_dir}: an ensemble ({' + '.join(folders)}) has no single ONNX graph; serve "
            "it with the torch backend, or export a member: "
            + ", ".join(f"dlforge export {run_dir / 'members' / f}" for f in folders))
    out = Path(out) if out is not None else run_dir.with_suffix(".onnx")
    simple = getattr(clf, "simple_", None)
    baseline = None if simple is None else _baseline(run_dir, clf, simple, opset)
    if clf.model_ is None:  # the run is the simple baseline
        data, info = baseline
        with atomic_file(out) as tmp:
            tmp.write_bytes(data)
        info = {"model": out.name, "run_dir": str(run_dir.resolve()), **info,
                "labels": clf.labels_.to_dict(), "verified_against": "scikit-learn"}
        with atomic_file(out.with_suffix(".onnx.json")) as tmp:
            tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        return info
    forecast = clf.config_.forecast is not None
    layout = ([(name, feat.kind) for name, feat in clf.features_.items()] if forecast
              else [(i.name, i.type) for i in clf.config_.inputs])
    flat = _Flat(clf.model_.float().eval(), layout).eval()
    length = min(16, max((f.spec().get("max_length", 16) for f in clf.features_.values()),
                         default=16))
    arrays, names, axes = _samples(clf, 4, length)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        try:
            # The TorchScript exporter: dynamic axes without onnxscript. Its tracer warns
            # about the padding-mask branch; the traced (masked) path is right for every input.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(flat, tuple(torch.from_numpy(a) for a in arrays), str(tmp),
                                  input_names=names, output_names=["logits"],
                                  dynamic_axes={**axes, "logits": {0: "batch"}},
                                  opset_version=opset, dynamo=False)
        except Exception as err:
            raise DlforgeError(f"{run_dir}: ONNX export failed: "
                               f"{str(err).strip().splitlines()[0]}") from None
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for n, ln in ((4, length), (1, 2), (3, max(2, length - 3))):
            sample, _, _ = _samples(clf, n, ln, seed=n)
            with torch.no_grad():
                want = flat(*(torch.from_numpy(a) for a in sample)).numpy()
            got = session.run(["logits"], dict(zip(names, sample, strict=True)))[0]
            worst = max(worst, float(np.abs(got - want).max()))
        if worst > TOLERANCE:
            raise DlforgeError(f"{run_dir}: the ONNX model differs from PyTorch by up to "
                               f"{worst:.2e} (more than {TOLERANCE:g}); not written")
    info = {"model": out.name, "run_dir": str(run_dir.resolve()), "opset": opset,
            "inputs": [{"name": nm, "dtype": str(a.dtype), "shape": ["batch", *(
                ["length"] if "length" in axes[nm].values() else [])] + list(a.shape[
                    (2 if "length" in axes[nm].values() else 1):])} for nm, a in zip(
                names, arrays, strict=True)],
            "outputs": [{"name": "logits", "shape": ["batch", clf.labels_.n_outputs]}],
            "labels": clf.labels_.to_dict(), "max_abs_difference": worst,
            "verified_against": "PyTorch",
            "preprocessing": FORECAST_PREPROCESSING if forecast else
                             "the run directory's features.json and tokenizers/: tokenize, "
                             "pad with 0 and mask; images normalised with its mean/std"}
    if baseline is not None:  # the network's logits blended with the baseline's
        data, base = baseline
        base_out = out.with_suffix(".baseline.onnx")
        with atomic_file(base_out) as tmp:
            tmp.write_bytes(data)
        w = float(clf.config_.train.baseline_weight)
        info["baseline"] = {"model": base_out.name, **base}
        info["blend"] = {"baseline_weight": w, "logits": BLEND[clf.labels_.kind]}
    with atomic_file(out.with_suffix(".onnx.json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def _baseline(run_dir: Path, clf: Any, simple: Any, opset: int) -> tuple[bytes, dict[str, Any]]:
    """The run's simple baseline as a verified ONNX graph and its description, or the one
    line saying why it has none and what to do."""
    fix = ("predict and serve it with the torch backend" if clf.model_ is None else
           "train with --baseline-weight 0 to export the network alone")
    try:
        return baseline_onnx(simple, opset, TOLERANCE)
    except DlforgeError as err:
        raise type(err)(f"{run_dir}: {err}; {fix}") from None


def onnx_session(run_dir: Path, baseline: bool = False) -> Any:
    """An onnxruntime session of the run's exported model (``RUN_DIR.onnx``; with
    ``baseline``, the blended-in simple baseline's ``RUN_DIR.baseline.onnx``), exported and
    verified now if it is missing or older than the run."""
    require_extra("onnx", "dlforge serve --backend onnx")
    import onnxruntime as ort

    onnx_file = run_dir.with_suffix(".onnx")
    wanted = onnx_file.with_suffix(".baseline.onnx") if baseline else onnx_file
    manifest = run_dir / "dlforge.json"
    if not wanted.is_file() or wanted.stat().st_mtime < manifest.stat().st_mtime:
        export_onnx(run_dir, onnx_file)
    return ort.InferenceSession(str(wanted), providers=["CPUExecutionProvider"])
