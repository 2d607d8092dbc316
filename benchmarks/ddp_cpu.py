"""Data-parallel training on the CPU: the quickstart's model and data (the article's
Transformer on the tweets) trained with 1 process and with N processes (torchrun + DDP,
gloo), the same global batch of 64. Prints samples/s of each and the scaling efficiency
(speed-up / N). On a 2-core machine each process gets one core; expect well under 2x:
gloo's all-reduce of 5.4M gradients per step and the halved per-process batches cost.

    .venv/bin/python benchmarks/ddp_cpu.py [--nproc 2] [--epochs 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from dlforge.data.datasets import trump_tweets


def run(csv: Path, out: Path, nproc: int, epochs: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "dlforge.cli", "train", "--data", str(csv), "--text", "text",
           "--label", "source", "--epochs", str(epochs), "--patience", "0", "--quiet",
           "--out", str(out), "--overwrite"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    subprocess.run(cmd, check=True)
    hist = pd.read_csv(out / "history.csv")
    steady = hist.iloc[1:] if len(hist) > 1 else hist  # epoch 1 warms up (oneDNN kernels)
    n = hist["samples_per_s"].iloc[0] * hist["seconds"].iloc[0]  # training rows per epoch
    return n * len(steady) / steady["seconds"].sum(), float(hist["val_accuracy"].iloc[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    res: dict[int, list[tuple[float, float]]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as d:
        csv = Path(d) / "tweets.csv"
        trump_tweets().to_csv(csv, index=False)
        for _ in range(args.repeats):
            for n in res:  # alternate 1 and N processes
                res[n].append(run(csv, Path(d) / f"run{n}", n, args.epochs))
                print(f"{n} process(es): {res[n][-1][0]:.1f} samples/s, val accuracy "
                      f"{res[n][-1][1]:.4f}", flush=True)
    one = statistics.median(r[0] for r in res[1])
    many = statistics.median(r[0] for r in res[args.nproc])
    print(f"\nmedian samples/s: 1 process {one:.1f}; {args.nproc} processes {many:.1f}; "
          f"speed-up {many / one:.2f}x; scaling efficiency {many / one / args.nproc:.0%}")


if __name__ == "__main__":
    main()
