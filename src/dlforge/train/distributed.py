"""Data-parallel training on PyTorch's own engine: ``torchrun`` starts the processes,
``torch.distributed`` (gloo on CPU, NCCL on GPU) connects them, DDP averages the gradients.

``dlforge train --nproc N`` runs ``python -m torch.distributed.run --standalone
--nproc_per_node N -m dlforge.cli train ...``; on several machines, start ``torchrun`` yourself
with ``--nnodes`` and a rendezvous endpoint. The trainer notices the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and needs nothing else: ``train.batch_size`` stays the
global batch, split across the processes; only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["ShardedBatchSampler", "all_reduce_sum", "env_world", "is_main_process",
           "setup_distributed"]


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    return env_world()[0] == 0


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group torchrun prepared (once); return (rank, world, device). On CUDA
    each process takes the GPU of its local rank."""
    rank, world, local = env_world()
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        threads = os.environ.get("DLFORGE_THREADS_PER_PROCESS")
        if device.type == "cpu" and threads:  # set by dlforge train --nproc: share the cores
            torch.set_num_threads(int(threads))
    return rank, world, device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the processes (identity when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


class ShardedBatchSampler(Sampler[list[int]]):
    """Split each global batch of ``base`` between ``world`` processes: process ``rank`` takes
    its contiguous slice (so length buckets stay together). ``sizes`` holds the global batch
    sizes of the epoch, so each process can weigh its loss by its share and the averaged
    gradient equals one process's on the whole batch. A batch smaller than the number of
    processes is given whole to every process (identical gradients, same average)."""

    def __init__(self, base: Sampler[list[int]], rank: int, world: int):
        self.base, self.rank, self.world = base, rank, world
        self.batches: list[list[int]] = list(base)
        self.sizes = [len(b) for b in self.batches]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        self.batches = list(self.base)
        self.sizes = [len(b) for b in self.batches]

    def __len__(self) -> int:
        return len(self.batches)

    def share(self, i: int) -> tuple[int, int]:
        """(rows this process gets, rows the processes get in all) for batch ``i``."""
        n = self.sizes[i]
        if n < self.world:
            return n, n * self.world
        chunk = math.ceil(n / self.world)
        mine = max(0, min(n, (self.rank + 1) * chunk) - self.rank * chunk)
        return mine, n

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batches:
            if len(b) < self.world:
                yield list(b)
                continue
            chunk = math.ceil(len(b) / self.world)
            part = list(b[self.rank * chunk:(self.rank + 1) * chunk])
            yield part or list(b[-1:])  # never empty: every process must take every step
