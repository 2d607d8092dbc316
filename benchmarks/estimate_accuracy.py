"""How right is ``dlforge estimate --measure``? Training memory and run time, predicted vs
measured, for one model of each family.

For each case a data file and run config are written to a temporary folder; then, each in a
fresh process (so one case's allocations do not hide the next one's):
1. ``dlforge estimate --measure CONFIG --json``: predicted training memory, the measured peak
   (CPU: resident-set growth; CUDA: max_memory_allocated), and the predicted training time;
2. with ``--train``, ``dlforge train CONFIG``: the real run's training time (history.csv).
Prints one row per case with the ratios.

    python benchmarks/estimate_accuracy.py                     # full sizes, memory only
    python benchmarks/estimate_accuracy.py --train             # also time real runs
    python benchmarks/estimate_accuracy.py --small --train     # tiny: does it run?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def texts(n: int, words: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    vocab = [f"w{i}" for i in range(3000)]
    out, labels = [], []
    for _ in range(n):
        y = int(rng.integers(2))
        k = int(rng.integers(words // 2, words + 1))
        ws = list(rng.choice(vocab, size=k))
        ws[int(rng.integers(k))] = "good" if y else "bad"
        out.append(" ".join(ws))
        labels.append("pos" if y else "neg")
    return out, labels


def images(folder: Path, n: int, size: int, rng: np.random.Generator) -> None:
    from PIL import Image

    for i in range(n):
        label = "a" if i % 2 else "b"
        (folder / label).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / label / f"{i}.png")


def cases(small: bool) -> dict[str, dict]:
    s = 4 if small else 1
    text_in = {"name": "text", "vocab_size": 2000, "max_length": 128 // s}
    train = {"epochs": 1 if small else 2, "batch_size": 32, "precision": "fp32", "patience": 0,
             "device": "auto", "num_threads": 1}
    return {
        "transformer": {"inputs": [text_in], "train": train,
                        "model": {"name": "transformer", "d_model": 256 // s, "heads": 4,
                                  "layers": 4 // s or 1, "dropout": 0.1}},
        "cnn-text": {"inputs": [text_in], "train": train,
                     "model": {"name": "cnn", "d_model": 256 // s, "filters": 256 // s}},
        "rnn-text": {"inputs": [text_in], "train": train,
                     "model": {"name": "rnn", "cell": "lstm", "d_model": 256 // s,
                               "hidden": 256 // s}},
        "mlp-table": {"inputs": [{"name": f"x{i}", "type": "numeric"} for i in range(32)],
                      "train": {**train, "batch_size": 256},
                      "model": {"name": "mlp", "hidden": [2048 // s, 2048 // s, 512 // s]}},
        "cnn-image": {"inputs": [{"name": "image", "type": "image"}], "train": train,
                      "model": {"name": "cnn", "channels": [32 // s, 64 // s, 128 // s]}},
    }


def write_case(name: str, spec: dict, d: Path, rows: int, rng: np.random.Generator) -> Path:
    kind = spec["inputs"][0].get("type", "text")
    if kind == "image":
        images(d / f"{name}-images", rows, 32, rng)
        data = str(d / f"{name}-images")
    elif kind == "numeric":
        x = rng.normal(size=(rows, 32))
        df = pd.DataFrame(x, columns=[f"x{i}" for i in range(32)])
        df["label"] = np.where(x[:, 0] > 0, "pos", "neg")
        data = str(d / f"{name}.csv")
        df.to_csv(data, index=False)
    else:
        t, y = texts(rows, spec["inputs"][0]["max_length"], rng)
        data = str(d / f"{name}.csv")
        pd.DataFrame({"text": t, "label": y}).to_csv(data, index=False)
    cfg = {"data": {"path": data, "validation_split": 0.1}, "output": {"name": "label"}, **spec}
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "dlforge.cli", *args], capture_output=True,
                          text=True, env=env)
    if done.returncode:
        raise SystemExit(f"dlforge {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny models and data: does it run?")
    ap.add_argument("--train", action="store_true", help="also time real runs")
    ap.add_argument("--rows", type=int, default=None, help="rows per case (default 2000; "
                                                           "--small 200)")
    ap.add_argument("--steps", type=int, default=10, help="steps timed by --measure")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    rows = args.rows or (200 if args.small else 2000)
    rng = np.random.default_rng(0)
    chosen = [c for c in args.only.split(",") if c]
    print(f"{'case':12} {'params':>10} {'pred MB':>9} {'peak MB':>9} {'peak/pred':>9} "
          f"{'pred s':>8} {'real s':>8} {'pred/real':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, spec in cases(args.small).items():
            if chosen and name not in chosen:
                continue
            path = write_case(name, spec, d, rows, rng)
            r = json.loads(cli("estimate", "--measure", str(path), "--steps", str(args.steps),
                               "--json"))
            m = r["measured"]
            pred_mb = m["memory"]["predicted_bytes"] / 1e6
            peak_mb = m["memory"]["measured_peak_bytes"] / 1e6
            real = float("nan")
            if args.train:
                out = d / f"run-{name}"
                cli("train", str(path), "--out", str(out), "--quiet")
                real = float(pd.read_csv(out / "history.csv")["seconds"].sum())
            pred = m["predicted_train_seconds"]
            print(f"{name:12} {r['parameters']['total']:>10,} {pred_mb:>9.1f} {peak_mb:>9.1f} "
                  f"{peak_mb / pred_mb:>9.2f} {pred:>8.2f} {real:>8.2f} {pred / real:>9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
