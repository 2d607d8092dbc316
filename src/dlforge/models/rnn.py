"""Recurrent encoder: embeddings (tokens) or a linear map (numeric steps) → bidirectional GRU
or LSTM over packed sequences (padding never enters the recurrence) → final states of both
directions, concatenated."""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import RNNConfig
from dlforge.models.layers import Dropout, RecurrentEncoder


class RNNEncoder(nn.Module):
    def __init__(self, cfg: RNNConfig, embed: nn.Module):
        super().__init__()
        self.embed = embed
        self.drop = Dropout(cfg.dropout)
        self.encoder = RecurrentEncoder(cfg.d_model, cfg.hidden, cfg.layers, cfg.cell,
                                        cfg.bidirectional, cfg.dropout)
        self.out_dim = self.encoder.out_dim

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(x))  # (B, T, C)
        return self.encoder(x, attention_mask)  # (B, hidden * directions)
