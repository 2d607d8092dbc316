"""The article's Transformer text encoder, with masked mean pooling.

Embedding(vocab → d_model) + positions → N pre-LN blocks (multi-head self-attention with the
padding mask, GELU MLP) → LayerNorm → masked mean over tokens: one (d_model,) vector per text.
With d_model 512, 4 heads and a one-logit head this is the article's example.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import TransformerConfig
from dlforge.models.layers import (
    TokenPositionEmbedding,
    TransformerBlock,
    init_weights,
    masked_mean,
)


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_length: int):
        super().__init__()
        ffn = cfg.ffn_dim or 4 * cfg.d_model
        self.embed = TokenPositionEmbedding(vocab_size, cfg.d_model, max_length, cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.heads, ffn, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out_dim = cfg.d_model
        init_weights(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, T, C)
        for block in self.blocks:
            x = block(x, attention_mask)  # (B, T, C)
        return masked_mean(self.ln_f(x), attention_mask)  # (B, C)
