"""One training loop for every model family.

Go deeper in steps: ``fit()`` for everyone; subclass and override ``train_step()`` or
``compute_loss()``; or write your own loop from the same parts (model, loaders, optimizer).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from dlforge.config import PrivacyConfig, TrainConfig
from dlforge.errors import ConfigError
from dlforge.models.pretrained import decayed_parameter_sets, split_parameters
from dlforge.train.callbacks import Callback, EarlyStopping, Progress
from dlforge.train.device import autocast, resolve_device, resolve_precision
from dlforge.train.distributed import ShardedBatchSampler, all_reduce_sum, setup_distributed
from dlforge.train.metrics import monitor_mode
from dlforge.train.recipe import choose_recipe

__all__ = ["Trainer", "adamw", "loss_fn", "make_optimizer", "make_scheduler", "predict_logits",
           "to_device"]

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


def adamw(sets: list[tuple[list[nn.Parameter], float]], weight_decay: float,
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over ``sets`` of (parameters, learning rate); weight decay on weight matrices and
    embeddings only (not biases, norms or other 1-D parameters); frozen parameters left out.
    The one optimizer of both training loops (this one and the language model's)."""
    groups = []
    for params, lr in sets:
        trainable = [p for p in params if p.requires_grad]
        groups += [{"params": [p for p in trainable if p.dim() >= 2], "lr": lr,
                    "weight_decay": weight_decay},
                   {"params": [p for p in trainable if p.dim() < 2], "lr": lr,
                    "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The fused kernel (one op for all parameters) where PyTorch has it for the device: 15% of
    # a training step of the article's model on the CPU; Hugging Face's default too.
    device = groups[0]["params"][0].device if groups else torch.device("cpu")
    fused = device.type in ("cpu", "cuda", "mps")
    return torch.optim.AdamW(groups, lr=sets[0][1], betas=betas, fused=fused)


def make_optimizer(model: nn.Module, cfg: TrainConfig, head_lr: float | None = None,
                   layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW (:func:`adamw`). With ``head_lr``, everything outside a pretrained encoder (the
    new head) gets that learning rate, the pretrained encoder ``cfg.lr``; with ``layer_decay``
    below 1, the encoder's layers get layer-wise decayed rates (the top at ``cfg.lr``)."""
    if layer_decay < 1.0:
        return adamw(decayed_parameter_sets(model, cfg.lr, layer_decay, head_lr),
                     cfg.weight_decay)
    if head_lr is None:
        return adamw([(list(model.parameters()), cfg.lr)], cfg.weight_decay)
    encoder, head = split_parameters(model)
    return adamw([(encoder, cfg.lr), (head, head_lr)], cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the steps, then cosine (or linear) decay to zero."""
    warm = int(cfg.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def loss_fn(kind: str, logits: torch.Tensor, labels: torch.Tensor,
            weight: torch.Tensor | None = None, smoothing: float = 0.0) -> torch.Tensor:
    """The loss for an output kind: BCE-with-logits on one logit (binary), per-class BCE
    (multilabel), softmax cross-entropy (category), mean squared error on the standardised
    target (numeric). Computed in fp32. ``weight``: one weight per class (binary and
    multi-class), each row's loss weighted by its class's, the mean taken over the weights.
    ``smoothing``: label smoothing of a classifier's targets (0/1 targets move
    ``smoothing / 2`` towards 1/2; softmax targets put ``smoothing`` evenly on all classes)."""
    logits = logits.float()
    if kind == "numeric":  # one number (N,), or several per row (N, K)
        out = logits[:, 0] if labels.dim() == 1 else logits
        return F.mse_loss(out, labels.float())
    if kind == "binary":
        targets = labels.float() * (1 - smoothing) + smoothing / 2
        if weight is None:
            return F.binary_cross_entropy_with_logits(logits[:, 0], targets)
        w = weight.to(logits.device)[labels.long()]
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], targets, reduction="none")
        return (losses * w).sum() / w.sum()
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(
            logits, labels.float() * (1 - smoothing) + smoothing / 2)
    return F.cross_entropy(logits, labels,
                           weight=None if weight is None else weight.to(logits.device),
                           label_smoothing=smoothing)


class Trainer:
    """Train ``model`` on batches of ``{"inputs": {column: tensor(s)}, "labels"}``.

    ``kind`` (binary, category, multilabel, numeric) picks the loss (see :func:`loss_fn`).
    ``metric_fn(y_true, logits)`` scores validation.
    With ``checkpoint_dir`` the last and best weights and the full training state are written
    after every epoch, and ``fit(resume=True)`` continues from them to the same result.
    With ``privacy``, training is DP-SGD (see :mod:`dlforge.train.dp`); the model must have
    been built private-ready, and ``privacy_report`` holds the ε spent after ``fit``.
    """

    def __init__(self, model: nn.Module, kind: str, cfg: TrainConfig, metric_fn: MetricFn,
                 monitor: str, callbacks: Sequence[Callback] = (),
                 checkpoint_dir: str | Path | None = None, verbose: int = 1,
                 log: Callable[[str], None] | None = None, head_lr: float | None = None,
                 privacy: PrivacyConfig | None = None, family: str = "mlp",
                 class_weights: np.ndarray | None = None, layer_decay: float = 1.0):
        self.cfg = cfg
        self.layer_decay = layer_decay
        self.class_weights = (None if class_weights is None
                              else torch.as_tensor(class_weights, dtype=torch.float32))
        self.family = family  # picks the recipe of settings ``cfg`` leaves unset
        self.privacy = privacy
        self.privacy_report: dict[str, Any] | None = None
        self._dp: Any = None
        self.head_lr = head_lr
        self.kind = kind
        self.rank, self.world, self.device = setup_distributed(resolve_device(cfg.device))
        self.precision = resolve_precision(cfg.precision, self.device)
        if privacy is not None:
            if self.world > 1:
                raise ConfigError("privacy: differentially private training runs in one "
                                  "process; train without --nproc (torchrun)")
            # Per-row gradients, whose norms the guarantee clips, in fp32.
            self.precision = "fp32"
        self.model = model.to(self.device)
        self.metric_fn = metric_fn
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.callbacks = list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.verbose = verbose if self.rank == 0 else 0  # one voice for all the processes
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.should_stop = False
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": None,
                                      "best_epoch": 0, "bad_epochs": 0, "history": []}
        self._forward: nn.Module = self.model
        if self.world > 1:  # gradients averaged over the processes at each optimizer step
            from torch.nn.parallel import DistributedDataParallel

            if self.device.type == "cuda":  # batch-norm statistics over the global batch
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            # A pretrained encoder may hold weights the loss never reaches (BERT's pooler).
            unused = any(type(m).__name__ == "PretrainedEncoder" for m in self.model.modules())
            self._forward = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=unused)
        self._predict = self.model
        if cfg.compile:
            self._forward = torch.compile(self._forward, dynamic=True)
            self._predict = torch.compile(self.model, dynamic=True)

    def log(self, msg: str) -> None:
        if self.verbose:
            self._log(msg)

    # ------------------------------------------------------------------ the steps
    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor,
                     training: bool = False) -> torch.Tensor:
        """The loss of ``logits`` against ``labels``; ``training``: with the run's label
        smoothing (the validation loss is never smoothed)."""
        return loss_fn(self.kind, logits, labels, self.class_weights,
                       (self.cfg.label_smoothing or 0.0) if training else 0.0)

    def train_step(self, batch: dict[str, Any], step_optimizer: bool = True,
                   scale: float = 1.0) -> float:
        """Forward and backward on one (micro-)batch, the loss multiplied by ``scale``; then,
        if ``step_optimizer``, clip and take the optimizer and scheduler step."""
        batch = to_device(batch, self.device)
        sync: contextlib.AbstractContextManager = contextlib.nullcontext()
        if self.world > 1 and not step_optimizer and hasattr(self._forward, "no_sync"):
            sync = self._forward.no_sync()  # accumulate locally; all-reduce on the last one
        if self._dp is not None:
            from dlforge.train.dp import quiet_hooks

            sync = quiet_hooks()
        with sync:
            with autocast(self.device, self.precision):
                logits = self._forward(batch["inputs"])
            loss = self.compute_loss(logits, batch["labels"], training=True)
            (loss * scale).backward()
        if step_optimizer:
            if self.cfg.grad_clip and self._dp is None:  # DP-SGD clips each row instead
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def predict_logits(self, loader: DataLoader) -> np.ndarray:
        return predict_logits(self._predict, loader, self.device, self.precision)

    def evaluate(self, loader: DataLoader, targets: np.ndarray) -> dict[str, Any]:
        logits = self.predict_logits(loader)
        loss = float(self.compute_loss(torch.from_numpy(logits), torch.from_numpy(targets)))
        return {"loss": loss, **self.metric_fn(targets, logits)}

    # ------------------------------------------------------------------ the loop
    def fit(self, train_loader: DataLoader, val_loader: DataLoader | None,
            val_targets: np.ndarray | None, resume: bool = False) -> list[dict[str, Any]]:
        """Train for ``cfg.epochs`` (or until early stopping). Without a validation loader
        every epoch trains, nothing is monitored and the last weights are kept. Settings the
        config leaves unset are chosen by the recipe (:mod:`dlforge.train.recipe`) for the
        training rows and ``family`` (an estimator has chosen them already)."""
        self.cfg, _ = choose_recipe(self.cfg, len(train_loader.dataset), self.family, self.kind)
        cfg = self.cfg
        torch.manual_seed(cfg.seed + self.rank)  # dropout streams differ between processes
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if self.world > 1 or cfg.accumulate > 1:
            # Each process takes its slice of every global batch; the epoch's batch sizes are
            # known up front, so every micro-batch is weighted by its share of the rows of
            # its optimizer step.
            train_loader = DataLoader(
                train_loader.dataset, collate_fn=train_loader.collate_fn,
                batch_sampler=ShardedBatchSampler(train_loader.batch_sampler, self.rank,
                                                  self.world))
        steps_per_epoch = len(train_loader)
        acc = cfg.accumulate
        updates_per_epoch = math.ceil(steps_per_epoch / acc)
        self.optimizer = make_optimizer(self.model, cfg, self.head_lr, self.layer_decay)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler = make_scheduler(self.optimizer, cfg, cfg.epochs * updates_per_epoch)
        if resume:
            if self.privacy is not None:
                raise ConfigError("privacy: a differentially private run cannot be resumed (its "
                                  "privacy accountant is not checkpointed); train it again")
            self.load_checkpoint()
        if self.privacy is not None:
            from dlforge.train.dp import make_private

            self._dp = make_private(self.model, self.optimizer, train_loader, self.privacy,
                                    cfg.epochs, cfg.seed)
            self._forward, self.optimizer, train_loader = (self._dp.module, self._dp.optimizer,
                                                           self._dp.loader)
            self.log(f"privacy: DP-SGD, noise multiplier {self._dp.noise_multiplier:.3g}, "
                     f"max grad norm {self.privacy.max_grad_norm}, target ε "
                     f"{self.privacy.target_epsilon} at δ {self.privacy.target_delta:g}")
        # The epoch's line first, then the user's callbacks, then early stopping's verdict.
        callbacks = [Progress(cfg.epochs, steps_per_epoch)] if self.verbose else []
        callbacks += self.callbacks
        if cfg.patience and val_loader is not None:
            callbacks.append(EarlyStopping(cfg.patience))
        for cb in callbacks:
            cb.on_train_begin(self)
        self.should_stop = bool(self.state.get("stopped"))
        sampler = train_loader.batch_sampler
        for epoch in range(self.state["epoch"] + 1, cfg.epochs + 1):
            if self.should_stop:
                break
            for seeded in (sampler, train_loader.dataset):  # batch order, augmentation
                if hasattr(seeded, "set_epoch"):
                    seeded.set_epoch(epoch)
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)
            # Dropout's stream, from (seed, process, epoch): a resumed run (on any number of
            # processes) draws exactly what the uninterrupted one did.
            torch.manual_seed((cfg.seed * 1_000_003 + self.rank * 7_919 + epoch) % 2**63)
            self.model.train()
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            for step, batch in enumerate(train_loader, start=1):
                n = len(batch["labels"]) if isinstance(batch, dict) else 0
                if n == 0:  # Poisson sampling drew no row: a noise-only step
                    self._dp.empty_step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.state["step"] += 1
                    continue
                group = (step - 1) // acc  # the optimizer step this micro-batch belongs to
                last = step == min(steps_per_epoch, (group + 1) * acc)
                scale = 1.0
                if isinstance(sampler, ShardedBatchSampler):
                    mine, _ = sampler.share(step - 1)
                    rows = sum(sampler.share(i)[1] for i in range(
                        group * acc, min(steps_per_epoch, (group + 1) * acc)))
                    n = mine
                    scale = mine * self.world / max(rows, 1)
                loss = self.train_step(batch, step_optimizer=last, scale=scale)
                seen += n
                loss_sum += loss * n
                self.state["step"] += 1
                for cb in callbacks:
                    cb.on_batch_end(self, step, loss, n)
            loss_sum, seen = all_reduce_sum([loss_sum, float(seen)], self.device)
            elapsed = time.perf_counter() - t0
            val = ({} if val_loader is None or val_targets is None
                   else self.evaluate(val_loader, val_targets))
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                   **{f"val_{k}": v for k, v in val.items() if not isinstance(v, dict | list)},
                   "lr": self.scheduler.get_last_lr()[0], "seconds": elapsed,
                   "samples_per_s": seen / max(elapsed, 1e-9)}
            if val:
                self._track_best(epoch, row[f"val_{self.monitor}"], row.get("val_loss"))
            else:
                self.state["best_epoch"] = epoch  # nothing to compare: the last epoch
            self.state["epoch"] = epoch
            self.state["history"].append(row)
            for cb in callbacks:
                cb.on_epoch_end(self, row)
            self.state["stopped"] = self.should_stop
            if self.checkpoint_dir is not None and self.rank == 0:
                self.save_checkpoint()
        if self._dp is not None:
            self.privacy_report = self._dp.report()
            self._dp.close()
            self._dp = None
            self._forward = self.model
            self.log(f"privacy: ε = {self.privacy_report['epsilon']:.3g} spent at δ "
                     f"{self.privacy.target_delta:g} ({self.privacy_report['steps']} noisy steps)")
        for cb in callbacks:
            cb.on_train_end(self)
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return self.state["history"]

    def _track_best(self, epoch: int, score: float | None, loss: float | None = None) -> None:
        """Keep the weights of the best epoch so far. A tie on the monitored score (common
        with accuracy on a small validation split) goes to the lower validation loss."""
        if score is None or (isinstance(score, float) and math.isnan(score)):
            score = -math.inf if self.mode == "max" else math.inf
        best = self.state["best_score"]
        best_loss = self.state.get("best_loss")
        tie_won = (best is not None and score == best and loss is not None
                   and best_loss is not None and loss < best_loss)
        better = best is None or tie_won or (score > best if self.mode == "max" else score < best)
        if better:
            self.state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_loss=loss)
            self.best_weights = copy.deepcopy(self.model.state_dict())
            if self.checkpoint_dir is not None and self.rank == 0:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.checkpoint_dir / ".best.safetensors.tmp"
                save_file(_contiguous(self.best_weights), tmp)
                tmp.replace(self.checkpoint_dir / "best.safetensors")
        else:
            self.state["bad_epochs"] += 1

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Last weights (safetensors) and the training state (our own tensors and numbers,
        loaded back with ``weights_only=True``), each written to a temp name and renamed."""
        d = self.checkpoint_dir
        assert d is not None
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / ".last.safetensors.tmp"
        save_file(_contiguous(self.model.state_dict()), tmp)
        tmp.replace(d / "last.safetensors")
        state = {
            "trainer": {k: v for k, v in self.state.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        tmp = d / ".train_state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(d / "train_state.pt")

    def load_checkpoint(self) -> None:
        d = self.checkpoint_dir
        assert d is not None
        state = torch.load(d / "train_state.pt", weights_only=True, map_location="cpu")
        self.model.load_state_dict(load_file(d / "last.safetensors", device=str(self.device)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.state = state["trainer"]
        if (d / "best.safetensors").exists():
            self.best_weights = load_file(d / "best.safetensors", device=str(self.device))


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   precision: str) -> np.ndarray:
    """Logits in the dataset's order (the loader may batch in length order)."""
    model.eval()
    order, outs = [], []
    for idx in loader.batch_sampler:
        batch = loader.collate_fn([loader.dataset[i] for i in idx])
        with autocast(device, precision):
            logits = model(to_device(batch["inputs"], device))
        outs.append(logits.float().cpu().numpy())
        order.extend(idx)
    out = np.empty((len(order), outs[0].shape[1]), dtype=np.float32)
    out[np.asarray(order)] = np.concatenate(outs)
    return out


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a (nested dict of) tensor(s) to ``device``."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in sd.items()}
