"""Data-size-aware training recipes.

The optimisation settings a run leaves unset (``None`` in ``train:``: epochs, batch size,
learning rate, weight decay, warm-up, patience) are chosen here from the number of training
rows and the model family, once the split is known; settings the user gave always win. The
chosen values are printed and saved in the run's resolved ``config.yaml``.

The rule aims at a number of optimiser steps rather than a number of epochs: a few hundred
rows at the article's 5 epochs × batch 64 are ~45 steps, too few for a model trained from
scratch to learn anything; small data gets smaller batches and more epochs, with early stopping
on the validation split (and the best epoch's weights restored) to end the run when it stops
improving. Pretrained encoders get the recipe the few-sample fine-tuning literature found
stable (Mosbach et al., 2021; Zhang et al., 2021): a small learning rate with warm-up, small
batches and more epochs than the three of the original BERT recipe.
"""

from __future__ import annotations

import math
from typing import Any

from dlforge.config import TrainConfig

__all__ = ["AUTO_FIELDS", "MIN_STEPS", "choose_recipe", "optimiser_steps", "steps_warning"]

# The TrainConfig fields a recipe fills when they are None.
AUTO_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup", "patience", "restarts",
               "label_smoothing")

# Optimiser steps a recipe aims at, and below which a run is told it may be too short to
# learn: a model from scratch, and a pretrained encoder (which starts from useful features).
TARGET_STEPS = {"scratch": 1200, "pretrained": 500}
MIN_STEPS = {"scratch": 200, "pretrained": 60}
MAX_EPOCHS = {"scratch": 60, "pretrained": 15}
# Below this many training rows a pretrained encoder is fine-tuned RESTARTS times from
# different seeds, keeping the best on validation: few-sample fine-tuning is known to fail on
# some seeds (Dodge et al., 2020; Mosbach et al., 2021), and a few hundred rows train fast.
FEW_ROWS, RESTARTS = 1000, 3
LEARNING_RATES = {"transformer": 5e-4, "cnn": 1e-3, "rnn": 1e-3, "mlp": 1e-3,
                  "pretrained": 5e-5}
# Label smoothing of a binary or multi-class network trained from scratch: measured on the
# quality suite (benchmarks/quality.py --set label_smoothing=0.1, issue 17) it scored the same
# or better on every data set it was tried on (digits, credit, cancer, tweets, tate).
LABEL_SMOOTHING = 0.1


def _regime(family: str) -> str:
    return "pretrained" if family == "pretrained" else "scratch"


def _batch_size(n_train: int, family: str) -> int:
    """16 below 1,000 rows, 32 below 4,000, 64 below 16,000, then 128 (pretrained: at most
    32, as fine-tuning small data is most stable with small batches)."""
    size = 16 if n_train < 1000 else 32 if n_train < 4000 else 64 if n_train < 16000 else 128
    return min(size, 32) if family == "pretrained" else size


def optimiser_steps(cfg: TrainConfig, n_train: int) -> int:
    """The optimiser steps ``cfg`` takes on ``n_train`` rows if it runs every epoch (the
    global batch is split across processes: the count is the same under torchrun)."""
    batches = math.ceil(n_train / max(1, cfg.batch_size))
    return cfg.epochs * math.ceil(batches / cfg.accumulate)


def choose_recipe(cfg: TrainConfig, n_train: int, family: str, kind: str | None = None
                  ) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with each unset (None) field of :data:`AUTO_FIELDS` chosen from ``n_train``,
    ``family`` and the output ``kind`` (binary, category, ...; None: unknown); and the chosen
    values (empty when the user set them all)."""
    regime = _regime(family)
    chosen: dict[str, Any] = {}
    batch_size = cfg.batch_size or _batch_size(n_train, family)
    if cfg.batch_size is None:
        chosen["batch_size"] = batch_size
    if cfg.epochs is None:
        updates = math.ceil(math.ceil(n_train / batch_size) / cfg.accumulate)
        wanted = math.ceil(TARGET_STEPS[regime] / max(1, updates))
        chosen["epochs"] = int(min(MAX_EPOCHS[regime], max(5 if regime == "scratch" else 3,
                                                              wanted)))
    epochs = cfg.epochs or chosen["epochs"]
    if cfg.lr is None:
        chosen["lr"] = LEARNING_RATES.get(family, 1e-3)
    if cfg.weight_decay is None:
        chosen["weight_decay"] = 0.01
    if cfg.warmup is None:
        chosen["warmup"] = 0.1 if regime == "pretrained" else 0.05
    if cfg.patience is None:
        # Long runs wait longer for the validation score to improve: an eighth of the epochs.
        chosen["patience"] = int(max(3, min(8, round(epochs / 8))))
    if cfg.restarts is None:
        chosen["restarts"] = RESTARTS if regime == "pretrained" and n_train < FEW_ROWS else 1
    if cfg.label_smoothing is None:
        chosen["label_smoothing"] = (LABEL_SMOOTHING if regime == "scratch"
                                     and kind in ("binary", "category") else 0.0)
    return cfg.model_copy(update=chosen), chosen


def steps_warning(cfg: TrainConfig, n_train: int, family: str) -> str | None:
    """One line when ``cfg`` leaves too few optimiser steps for ``family`` to learn from
    ``n_train`` rows (None otherwise)."""
    steps = optimiser_steps(cfg, n_train)
    floor = MIN_STEPS[_regime(family)]
    if steps >= floor:
        return None
    batches = math.ceil(n_train / cfg.batch_size)
    return (f"training: {cfg.epochs} epochs x {batches} batches of {cfg.batch_size} on "
            f"{n_train} rows = {steps} optimiser steps, fewer than the ~{floor} a {family} model "
            f"needs to learn; leave epochs and batch_size unset to let dlforge choose them from "
            f"the data size, or raise epochs / lower batch_size")


def apply_recipe(cfg: Any, n_train: int, say: Any, kind: str | None = None) -> Any:
    """The run config ``cfg`` (a :class:`~dlforge.config.RunConfig`) with its training recipe
    chosen for ``n_train`` rows and the output ``kind`` (:func:`choose_recipe`), saying what
    was chosen and warning (:func:`steps_warning`) when the settings leave too few steps."""
    family = cfg.model.name
    train, chosen = choose_recipe(cfg.train, n_train, family, kind)
    shown = {k: v for k, v in chosen.items() if not (k == "label_smoothing" and v == 0)}
    if shown:
        say("recipe: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float)
                                   else f"{k.replace('_', ' ')} {v}" for k, v in shown.items())
            + f" (chosen for {n_train} training rows and the {family} family; set any of them "
              "to override)")
    warning = steps_warning(train, n_train, family)
    if warning:
        say(warning)
    return cfg.model_copy(update={"train": train})
