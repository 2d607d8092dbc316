"""Data augmentation, applied to the training split only and seeded per epoch.

Text: random token deletion, swap and masking on token ids (the operations of "EDA", Wei & Zou
2019, minus the synonym steps, plus BERT-style masking). Evaluation and prediction never see it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TokenAugmenter"]


class TokenAugmenter:
    """Perturb a sequence of token ids: delete each token with probability ``delete``, swap
    ``swap × length`` random pairs of positions, replace each token by ``mask_id`` with
    probability ``mask``. A sequence never becomes empty.

    Deterministic: the random stream is seeded by ``(seed, epoch)``; call :meth:`set_epoch` at
    the start of each epoch (the trainer does), so a resumed run sees the same augmentations.
    """

    def __init__(self, delete: float = 0.0, swap: float = 0.0, mask: float = 0.0,
                 mask_id: int = 4, seed: int = 0):
        for name, rate in (("delete", delete), ("swap", swap), ("mask", mask)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1), got {rate}")
        self.delete, self.swap, self.mask = delete, swap, mask
        self.mask_id = mask_id
        self.seed = seed
        self.set_epoch(0)

    @property
    def active(self) -> bool:
        return bool(self.delete or self.swap or self.mask)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch, 0xA06])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = ids
        if self.delete and len(out) > 1:
            keep = rng.random(len(out)) >= self.delete
            if not keep.any():
                keep[rng.integers(len(out))] = True
            out = out[keep]
        if self.swap and len(out) > 1:
            out = out.copy()
            for _ in range(rng.binomial(len(out), self.swap)):
                i, j = rng.integers(len(out), size=2)
                out[i], out[j] = out[j], out[i]
        if self.mask:
            hit = rng.random(len(out)) < self.mask
            if hit.any():
                out = np.where(hit, self.mask_id, out)
        return out
