"""Tuning efficiency on the tweets task: the best validation accuracy dlforge's tuner (TPE +
median pruning on per-epoch validation scores) finds within a budget of B trial-epochs, against
random search without pruning at the same budget, over several seeds. Both run the same
objective (dlforge's trial: sample the config, train, report every epoch) in this process.

    .venv/bin/python benchmarks/tune_efficiency.py [--budget 40] [--seeds 0,1,2] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from dlforge.config import validate_config
from dlforge.data.datasets import trump_tweets
from dlforge.data.split import stratified_split
from dlforge.estimators import TextClassifier
from dlforge.tune.space import sample_config
from dlforge.tune.study import _Prune

SPACE = {"lr": {"log_uniform": [1e-4, 1e-1]}, "d_model": {"choice": [32, 64, 128]},
         "dropout": {"uniform": [0.0, 0.5]}, "batch_size": {"choice": [32, 64, 128]},
         "filters": {"choice": [32, 64, 128]}}


def run(method: str, seed: int, budget: int, epochs: int, csv: Path) -> tuple[float, int, float]:
    cfg = validate_config({
        "data": {"path": str(csv)},
        "inputs": [{"name": "text", "vocab_size": 8000, "max_length": 64}],
        "output": {"name": "source"},
        "model": {"name": "cnn"},
        "train": {"epochs": epochs, "patience": 0, "seed": seed},
        "tune": {**SPACE, "seed": seed},
    })
    import pandas as pd

    df = pd.read_csv(csv)
    if method == "tpe+median":
        sampler: Any = optuna.samplers.TPESampler(seed=seed)
        pruner: Any = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    else:
        sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    spent = {"epochs": 0}

    def objective(trial: optuna.Trial) -> float:
        trial_cfg, _ = sample_config(trial, cfg)
        clf = TextClassifier(config=trial_cfg, verbose=0)
        try:
            clf._fit_frame(df, trial_cfg, source=str(csv), callbacks=[_Prune(trial, "accuracy")])
        finally:
            spent["epochs"] += len(trial.storage.get_trial(trial._trial_id).intermediate_values)
        return clf.metrics_["validation"]["accuracy"]

    def stop(study: optuna.Study, trial: Any) -> None:
        if spent["epochs"] + epochs > budget:  # the next trial could overrun the budget
            study.stop()

    t0 = time.perf_counter()
    study.optimize(objective, callbacks=[stop])
    best = max((t.value for t in study.trials if t.value is not None and
                t.state == optuna.trial.TrialState.COMPLETE), default=float("nan"))
    return best, len(study.trials), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=int, default=40, help="trial-epochs per search")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of a full trial")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    df = trump_tweets()
    keep, _ = stratified_split((df["source"] == "iphone").to_numpy().astype(int), 0.15, seed=0)
    results: dict[str, list[tuple[float, int, float]]] = {"tpe+median": [], "random": []}
    with tempfile.TemporaryDirectory() as d:
        csv = Path(d) / "train.csv"
        df.iloc[keep].to_csv(csv, index=False)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in results:  # alternate A and B
                results[method].append(run(method, seed, args.budget, args.epochs, csv))
                best, n, secs = results[method][-1]
                print(f"seed {seed} {method:<11} best val accuracy {best:.4f} in {n} trials "
                      f"({secs:.0f} s)", flush=True)
    print(f"\nbudget {args.budget} trial-epochs (a full trial: {args.epochs} epochs), "
          f"CNN on the tweets' training file, space: {', '.join(SPACE)}")
    for method, res in results.items():
        vals = [r[0] for r in res]
        print(f"{method:<11} best val accuracy mean {statistics.mean(vals):.4f}, "
              f"min {min(vals):.4f}, max {max(vals):.4f}; trials {[r[1] for r in res]}")
    gain = statistics.mean(r[0] for r in results["tpe+median"]) - statistics.mean(
        r[0] for r in results["random"])
    print(f"TPE + pruning - random: {gain:+.4f} accuracy")


if __name__ == "__main__":
    main()
