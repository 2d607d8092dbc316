"""Digits (scikit-learn's 8×8 handwritten digits): dlforge's image CNN with and without
augmentation, next to scikit-learn's SVC (gamma=0.001, C=10), on the same stratified test split
(20%, seed 0). The issue's target: the CNN reaches >= 98% test accuracy.

    .venv/bin/python benchmarks/digits_cnn.py [--seeds 0,1,2] [--epochs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from dlforge import ImageClassifier

AUGMENT = {"crop": 1, "rotate": 10.0, "noise": 0.05}  # no flips: a flipped digit is another


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of the CNN")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    d = load_digits()
    X_tr, X_te, y_tr, y_te = train_test_split(d.images, d.target, test_size=0.2,
                                              random_state=0, stratify=d.target)
    print(f"digits: {len(X_tr)} training images, {len(X_te)} test images, 8x8, 10 classes")

    t0 = time.perf_counter()
    svc = SVC(gamma=0.001, C=10).fit(X_tr.reshape(len(X_tr), -1), y_tr)
    svc_acc = accuracy_score(y_te, svc.predict(X_te.reshape(len(X_te), -1)))
    svc_s = time.perf_counter() - t0

    rows: dict[str, list[tuple[float, float]]] = {"CNN": [], "CNN + augmentation": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, augment in (("CNN", None), ("CNN + augmentation", AUGMENT)):
            t0 = time.perf_counter()
            clf = ImageClassifier(channels=[32, 64], dropout=0.1, epochs=args.epochs,
                                  batch_size=64, lr=3e-3, patience=0, augment=augment,
                                  seed=seed, verbose=0).fit(X_tr, y_tr)
            rows[name].append((clf.score(X_te, y_te), time.perf_counter() - t0))

    print(f"\n{'model':<34}{'test accuracy':>22}{'train s':>10}")
    print(f"{'SVC (gamma=0.001, C=10)':<34}{svc_acc:>22.4f}{svc_s:>10.2f}")
    for name, res in rows.items():
        accs = [a for a, _ in res]
        spread = f"{statistics.median(accs):.4f} [{min(accs):.4f}-{max(accs):.4f}]"
        print(f"{name + ' (median of ' + str(len(res)) + ')':<34}{spread:>22}"
              f"{statistics.median(s for _, s in res):>10.2f}")
    best = statistics.median(a for a, _ in rows["CNN"])
    print(f"\nCNN / SVC accuracy ratio: {best / svc_acc:.4f}; target CNN >= 0.98: "
          f"{'PASS' if best >= 0.98 else 'FAIL'}")
    errors = {name: int(round((1 - statistics.median(a for a, _ in res)) * len(y_te)))
              for name, res in rows.items()}
    print(f"test errors (of {len(y_te)}): SVC {int(round((1 - svc_acc) * len(y_te)))}, "
          + ", ".join(f"{k} {v}" for k, v in errors.items()))


if __name__ == "__main__":
    main()
