"""How much data: Hoffmann et al. 2022 (Chinchilla).

Compute-optimal training uses about 20 tokens per parameter (Table 3: 70B parameters, 1.4T
tokens). With C = 6 N D (Kaplan et al. 2020) and D = 20 N, a budget of C FLOPs is best spent
on N = sqrt(C / 120) parameters and D = 20 N tokens. The loss fit (Approach 3, Eq. 10):
L(N, D) = E + A / N^alpha + B / D^beta.
"""

from __future__ import annotations

import math
from typing import Any

from dlforge.errors import ConfigError

__all__ = ["CHINCHILLA", "FIT_RANGE", "TOKENS_PER_PARAM", "chinchilla_loss", "data_report",
           "in_fit_range", "optimal_for_compute", "optimal_tokens"]

TOKENS_PER_PARAM = 20
# Hoffmann et al. 2022, Eq. 10 (Approach 3, fitted on MassiveText; loss in nats per token)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# What the fit was made on (Sec. 3: over 400 models of 70M to 16B parameters, 5B to 500B
# tokens); outside it the loss is an extrapolation.
FIT_RANGE = {"params": (7e7, 1.6e10), "tokens": (5e9, 5e11)}


def in_fit_range(params: float, tokens: float) -> bool:
    (n0, n1), (d0, d1) = FIT_RANGE["params"], FIT_RANGE["tokens"]
    return n0 <= params <= n1 and d0 <= tokens <= d1


def optimal_tokens(params: float) -> float:
    return TOKENS_PER_PARAM * params


def optimal_for_compute(flops: float) -> dict[str, float]:
    if flops <= 0:
        raise ConfigError(f"compute budget must be > 0 FLOPs, got {flops}")
    n = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    return {"params": n, "tokens": TOKENS_PER_PARAM * n}


def chinchilla_loss(params: float, tokens: float) -> float:
    c = CHINCHILLA
    return c["E"] + c["A"] / params ** c["alpha"] + c["B"] / tokens ** c["beta"]


def data_report(params: int, tokens: float, train_flops: float) -> dict[str, Any]:
    best = optimal_for_compute(train_flops)
    return {
        "tokens_per_param_rule": TOKENS_PER_PARAM,
        "optimal_tokens": optimal_tokens(params),
        "tokens": tokens,
        "tokens_per_param": tokens / params,
        "optimal_for_this_compute": best,
        "chinchilla_loss": chinchilla_loss(params, tokens),
        "chinchilla_fit_range": {k: list(v) for k, v in FIT_RANGE.items()},
        "in_fit_range": in_fit_range(params, tokens),
        "chinchilla_loss_at_optimum": chinchilla_loss(best["params"], best["tokens"]),
        "constants": dict(CHINCHILLA),
        "source": "Hoffmann et al. 2022, Table 3 (20 tokens/parameter) and Eq. 10 (loss fit)",
    }
