"""Quickstart accuracy on the tweets task, next to the majority class and TF-IDF + logistic
regression, all on the same held-out test split (the quickstart's: 15%, stratified, seed 0).

    .venv/bin/python benchmarks/quickstart_accuracy.py [--precision auto|fp32|bf16] [--seeds 0,1]
        [--augment delete=0.1,mask=0.1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from dlforge import TextClassifier
from dlforge.cli.quickstart import quickstart_config
from dlforge.config import validate_config
from dlforge.data.datasets import trump_tweets
from dlforge.data.split import stratified_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--augment", default="", help="token augmentation, e.g. delete=0.1,mask=0.1")
    args = ap.parse_args()

    df = trump_tweets()
    y = (df["source"] == "iphone").to_numpy().astype(int)
    train_idx, test_idx = stratified_split(y, 0.15, seed=0)
    tr, te = df.iloc[train_idx], df.iloc[test_idx]
    rows = []

    majority = tr["source"].mode()[0]
    pred = np.full(len(te), majority)
    rows.append(("majority class", accuracy_score(te["source"], pred),
                 f1_score(te["source"], pred, average="macro"), 0.0))

    t0 = time.perf_counter()
    tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=4.0))
    tfidf.fit(tr["text"], tr["source"])
    pred = tfidf.predict(te["text"])
    rows.append(("TF-IDF (1-2 grams) + logistic regression", accuracy_score(te["source"], pred),
                 f1_score(te["source"], pred, average="macro"), time.perf_counter() - t0))

    for seed in [int(s) for s in args.seeds.split(",")]:
        raw = quickstart_config(Path("unused.csv"))
        raw["train"].update(precision=args.precision, seed=seed)
        raw["data"]["seed"] = seed
        if args.augment:
            raw["inputs"][0]["augment"] = {k: float(v) for k, v in
                                           (kv.split("=") for kv in args.augment.split(","))}
        cfg = validate_config(raw)
        t0 = time.perf_counter()
        clf = TextClassifier(config=cfg, verbose=0).fit(tr["text"], tr["source"])
        m = clf.evaluate(te["text"], te["source"])
        aug = f", augment {args.augment}" if args.augment else ""
        rows.append((f"dlforge Transformer ({clf.precision_}{aug}, seed {seed})",
                     m["accuracy"], m["macro_f1"], time.perf_counter() - t0))

    print(f"\nTweets: Android or iPhone? train {len(tr)}, test {len(te)}\n")
    print(f"{'model':<66} {'accuracy':>9} {'macro-F1':>9} {'seconds':>8}")
    for name, acc, f1, sec in rows:
        print(f"{name:<66} {acc:>9.4f} {f1:>9.4f} {sec:>8.1f}")
    out = Path(__file__).parent / "results" / "quickstart_accuracy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([dict(zip(("model", "accuracy", "macro_f1", "seconds"), r,
                                        strict=True)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
