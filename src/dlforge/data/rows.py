"""Fingerprints of the rows a model was fitted on, so that ``dlforge evaluate`` can say when
the data it scores overlaps them (a score on training rows overestimates the model).

A row's fingerprint is a 64-bit hash of its input columns, after cleaning, written as text
(so the same row read from CSV, JSONL or Parquet hashes alike). The run keeps the sorted,
distinct fingerprints of the training and validation rows in ``rows.npy`` (a plain NumPy
array: never pickled). Runs trained with differential privacy keep none: a fingerprint of a
training row would let whoever holds the run test whether a given row was in the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["FILE", "load_fingerprints", "overlap", "row_fingerprints"]

FILE = "rows.npy"


def row_fingerprints(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The sorted, distinct 64-bit fingerprints of ``df``'s rows over ``columns``."""
    if not len(df) or not columns:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(_hash(df, columns))


def overlap(df: pd.DataFrame, columns: list[str], fitted: np.ndarray) -> int:
    """How many rows of ``df`` have a fingerprint among ``fitted`` (the run's rows)."""
    if not len(df) or not len(fitted) or not all(c in df.columns for c in columns):
        return 0
    return int(np.isin(_hash(df, columns), fitted).sum())


def load_fingerprints(run: Path) -> np.ndarray | None:
    """The run's fingerprints, or None for a run that keeps none."""
    path = Path(run) / FILE
    if not path.is_file():
        return None
    arr = np.load(path, allow_pickle=False)
    return arr.astype(np.uint64, copy=False) if arr.dtype == np.uint64 else None


def _hash(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    text = df[columns].astype(str)
    return pd.util.hash_pandas_object(text, index=False).to_numpy(dtype=np.uint64)
