"""Differentially private training of a language model (DP-SGD, Abadi et al. 2016).

The private unit is a **record**: the training tokens are cut into disjoint blocks of
``block_size + 1`` tokens (a window and its next token), and the guarantee is that the trained
weights change little in distribution whether any one record is in the corpus or not. A text
that spans k records (a document longer than a window) is covered with k·ε by group privacy:
choose the window, or split the corpus, with that in mind.

Each step draws a batch by Poisson sampling (every record joins with probability
``q = batch_size / records``, so the batch size varies, as the accounting assumes), computes
every record's gradient exactly with ``torch.func`` (``vmap`` over ``grad``: the GPT ties its
output head to the token embedding through a functional call, which per-layer hooks such as
Opacus' cannot see), clips each to ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier × max_grad_norm`` to their sum and divides by the expected batch size. The
noise multiplier comes from Opacus' accountant so that ``max_steps`` steps spend at most the
target ε at δ; the accountant (RDP by default) reports what was spent.

Not covered: the tokenizer (its vocabulary comes from the corpus without noise). The losses a
private run reports are the validation split's only (the held-out 10%); no loss on the training
text is measured or saved.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge._extras import PRIVACY_FEATURE, require
from dlforge.config import PrivacyConfig
from dlforge.errors import ConfigError

__all__ = ["PrivateLM", "per_record_gradients"]

CHUNK = 16  # records whose per-record gradients are held at once (memory: CHUNK × parameters)


def per_record_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         context: Callable[[], Any]) -> tuple[dict[str, torch.Tensor],
                                                             torch.Tensor]:
    """Each row's gradient of its own mean loss, ``{name: (B, *shape)}``, and the losses (B,)
    — ``torch.func.vmap`` over ``torch.func.grad`` of the model called on one row at a time.
    ``context()`` is entered around the forward pass (autocast)."""
    from torch.func import functional_call, grad, vmap

    from dlforge.models.layers import explicit_attention_everywhere

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        with context():
            _, loss = functional_call(model, p, (xi[None], yi[None]))
        return loss, loss.detach()

    with explicit_attention_everywhere():
        grads, losses = vmap(grad(loss_of, has_aux=True), in_dims=(None, 0, 0),
                             randomness="different")(params, x, y)
    return grads, losses


class PrivateLM:
    """The DP-SGD state of one training run: records, sampling rate, noise, the accountant."""

    def __init__(self, cfg: PrivacyConfig, n_records: int, batch_size: int, steps: int):
        require("opacus", "privacy", PRIVACY_FEATURE)
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        if n_records <= batch_size:
            raise ConfigError(
                f"privacy: the training part holds {n_records} records (disjoint windows of "
                f"block_size + 1 tokens) and batch_size is {batch_size}: DP-SGD samples each "
                "record with probability batch_size / records, which must be below 1; give "
                "more text or a smaller batch_size or block_size")
        self.cfg = cfg
        self.n_records = n_records
        self.expected_batch = batch_size
        self.sample_rate = batch_size / n_records
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.noise_multiplier = float(get_noise_multiplier(
                    target_epsilon=cfg.target_epsilon, target_delta=cfg.target_delta,
                    sample_rate=self.sample_rate, steps=steps, accountant=cfg.accountant))
        except ValueError as err:  # Opacus: "The privacy budget is too low."
            raise ConfigError(
                f"privacy.target_epsilon: no noise level spends as little as ε = "
                f"{cfg.target_epsilon:g} over {steps} steps at sampling rate "
                f"{self.sample_rate:.3g} ({err}); raise target_epsilon or train fewer steps"
            ) from None
        self.accountant = create_accountant(cfg.accountant)

    # ----------------------------------------------------------------- sampling
    def sample(self, gen: torch.Generator) -> np.ndarray:
        """The records of one batch: each with probability ``sample_rate`` (Poisson)."""
        drawn = torch.rand(self.n_records, generator=gen) < self.sample_rate
        return drawn.nonzero().flatten().numpy()

    # ----------------------------------------------------------------- the step
    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 context: Callable[[], Any], noise: torch.Generator) -> float:
        """Set every parameter's ``.grad`` to the noisy mean of the clipped per-record
        gradients of batch ``(x, y)`` (possibly empty: then noise only) and count the step;
        returns the batch's mean loss (nan for an empty batch)."""
        c = self.cfg.max_grad_norm
        params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        total = {k: torch.zeros_like(p) for k, p in params}
        loss_sum = 0.0
        for start in range(0, len(x), CHUNK):
            grads, losses = per_record_gradients(model, x[start:start + CHUNK],
                                                 y[start:start + CHUNK], context)
            norms = torch.sqrt(sum(g.float().flatten(1).square().sum(1) for g in grads.values()))
            scale = (c / (norms + 1e-6)).clamp(max=1.0)  # (chunk,)
            for k, g in grads.items():
                total[k] += torch.einsum("b,b...->...", scale.to(g.dtype), g).to(total[k].dtype)
            loss_sum += float(losses.float().sum())
        for k, p in params:
            noisy = torch.normal(0.0, self.noise_multiplier * c, size=p.shape,
                                 generator=noise, device=p.device, dtype=p.dtype)
            p.grad = (total[k] + noisy) / self.expected_batch
        self.accountant.step(noise_multiplier=self.noise_multiplier,
                             sample_rate=self.sample_rate)
        return loss_sum / len(x) if len(x) else math.nan

    # ----------------------------------------------------------------- reporting
    def resume(self, steps: int) -> None:
        """The accountant as after ``steps`` steps (a resumed run)."""
        if steps:
            self.accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]

    @property
    def steps(self) -> int:
        return int(sum(n for _, _, n in self.accountant.history))

    def epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(self.accountant.get_epsilon(self.cfg.target_delta))

    def report(self, block_size: int) -> dict[str, Any]:
        """The run's ``privacy.json``."""
        return {"epsilon": self.epsilon(), "delta": self.cfg.target_delta,
                "accountant": self.cfg.accountant, "max_grad_norm": self.cfg.max_grad_norm,
                "noise_multiplier": self.noise_multiplier,
                "target_epsilon": self.cfg.target_epsilon, "sample_rate": self.sample_rate,
                "steps": self.steps, "records": self.n_records,
                "record": f"a window of {block_size} tokens and its next token (disjoint); a "
                          "text spanning k records is covered at k·ε (group privacy)",
                "covers": "the model weights (and no loss on the training text is "
                          "reported); not the tokenizer's vocabulary, which comes from the "
                          "corpus without noise"}
