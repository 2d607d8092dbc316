"""Images: scikit-learn's 8x8 digits as a folder of PNGs, a small residual CNN from the CLI,
then the same from Python. The CNN reaches >= 98% test accuracy (SVC: 98.9%; see
benchmarks/digits_cnn.py).

    .venv/bin/python examples/digits.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dlforge import ImageClassifier

ROOT = Path("runs/digits-data")


def write_folders() -> None:
    """train/ and test/ folders with one sub-folder per digit: the layout most image sets use."""
    d = load_digits()
    idx_tr, idx_te = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0,
                                      stratify=d.target)
    for split, rows in (("train", idx_tr), ("test", idx_te)):
        for i in rows:
            folder = ROOT / split / str(d.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")


def main() -> None:
    write_folders()
    dlforge = str(Path(sys.executable).with_name("dlforge"))
    subprocess.run([dlforge, "train", "--data", str(ROOT / "train"), "--kind", "image",
                    "--channels", "32,64", "--dropout", "0.1", "--epochs", "30", "--lr", "3e-3",
                    "--patience", "0", "--augment-crop", "1", "--augment-rotate", "10",
                    "--out", "runs/digits", "--overwrite", "--quiet"], check=True)
    subprocess.run([dlforge, "evaluate", "runs/digits", "--data", str(ROOT / "test")],
                   check=True)

    # The same from Python, on the arrays.
    d = load_digits()
    X_tr, X_te, y_tr, y_te = train_test_split(d.images, d.target, test_size=0.2,
                                              random_state=0, stratify=d.target)
    clf = ImageClassifier(channels=[32, 64], dropout=0.1, epochs=30, lr=3e-3, patience=0,
                          verbose=0).fit(X_tr, y_tr)
    acc = clf.score(X_te, y_te)
    print(f"Python: test accuracy {acc:.4f} ({'>= 0.98' if acc >= 0.98 else 'below 0.98!'})")


if __name__ == "__main__":
    main()
