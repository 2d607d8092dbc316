"""Core is what training and prediction need; every other feature is an extra. With an extra's
modules hidden (``sys.modules[name] = None`` in a fresh interpreter, so ``import name`` raises
ImportError as if it were not installed), ``import dlforge`` still works and pulls in no heavy
optional dependency, and each command that needs the extra says so in one line naming the
pip install, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import wave
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlforge import DlforgeError, MissingExtraError
from dlforge._extras import EXTRAS, require
from dlforge.lm.hf import LLM_FEATURE
from dlforge.testing import toy_texts

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "onnxruntime", "optuna", "fairlearn", "opacus", "captum", "fastapi", "uvicorn",
         "matplotlib", "transformers")
ALL_HIDDEN = sorted({m for mods in EXTRAS.values() for m in mods})
TINY = ["--text", "review", "--label", "sentiment", "--vocab-size", "300", "--max-length", "16",
        "--d-model", "16", "--heads", "2", "--epochs", "1", "--batch-size", "16",
        "--precision", "fp32", "--quiet"]

HIDE = "import sys\nfor _m in {hidden!r}:\n    sys.modules[_m] = None\n"
IMPORT_ONLY = HIDE + """import json
import dlforge
from dlforge.cli import main
assert main(["--help"]) == 0
print(json.dumps(sorted(m for m in {heavy!r} if sys.modules.get(m) is not None)))
"""
# Each command line in turn, as the dlforge command runs it; [exit code, stderr] of each.
COMMANDS = HIDE + """import contextlib, io, json
from dlforge.cli import main
out = []
for argv in {argvs!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out.append([main(argv), err.getvalue()])
print(json.dumps(out))
"""

# case: (the extra hidden, the command line, the feature its one line names)
PRIVATE = "differentially private training (--dp-epsilon, privacy:)"
CASES = {
    "tune": ("tune", ["tune", "{cfg}", "--trials", "1", "--out", "{tmp}/study"], "dlforge tune"),
    "serve": ("serve", ["serve", "{run}"], "dlforge serve"),
    "serve-onnx": ("onnx", ["serve", "{run}", "--backend", "onnx"],
                   "dlforge serve --backend onnx"),
    "export": ("onnx", ["export", "{run}", "--out", "{tmp}/m.onnx"], "dlforge export"),
    "audit": ("audit", ["audit", "{run}", "--data", "{csv}", "--sensitive", "group"],
              "dlforge audit --sensitive"),
    "explain": ("audit", ["explain", "{run}", "--text", "a good movie"], "dlforge explain"),
    "train-dp": ("privacy", ["train", "--data", "{csv}", *TINY, "--dp-epsilon", "8",
                             "--out", "{tmp}/private"], PRIVATE),
    "lm-train-dp": ("privacy", ["lm", "train", "--text", "{csv}", "--column", "review",
                                "--d-model", "16", "--n-layer", "1", "--n-head", "2",
                                "--max-steps", "2", "--precision", "fp32", "--dp-epsilon", "8",
                                "--out", "{tmp}/private-lm"], PRIVATE),
    "lm-finetune": ("llm", ["lm", "finetune", "--model", "{tmp}/model", "--data", "{csv}",
                            "--out", "{tmp}/finetune"], LLM_FEATURE),
    "lm-import": ("llm", ["lm", "import", "{tmp}/model.gguf", "--out", "{tmp}/imported"],
                  "dlforge lm import (reading GGUF files)"),
    "train-audio": ("audio", ["train", "--data", "{tmp}/clips.csv", "--audio", "path",
                              "--label", "label", "--out", "{tmp}/audio"],
                    "reading audio files (--audio, --kind audio, AudioClassifier)"),
}


@pytest.fixture(scope="module")
def hidden_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """One tiny run (trained here), then one fresh interpreter per extra with that extra
    hidden, all at once, running its commands: (exit code, stderr) of every case, and the
    import check as case "import" (its stdout: the heavy modules loaded)."""
    from dlforge.cli import main

    tmp = tmp_path_factory.mktemp("extras")
    texts, labels = toy_texts(64, seed=0)
    csv = tmp / "toy.csv"
    pd.DataFrame({"review": texts, "sentiment": labels,
                  "group": ["a", "b"] * 32}).to_csv(csv, index=False)
    run = tmp / "run"
    assert main(["train", "--data", str(csv), *TINY, "--out", str(run)]) == 0
    cfg = tmp / "tune.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"path": str(csv)}, "inputs": [{"name": "review", "vocab_size": 300}],
        "output": {"name": "sentiment"}, "model": {"name": "cnn", "d_model": 8},
        "train": {"epochs": 1, "precision": "fp32"},
        "tune": {"lr": {"log_uniform": [1e-3, 1e-2]}}}))
    for i in range(4):  # clips for the audio case, written without the audio extra
        with wave.open(str(tmp / f"{i}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(bytes(1600))
    pd.DataFrame({"path": [f"{i}.wav" for i in range(4)], "label": ["a", "b"] * 2}).to_csv(
        tmp / "clips.csv", index=False)
    fill = {"cfg": str(cfg), "run": str(run), "csv": str(csv), "tmp": str(tmp)}
    cases = {extra: [c for c, (e, _, _) in CASES.items() if e == extra] for extra in EXTRAS}
    scripts = {"import": IMPORT_ONLY.format(hidden=ALL_HIDDEN, heavy=HEAVY)}
    for extra, names in cases.items():
        argvs = [[a.format(**fill) for a in CASES[c][1]] for c in names]
        scripts[extra] = COMMANDS.format(hidden=EXTRAS[extra], argvs=argvs)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = {name: subprocess.Popen([sys.executable, "-c", code], cwd=tmp, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, code in scripts.items()}
    out: dict[str, tuple[int, str]] = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:  # e.g. a server that started after all
            p.kill()
            stdout, stderr = p.communicate()
        if name == "import":
            out[name] = (p.returncode, stdout if p.returncode == 0 else stderr)
            continue
        if p.returncode != 0:  # the interpreter crashed: each of its cases fails with that
            out.update({case: (p.returncode, stderr) for case in cases[name]})
            continue
        results = json.loads(stdout.strip().splitlines()[-1])
        for case, (code, err) in zip(cases[name], results, strict=True):
            out[case] = (code, err + stderr)  # the interpreter's own stderr: nothing
    return out


def test_import_dlforge_with_every_extra_missing(hidden_runs) -> None:
    code, stdout = hidden_runs["import"]
    assert code == 0, stdout
    assert json.loads(stdout.strip().splitlines()[-1]) == []  # none of HEAVY imported


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_extra_is_one_line(hidden_runs, case: str) -> None:
    extra, _, feature = CASES[case]
    code, stderr = hidden_runs[case]
    assert "Traceback" not in stderr, stderr
    assert code == 2, stderr
    assert stderr.splitlines() == [
        f"error: {feature} needs the {extra} extra, which is not installed: "
        f"pip install 'dlforge[{extra}]'"]


def test_require() -> None:
    assert require("json", "serve", "x") is json
    with pytest.raises(MissingExtraError) as info:
        require("dlforge_no_such_module", "tune", "dlforge tune")
    assert isinstance(info.value, DlforgeError) and isinstance(info.value, ImportError)
    assert str(info.value) == ("dlforge tune needs the tune extra, which is not installed: "
                               "pip install 'dlforge[tune]'")


def test_pyproject_extras_match() -> None:
    """Every extra of _extras.EXTRAS is in pyproject.toml, [all] holds each of them, and no
    optional module is a core dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    assert optional["all"] == [f"dlforge[{','.join(EXTRAS)}]"]
    core = " ".join(project["dependencies"]).replace("-", "_").lower()
    for modules in EXTRAS.values():
        for m in modules:
            assert m not in core, f"{m} is a core dependency"
