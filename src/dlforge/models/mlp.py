"""The multi-layer perceptron: the model for tables and the head on top of every model.

(Linear → ReLU → dropout) per hidden width, then dropout → Linear to the outputs. With no
hidden layer it is the plain classifier head: dropout + one linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.models.layers import Dropout


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: list[int], n_outputs: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), Dropout(dropout)]
            in_dim = width
        self.hidden = nn.Sequential(*layers)
        self.drop = Dropout(dropout if not hidden else 0.0)
        self.out = nn.Linear(in_dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.hidden(x)))
