"""The run directory: the one contract between training and everything downstream.

```
runs/tweets/
  dlforge.json        manifest: format, version, task, file sizes and SHA-256 digests
  config.yaml         the resolved config, every default filled in
  model.safetensors   the best weights (safetensors: never pickle)
  features.json       each input's fitted state: image mean/std, numeric mean/std, categories
  tokenizers/         the fitted Hugging Face tokenizer of each text input (NAME.json)
  labels.json         the label map (or the numeric output's mean and std)
  metrics.json        validation (and test) metrics next to the baseline's
  data.json           cleaning counts, split sizes, class counts or target statistics
  privacy.json        with DP-SGD: ε spent, δ, accountant, max_grad_norm, noise multiplier
  history.csv         one row per epoch
  rows.npy            64-bit fingerprints of the training and validation rows (not under
                      DP-SGD), for dlforge evaluate's overlap warning (dlforge.data.rows)
  plots/              curves.png, confusion_matrix.png
  checkpoints/        last weights and the training state, when trained from the CLI
  postprocess.json    per-group decision thresholds, after dlforge audit --mitigate
  MODEL_CARD.md       the model card (a document: outside the manifest, rebuilt at will)
  audit/              fairness.json and its charts, after dlforge audit (documents too)
  report.html         the card with its plots embedded, after dlforge report
```
A language model's run (task ``language_model``) has its own files: config.yaml,
model.safetensors, model.json, tokenizer.json, metrics.json, data.json, history.csv (see
``dlforge.estimators.language``); so has a sequence-to-sequence run (task ``seq2seq``, see
``dlforge.estimators.seq2seq``).

It is written into a temporary sibling folder and renamed into place, so a crash never leaves
half a run; :func:`check_run` refuses anything incomplete or altered. This module only stores
and checks files: what goes into a run is written by whoever produces it (the estimators, the
language model, the audit), and ``dlforge.load`` (in :mod:`dlforge.estimators.load`) turns a
run back into the estimator that wrote it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from dlforge._version import __version__
from dlforge.errors import RunDirError

__all__ = ["DOCUMENTS", "LM_TASK", "MANIFEST", "SEQ2SEQ_TASK", "check_out", "check_run",
           "history_csv", "new_run_dir", "partial_dir", "read_history", "read_manifest", "run_name",
           "save_weights", "seal_run", "to_json", "update_run"]

MANIFEST = "dlforge.json"
FORMAT = 2
REQUIRED = ("config.yaml", "model.safetensors", "features.json", "labels.json", "metrics.json",
            "data.json")
LM_TASK = "language_model"  # a LanguageModel's run (dlforge.lm): its own files, see lm/model.py
REQUIRED_LM = ("config.yaml", "model.safetensors", "tokenizer.json", "metrics.json")
FINETUNE_TASK = "causal_lm"  # a pretrained causal LM's fine-tune (dlforge.lm.finetune)
REQUIRED_FINETUNE = ("config.yaml", "base.json", "metrics.json", "tokenizer/tokenizer_config.json")
# The simple baseline (model: baseline): a scikit-learn pipeline saved with skops.
REQUIRED_BASELINE = ("config.yaml", "model.skops", "labels.json", "metrics.json", "data.json")
# An ensemble (model: ensemble): each member a whole run in members/<family>/.
REQUIRED_ENSEMBLE = ("config.yaml", "labels.json", "metrics.json", "data.json")
SEQ2SEQ_TASK = "seq2seq"  # a Seq2Seq run (dlforge.estimators.seq2seq): its own files
REQUIRED_SEQ2SEQ = ("config.yaml", "metrics.json", "data.json")
# Human-facing documents rebuilt from the run's records (MODEL_CARD.md at save time, dlforge
# report, dlforge audit): outside the manifest, so rebuilding or editing them never makes a
# run "altered". Everything that changes predictions is in the manifest.
DOCUMENTS = ("MODEL_CARD.md", "report.html", "audit")


def partial_dir(out: Path) -> Path:
    """Where an unfinished training run into ``out`` keeps its checkpoints."""
    return out.parent / f".{out.name}.partial"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def save_weights(model: Any, folder: Path) -> None:
    """The model's weights as ``folder/model.safetensors`` (contiguous CPU tensors)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _temp_beside(path: Path) -> Path:
    """The temporary sibling a run is written into before it is renamed onto ``path``."""
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def run_name(folder: Path) -> str:
    """A run's name: its folder's, also while it is written into its temporary sibling."""
    m = re.fullmatch(r"\.(.+)\.tmp-[0-9a-f]{8}", folder.name)
    return m.group(1) if m else folder.name


def check_out(out: Path, overwrite: bool = False) -> None:
    """Refuse an output folder that is a file, a folder that is not a dlforge run, or (without
    ``overwrite``) an existing run. Writes nothing."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is a file; choose another --out folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).exists():
            raise RunDirError(f"{out}: exists and is not a dlforge run; choose another "
                              "--out folder")
        if not overwrite:
            raise RunDirError(f"{out}: a run already exists there; pass --overwrite "
                              "(overwrite=True) to replace it or choose another --out folder")


def new_run_dir(path: Path) -> Path:
    """A fresh temporary folder beside ``path`` to write a run into (see :func:`seal_run`);
    refuses a ``path`` that is a file or a folder that is not a dlforge run."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is a file; choose another output folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).exists():
        raise RunDirError(f"{path}: exists and is not a dlforge run; refusing to replace it. "
                          "Choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    tmp.mkdir()
    return tmp


def seal_run(tmp: Path, path: Path, task: str, estimator: str, model: str,
             documents: Callable[[Path], None] | None = None) -> None:
    """Write the manifest (every file's size and SHA-256, documents aside) into ``tmp``, let
    ``documents(tmp)`` add the human-facing documents (the model card: whoever produces one
    writes it), and rename ``tmp`` onto ``path``, replacing an older run there."""
    manifest = {
        "format": FORMAT,
        "dlforge_version": __version__,
        "task": task,
        "estimator": estimator,
        "model": model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": _file_digests(tmp),
    }
    (tmp / MANIFEST).write_text(to_json(manifest), encoding="utf-8")
    if documents is not None:
        documents(tmp)
    _swap_into_place(tmp, path)


def _file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.relative_to(folder).parts[0] not in (*DOCUMENTS, MANIFEST))
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in files}


def update_run(path: Path, write: Callable[[Path], None]) -> None:
    """Change a saved run in one step: ``write(folder)`` adds or replaces files in a copy of
    the run (hard links, so big weights are not copied; replace files by writing new ones,
    e.g. with ``atomic_file``, never in place), the copy's manifest is rewritten with the new
    digests, and the copy replaces the run. Readers see the old run or the new one."""
    path = Path(path)
    manifest = check_run(path)
    tmp = _temp_beside(path)
    try:
        shutil.copytree(path, tmp, copy_function=_link_or_copy)
        write(tmp)
        manifest["files"] = _file_digests(tmp)
        (tmp / MANIFEST).unlink()
        (tmp / MANIFEST).write_text(to_json(manifest), encoding="utf-8")
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _swap_into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def history_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        hint = ""
        if partial_dir(path).is_dir():
            hint = (f" (an unfinished run is in {partial_dir(path)}: finish it with "
                    f"dlforge train --resume {path})")
        raise RunDirError(f"{path}: no such run directory{hint}")
    if not path.is_dir():
        raise RunDirError(f"{path}: is a file, not a run directory")
    mf = path / MANIFEST
    if not mf.is_file():
        raise RunDirError(f"{path}: not a dlforge run directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{mf}: damaged manifest (not valid JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunDirError(f"{mf}: unknown run format {manifest.get('format')!r}; this dlforge "
                          f"reads format {FORMAT}")
    return manifest


def check_run(path: Path, verify_digests: bool = True) -> dict[str, Any]:
    """Raise RunDirError unless ``path`` is a complete, unaltered run; return its manifest."""
    manifest = read_manifest(path)
    files = manifest.get("files", {})
    required = (REQUIRED_LM if manifest.get("task") == LM_TASK else REQUIRED_FINETUNE
                if manifest.get("task") == FINETUNE_TASK else REQUIRED_SEQ2SEQ
                if manifest.get("task") == SEQ2SEQ_TASK else REQUIRED_BASELINE
                if manifest.get("model") == "baseline" else REQUIRED_ENSEMBLE
                if manifest.get("model") == "ensemble" else REQUIRED)
    for name in required:
        if name not in files:
            raise RunDirError(f"{path}: incomplete run: {name} is not in the manifest")
    for name, meta in files.items():
        p = Path(path) / name
        if not p.is_file():
            raise RunDirError(f"{path}: incomplete run: {name} is missing")
        if p.stat().st_size != meta["bytes"] or (verify_digests and _sha256(p) != meta["sha256"]):
            raise RunDirError(f"{path}: {name} was changed after the run was saved "
                              "(size or SHA-256 differs from the manifest)")
    return manifest


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file() or path.stat().st_size == 0:
        return []
    with path.open(encoding="utf-8") as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
