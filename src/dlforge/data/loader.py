"""Batches of rows: bucketed by text length so padding stays small, each column collated by
its feature (texts padded per batch, images normalised and augmented, numbers stacked)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["BucketBatchSampler", "FeatureDataset", "make_loader"]


class FeatureDataset(Dataset):
    """Rows of encoded input columns (and targets). With ``train``, each feature's augmenter
    perturbs its column: text per row as it is read, images per batch in ``collate``."""

    def __init__(self, features: dict[str, Any], columns: dict[str, Any],
                 targets: np.ndarray | None = None, augmenters: dict[str, Any] | None = None):
        self.features = features
        self.columns = columns
        self.targets = targets
        self.augmenters = augmenters or {}
        self.n = len(next(iter(columns.values())))

    def set_epoch(self, epoch: int) -> None:
        for aug in self.augmenters.values():
            if hasattr(aug, "set_epoch"):
                aug.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[dict[str, Any], np.ndarray | None]:
        row = {name: f.item(self.columns[name], i, self.augmenters.get(name))
               for name, f in self.features.items()}
        return row, None if self.targets is None else self.targets[i]

    def collate(self, items: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
        inputs = {name: f.collate([row[name] for row, _ in items], self.augmenters.get(name))
                  for name, f in self.features.items()}
        batch: dict[str, Any] = {"inputs": inputs}
        if items[0][1] is not None:
            batch["labels"] = torch.from_numpy(np.stack([t for _, t in items]))
        return batch

    def lengths(self) -> np.ndarray:
        """Lengths of the first variable-length column (for bucketing), else all ones."""
        for name, f in self.features.items():
            lengths = f.lengths(self.columns[name])
            if lengths is not None:
                return lengths
        return np.ones(self.n, dtype=np.int64)


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into pools of ``pool`` batches, sort each pool by length, batch, shuffle
    the batches. With ``shuffle=False`` batches are the sorted order (for prediction).

    Seeded by ``seed + epoch`` (call :meth:`set_epoch`), so a resumed run sees the same batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0,
                 bucket: bool = True, pool: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.pool = pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable") if self.bucket else np.arange(n)
            yield from (order[i:i + bs].tolist() for i in range(0, n, bs))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        if self.bucket:
            size = bs * self.pool
            chunks = [order[i:i + size] for i in range(0, n, size)]
            order = np.concatenate(
                [c[np.argsort(self.lengths[c], kind="stable")] for c in chunks])
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        for j in rng.permutation(len(batches)):
            yield batches[j].tolist()


def make_loader(dataset: FeatureDataset, batch_size: int, shuffle: bool, seed: int = 0,
                bucket: bool = True) -> DataLoader:
    sampler = BucketBatchSampler(dataset.lengths(), batch_size, shuffle, seed, bucket)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate)
