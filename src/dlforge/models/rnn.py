"""Recurrent classifier: embeddings → bidirectional GRU or LSTM over packed sequences (padding
never enters the recurrence) → final states of both directions → linear head."""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import RNNConfig
from dlforge.models.layers import ClassifierHead, Dropout, RecurrentEncoder


class RNNClassifier(nn.Module):
    def __init__(self, cfg: RNNConfig, vocab_size: int, max_length: int, n_outputs: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=0)
        self.drop = Dropout(cfg.dropout)
        self.encoder = RecurrentEncoder(cfg.d_model, cfg.hidden, cfg.layers, cfg.cell,
                                        cfg.bidirectional, cfg.dropout)
        self.head = ClassifierHead(self.encoder.out_dim, n_outputs, cfg.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(input_ids))  # (B, T, C)
        return self.head(self.encoder(x, attention_mask))  # (B, n_outputs)
