"""Callbacks: small objects the trainer calls at fixed points. Early stopping and progress
reporting live here; write your own by subclassing :class:`Callback`."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlforge.train.trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "Progress"]


class Callback:
    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, step: int, loss: float, n: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class EarlyStopping(Callback):
    """Stop when the monitored validation metric has not improved for ``patience`` epochs.
    Its counter lives in the trainer's state, so a resumed run stops where the original would."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.state["bad_epochs"] >= self.patience:
            trainer.should_stop = True
            trainer.log(f"early stopping: val {trainer.monitor} has not improved for "
                        f"{self.patience} epochs (best {trainer.state['best_score']:.4f} at epoch "
                        f"{trainer.state['best_epoch']})")


class Progress(Callback):
    """A rich progress bar on a terminal; one plain line per epoch otherwise."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, stream: Any = None):
        self.total_epochs = total_epochs
        self.steps = steps_per_epoch
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._progress = None

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[metric]}"),
                TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self._progress.start()

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self._t0, self._seen, self._loss_sum = time.perf_counter(), 0, 0.0
        if self._progress is not None:
            last = trainer.state["history"][-1] if trainer.state["history"] else {}
            metric = last.get(f"val_{trainer.monitor}")
            shown = f"val {trainer.monitor} {metric:.4f}" if metric is not None else ""
            self._task = self._progress.add_task("train", total=self.steps, loss=0.0, speed="",
                                                 metric=shown,
                                                 epoch=f"{epoch}/{self.total_epochs}")

    def on_batch_end(self, trainer: Trainer, step: int, loss: float, n: int) -> None:
        self._seen += n
        self._loss_sum += loss * n
        if self._progress is not None:
            rate = self._seen / max(time.perf_counter() - self._t0, 1e-9)
            self._progress.update(self._task, advance=1, loss=self._loss_sum / self._seen,
                                  speed=f"{rate:,.0f} samples/s")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.remove_task(self._task)
        trainer.log(format_epoch(row, trainer.monitor, self.total_epochs))

    def on_train_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()


def format_epoch(row: dict[str, Any], monitor: str, total: int) -> str:
    parts = [f"epoch {row['epoch']}/{total}: train loss {row['train_loss']:.4f}",
             f"val loss {row['val_loss']:.4f}"]
    for key in ("accuracy", "macro_f1", "roc_auc"):
        v = row.get(f"val_{key}")
        if v is not None:
            parts.append(f"val {key} {v:.4f}")
    parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    return ", ".join(parts)
