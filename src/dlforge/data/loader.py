"""Batches of token ids: bucketed by length so padding stays small, padded per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["BucketBatchSampler", "TextDataset", "make_loader", "pad_collate"]


class TextDataset(Dataset):
    """Token ids (and targets); ``augment`` (training only) perturbs the ids as they are read."""

    def __init__(self, ids: Sequence[np.ndarray], targets: np.ndarray | None = None,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None):
        self.ids = ids
        self.targets = targets
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        if self.augment is not None and hasattr(self.augment, "set_epoch"):
            self.augment.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        ids = self.ids[i] if self.augment is None else self.augment(self.ids[i])
        return ids, None if self.targets is None else self.targets[i]


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


def pad_collate(items: list[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch; mask is True on real tokens."""
    lengths = [len(ids) for ids, _ in items]
    width = max(lengths)
    input_ids = torch.zeros((len(items), width), dtype=torch.long)  # [PAD] is id 0
    for row, (ids, _) in enumerate(items):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
    batch = {
        "input_ids": input_ids,
        "attention_mask": input_ids.new_tensor(
            np.arange(width)[None, :] < np.asarray(lengths)[:, None], dtype=torch.bool),
    }
    if items[0][1] is not None:
        batch["labels"] = torch.from_numpy(np.stack([t for _, t in items]))
    return batch


def make_loader(ids: Sequence[np.ndarray], targets: np.ndarray | None, batch_size: int,
                shuffle: bool, seed: int = 0, bucket: bool = True,
                augment: Callable[[np.ndarray], np.ndarray] | None = None) -> DataLoader:
    sampler = BucketBatchSampler([len(x) for x in ids], batch_size, shuffle, seed, bucket)
    return DataLoader(TextDataset(ids, targets, augment), batch_sampler=sampler,
                      collate_fn=pad_collate)
