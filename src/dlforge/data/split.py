"""Seeded, stratified splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from dlforge.config import RunConfig

__all__ = ["kfold", "split_rows", "stratified_split"]


def stratified_split(strata: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` held out, stratified by ``strata`` when every
    class has at least two members (otherwise a plain seeded shuffle split)."""
    n = len(strata)
    idx = np.arange(n)
    n_out = max(1, int(round(n * fraction)))
    if n - n_out < 1:
        raise ValueError(f"cannot hold out {fraction:.0%} of {n} rows and keep any")
    _, counts = np.unique(strata, return_counts=True)
    stratify = strata if counts.min() >= 2 and n_out >= len(counts) else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(out)


def kfold(strata: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, held_out) index pairs covering every row once as held out; stratified by
    ``strata`` when every class has at least ``k`` members, else plain shuffled folds."""
    n = len(strata)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= {n} rows, got k={k}")
    _, counts = np.unique(strata, return_counts=True)
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if counts.min() >= k
                else KFold(k, shuffle=True, random_state=seed))
    return [(np.sort(tr), np.sort(te)) for tr, te in splitter.split(np.zeros(n), strata)]


def split_rows(strata: np.ndarray, cfg: RunConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices of the cleaned frame: the test rows first, then
    the validation rows from the rest, each stratified by ``strata`` with ``data.seed``. The
    same data and config always give the same split (the privacy audit rebuilds it)."""
    idx = np.arange(len(strata))
    test_idx = np.array([], dtype=np.int64)
    if cfg.data.test_split > 0:
        idx, test_idx = stratified_split(strata, cfg.data.test_split, cfg.data.seed)
    if cfg.data.validation_split > 0:
        tr, va = stratified_split(strata[idx], cfg.data.validation_split, cfg.data.seed)
        return idx[tr], idx[va], test_idx
    # no validation rows: train on all of them (e.g. a final refit)
    return idx, np.array([], dtype=np.int64), test_idx

