"""Data augmentation, applied to the training split only and seeded per epoch.

Text: random token deletion, swap and masking on token ids (the operations of "EDA", Wei & Zou
2019, minus the synonym steps, plus BERT-style masking). Numeric sequences: jitter, scaling and
window slicing (Um et al. 2017; Le Guennec et al. 2016). Images: ``dlforge.data.images``.
Evaluation and prediction never see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SeriesAugmenter", "TokenAugmenter"]


class TokenAugmenter:
    """Perturb a sequence of token ids: delete each token with probability ``delete``, swap
    ``swap × length`` random pairs of positions, replace each token by ``mask_id`` with
    probability ``mask``. A sequence never becomes empty. Tokens in ``protect`` (a pretrained
    tokenizer's [CLS], [SEP] ...) are never touched.

    Deterministic: the random stream is seeded by ``(seed, epoch)``; call :meth:`set_epoch` at
    the start of each epoch (the trainer does), so a resumed run sees the same augmentations.
    """

    def __init__(self, delete: float = 0.0, swap: float = 0.0, mask: float = 0.0,
                 mask_id: int = 4, seed: int = 0, protect: Sequence[int] = ()):
        for name, rate in (("delete", delete), ("swap", swap), ("mask", mask)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1), got {rate}")
        self.delete, self.swap, self.mask = delete, swap, mask
        self.mask_id = mask_id
        self.seed = seed
        self.protect = np.asarray(sorted(set(protect)), dtype=np.int64)
        self.set_epoch(0)

    @property
    def active(self) -> bool:
        return bool(self.delete or self.swap or self.mask)

    def _free(self, ids: np.ndarray) -> np.ndarray:
        """Positions the augmentation may touch: all but protected (special) tokens."""
        return ~np.isin(ids, self.protect) if len(self.protect) else np.ones(len(ids), bool)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch, 0xA06])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = ids
        free = self._free(out)
        if self.delete and free.sum() > 1:
            keep = (rng.random(len(out)) >= self.delete) | ~free
            if not keep[free].any():
                keep[np.flatnonzero(free)[rng.integers(free.sum())]] = True
            out = out[keep]
            free = self._free(out)
        if self.swap and free.sum() > 1:
            out = out.copy()
            pos = np.flatnonzero(free)
            for _ in range(rng.binomial(len(pos), self.swap)):
                i, j = pos[rng.integers(len(pos), size=2)]
                out[i], out[j] = out[j], out[i]
        if self.mask:
            hit = (rng.random(len(out)) < self.mask) & free
            if hit.any():
                out = np.where(hit, self.mask_id, out)
        return out


class SeriesAugmenter:
    """Perturb a numeric sequence (T, F) in standardised units: ``jitter`` adds Gaussian noise
    of that std to every value; ``scaling`` multiplies the sequence by one factor drawn from
    N(1, scaling²); ``slice`` crops a random contiguous part of at least (1 - slice) of the
    steps and stretches it back to T steps by linear interpolation (window slicing). The
    targets are left alone: these are label-preserving perturbations of the input.

    Seeded by ``(seed, epoch)`` like :class:`TokenAugmenter`.
    """

    def __init__(self, jitter: float = 0.0, scaling: float = 0.0, slice: float = 0.0,
                 seed: int = 0):
        for name, rate in (("jitter", jitter), ("scaling", scaling)):
            if rate < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {rate}")
        if not 0.0 <= slice < 1.0:
            raise ValueError(f"augment.slice must be in [0, 1), got {slice}")
        self.jitter, self.scaling, self.slice = jitter, scaling, slice
        self.seed = seed
        self.set_epoch(0)

    @property
    def active(self) -> bool:
        return bool(self.jitter or self.scaling or self.slice)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch, 0x5E41E5])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = np.asarray(x, dtype=np.float32)
        T = len(out)
        if self.slice and T > 2:
            keep = int(np.ceil(T * (1.0 - rng.uniform(0.0, self.slice))))
            keep = min(T, max(2, keep))
            start = int(rng.integers(0, T - keep + 1))
            part = out[start:start + keep]
            src = np.linspace(0.0, keep - 1.0, T)
            out = np.stack([np.interp(src, np.arange(keep), part[:, j])
                            for j in range(part.shape[1])], axis=1).astype(np.float32)
        if self.scaling:
            out = out * np.float32(rng.normal(1.0, self.scaling))
        if self.jitter:
            out = out + rng.normal(0.0, self.jitter, size=out.shape).astype(np.float32)
        return out
