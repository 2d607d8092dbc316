"""Differentially private training (DP-SGD) through Opacus.

Each optimizer step clips every row's gradient to ``max_grad_norm`` and adds Gaussian noise
of standard deviation ``noise_multiplier x max_grad_norm`` to their sum; batches are drawn by
Poisson sampling (each training row joins each batch with probability ``sample_rate``), as the
privacy accounting assumes. Opacus picks the noise so the whole training spends at most the
target ε at δ, and its accountant reports the ε actually spent (fewer steps, e.g. after early
stopping, spend less).

The model must be built private-ready (:func:`dlforge.models.registry.build_model` does it
when the config has a ``privacy`` section): batch-norm becomes group-norm (batch statistics
mix rows), and GRU/LSTM become Opacus' DPGRU/DPLSTM (same weights and state-dict names).
Every other layer of ours has an Opacus per-row gradient rule (Linear, Embedding, Conv,
LayerNorm, GroupNorm) or goes through its functorch fallback (the position embedding).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlforge._extras import PRIVACY_FEATURE, require
from dlforge.config import PrivacyConfig
from dlforge.errors import ConfigError

__all__ = ["PrivateTraining", "make_private", "quiet_hooks"]


@contextlib.contextmanager
def quiet_hooks() -> Iterator[None]:
    """Silence PyTorch's note, on every backward pass through Opacus' hooks, that full backward
    hooks fire although the inputs (token ids) need no gradient."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class PrivateTraining:
    """What :func:`make_private` returns: the per-row-gradient ``module`` to train through,
    the noisy ``optimizer``, the Poisson-sampling ``loader`` and the accountant's report."""

    def __init__(self, engine: Any, module: Any, optimizer: Any, loader: DataLoader,
                 cfg: PrivacyConfig):
        self.engine = engine
        self.module = module
        self.optimizer = optimizer
        self.loader = loader
        self.cfg = cfg

    @property
    def noise_multiplier(self) -> float:
        return float(self.optimizer.noise_multiplier)

    def empty_step(self) -> None:
        """An optimizer step for a batch that Poisson sampling left empty: noise only. (Skipping
        it would reveal that no row was drawn; the accountant counts the step either way.)"""
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()

    def epsilon(self) -> float:
        """The ε spent so far at the configured δ."""
        if not len(self.engine.accountant):  # no step taken yet
            return 0.0
        with warnings.catch_warnings():  # the GDP accountant warns it is approximate
            warnings.simplefilter("ignore")
            return float(self.engine.get_epsilon(self.cfg.target_delta))

    def report(self) -> dict[str, Any]:
        """The run's ``privacy.json``."""
        steps = sum(n for _, _, n in self.engine.accountant.history)
        return {"epsilon": self.epsilon(), "delta": self.cfg.target_delta,
                "accountant": self.cfg.accountant, "max_grad_norm": self.cfg.max_grad_norm,
                "noise_multiplier": self.noise_multiplier,
                "target_epsilon": self.cfg.target_epsilon,
                "sample_rate": float(self.loader.sample_rate), "steps": int(steps),
                "covers": "the model weights; the fitted features (tokenizer vocabulary, "
                          "normalisation statistics, label map) come from the training rows "
                          "without noise"}

    def close(self) -> None:
        """Detach Opacus' hooks, and the per-row and summed gradients it keeps on the
        parameters, from the model."""
        params = list(self.optimizer.params)
        self.module._close()
        for p in params:
            for attr in ("grad_sample", "summed_grad", "_processed"):
                if hasattr(p, attr):
                    delattr(p, attr)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 cfg: PrivacyConfig, epochs: int, seed: int) -> PrivateTraining:
    """Wrap ``model``, ``optimizer`` and ``loader`` for DP-SGD over ``epochs`` epochs at the
    target ε of ``cfg``. Poisson sampling and the noise draw from generators seeded with
    ``seed``, so the same seed trains the same model (Opacus' secure mode, which draws from the
    OS, is off: these runs are reproducible, not hardened against floating-point attacks)."""
    require("opacus", "privacy", PRIVACY_FEATURE)
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    sampler_rng = torch.Generator().manual_seed(seed)
    noise_rng = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 1)
    poisson = DPDataLoader.from_data_loader(loader, generator=sampler_rng)
    with warnings.catch_warnings():  # Opacus' note that secure mode is off
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=False)
        try:
            module, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=poisson,
                target_epsilon=cfg.target_epsilon, target_delta=cfg.target_delta,
                epochs=epochs, max_grad_norm=cfg.max_grad_norm,
                poisson_sampling=False,  # already Poisson
                noise_generator=noise_rng, loss_reduction="mean")
        except ValueError as err:  # Opacus: "The privacy budget is too low."
            raise ConfigError(
                f"privacy.target_epsilon: no noise level spends as little as ε = "
                f"{cfg.target_epsilon:g} over {epochs} epochs of {len(loader)} batches "
                f"({err}); raise target_epsilon or train fewer epochs") from None
    return PrivateTraining(engine, module, dp_optimizer, dp_loader, cfg)

