"""``dlforge compare`` on the tweets task (Android or iPhone?): every text family under the
quickstart's budget (batch 64, lr 5e-4, the given epochs), 3-fold stratified cross-validation
on the quickstart's training file, then the winner trained on all of it and scored on the
held-out test file. Prints the leaderboard, the test score and the wall time.

    .venv/bin/python benchmarks/compare_tweets.py [--epochs 3] [--folds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from dlforge.cli.quickstart import quickstart_config
from dlforge.cli.report import leaderboard_table, metrics_table
from dlforge.config import validate_config
from dlforge.data.datasets import trump_tweets
from dlforge.data.split import stratified_split
from dlforge.estimators import files as api


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()
    df = trump_tweets()
    strata = (df["source"] == "iphone").to_numpy().astype(int)
    train_idx, test_idx = stratified_split(strata, 0.15, seed=0)
    with tempfile.TemporaryDirectory() as d:
        train_csv, test_csv = Path(d) / "train.csv", Path(d) / "test.csv"
        df.iloc[train_idx].to_csv(train_csv, index=False)
        df.iloc[test_idx].to_csv(test_csv, index=False)
        raw = quickstart_config(train_csv, epochs=args.epochs)
        raw["model"] = {"name": "auto", "cv": args.folds}
        cfg = validate_config(raw)
        t0 = time.perf_counter()
        clf = api.train(cfg, Path(d) / "run", verbose=0)
        wall = time.perf_counter() - t0
        test = api.evaluate(Path(d) / "run", test_csv)
    console = Console(width=110)
    console.print(f"tweets: {len(train_idx)} training tweets ({args.folds}-fold CV), "
                  f"{len(test_idx)} held-out test tweets")
    console.print(leaderboard_table(clf.metrics_))
    console.print(metrics_table({"test": test}, ("test",)))
    console.print(f"winner: {clf.config_.model.name}; wall time of dlforge compare "
                  f"(selection + final training): {wall:.0f} s")


if __name__ == "__main__":
    main()
