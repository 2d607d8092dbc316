"""Fairness on the credit data (issue 8): audit an MLP's decisions by age band and marital
status, mitigate by age band with Fairlearn's ThresholdOptimizer (fitted on validation rows),
audit again, and write the model card and report. All from the CLI.

    .venv/bin/python examples/credit_fairness.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sklearn.model_selection import train_test_split

from dlforge.data.datasets import credit_data


def main() -> None:
    df = credit_data()
    rest, test = train_test_split(df, test_size=0.2, random_state=0, stratify=df["Status"])
    train, valid = train_test_split(rest, test_size=0.25, random_state=0,
                                    stratify=rest["Status"])
    data = Path("runs/credit-fairness-data")
    data.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        part.to_csv(data / f"{name}.csv", index=False)
    dlforge = str(Path(sys.executable).with_name("dlforge"))

    def run(*args: str) -> None:
        print("$ dlforge " + " ".join(args), flush=True)
        subprocess.run([dlforge, *args], check=True)

    out = "runs/credit-fairness"
    run("train", "--data", str(data / "train.csv"), "--kind", "table", "--label", "Status",
        "--hidden", "64,32", "--epochs", "30", "--lr", "1e-3", "--patience", "8", "--out", out,
        "--overwrite", "--quiet")
    audit = ["audit", out, "--positive", "good", "--bins", "Age:30,45"]
    run(*audit, "--data", str(data / "test.csv"), "--sensitive", "Age,Marital")
    run(*audit, "--data", str(data / "valid.csv"), "--sensitive", "Age",
        "--mitigate", "demographic_parity")
    run(*audit, "--data", str(data / "test.csv"), "--sensitive", "Age,Marital")
    run("predict", out, "--data", str(data / "test.csv"), "--out", str(data / "pred.csv"))
    run("report", out)


if __name__ == "__main__":
    main()
