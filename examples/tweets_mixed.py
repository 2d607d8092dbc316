"""Mixed inputs (the article's "multimodal fusion"): who sent the tweet, Android or iPhone,
from its text plus when it was sent: the hour (a category: the effect is not linear) and the
year (a number). One encoder per column, concatenated, then the head. Compared with the text
alone, on the same held-out 15%.

    .venv/bin/python examples/tweets_mixed.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from dlforge.config import validate_config
from dlforge.data.datasets import trump_tweets
from dlforge.estimators import files as api


def main() -> None:
    df = trump_tweets()
    when = pd.to_datetime(df["created_at"], utc=True).dt.tz_convert("US/Eastern")
    df["hour"] = when.dt.hour.astype(str)
    df["year"] = when.dt.year
    data = Path("runs/tweets-mixed-data")
    data.mkdir(parents=True, exist_ok=True)
    df.drop(columns="created_at").to_csv(data / "tweets.csv", index=False)
    base = {"data": {"path": str(data / "tweets.csv"), "test_split": 0.15},
            "output": {"name": "source"},
            "model": {"name": "cnn", "head_hidden": [64]},
            "train": {"epochs": 8, "lr": 1e-3}}
    text_only = validate_config({**base, "inputs": [{"name": "text"}]})
    mixed = validate_config({**base, "inputs": [{"name": "text"},
                                                {"name": "hour", "type": "category"},
                                                {"name": "year", "type": "numeric"}]})
    print(yaml.safe_dump({"inputs": [i.model_dump(exclude_defaults=True)
                                     for i in mixed.inputs]}, sort_keys=False))
    for name, cfg in (("text only", text_only), ("text + hour + year", mixed)):
        clf = api.train(cfg, Path("runs") / f"tweets-{name.split()[0]}", overwrite=True,
                        verbose=0)
        t = clf.metrics_["test"]
        print(f"{name:<24} test accuracy {t['accuracy']:.4f}, ROC-AUC {t['roc_auc']:.4f}")


if __name__ == "__main__":
    main()
