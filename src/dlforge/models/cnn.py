"""TextCNN (Kim, 2014): embeddings → parallel 1-D convolutions of several widths → max over
time → concatenated → linear head."""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import CNNConfig
from dlforge.models.layers import ClassifierHead, ConvBank


class TextCNN(nn.Module):
    def __init__(self, cfg: CNNConfig, vocab_size: int, max_length: int, n_outputs: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=0)
        self.convs = ConvBank(cfg.d_model, cfg.filters, cfg.kernel_sizes)
        self.head = ClassifierHead(self.convs.out_dim, n_outputs, cfg.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, T, C)
        return self.head(self.convs(x, attention_mask))  # (B, n_outputs)
