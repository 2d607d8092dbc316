"""Recurrent text encoder: embeddings → bidirectional GRU or LSTM over packed sequences
(padding never enters the recurrence) → final states of both directions, concatenated."""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import RNNConfig
from dlforge.models.layers import Dropout, RecurrentEncoder


class RNNEncoder(nn.Module):
    def __init__(self, cfg: RNNConfig, vocab_size: int, max_length: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=0)
        self.drop = Dropout(cfg.dropout)
        self.encoder = RecurrentEncoder(cfg.d_model, cfg.hidden, cfg.layers, cfg.cell,
                                        cfg.bidirectional, cfg.dropout)
        self.out_dim = self.encoder.out_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(input_ids))  # (B, T, C)
        return self.encoder(x, attention_mask)  # (B, hidden * directions)
