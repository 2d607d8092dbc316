"""Step 4 (beside tune and audit): how much data, time and compute a model needs.

``dlforge.estimate(...)`` and ``dlforge estimate``; every formula and its source is in
docs/estimate.md. Parts: ``arch`` (a Transformer's shape) and ``presets`` (published ones),
``counts`` (parameters and FLOPs of an Arch), ``ours`` (of our own families), ``memory``,
``hardware`` (catalogue, this machine, time and cost), ``scaling`` (Chinchilla), ``runs`` and
``measure`` (our run configs and directories), ``finetune`` and ``lm_finetune`` (fine-tuning a
pretrained causal LM folder: ``estimate_finetune``), ``report`` (FAQ lines and tables).
"""

from __future__ import annotations

from dlforge.estimate.api import estimate
from dlforge.estimate.arch import Arch, register_adapter
from dlforge.estimate.finetune import Batch, DataPlan
from dlforge.estimate.lm_finetune import estimate_finetune
from dlforge.estimate.presets import PRESETS

__all__ = ["PRESETS", "Arch", "Batch", "DataPlan", "estimate", "estimate_finetune",
           "register_adapter"]
