"""The article's Transformer encoder, with masked mean pooling.

Embedding (tokens: vocab → d_model; numeric steps: a linear map) + positions → N pre-LN blocks
(multi-head self-attention with the padding mask, GELU MLP) → LayerNorm → masked mean over
steps: one (d_model,) vector per sequence. With d_model 512, 4 heads and a one-logit head on
text, this is the article's example.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlforge.config import TransformerConfig
from dlforge.models.layers import TransformerBlock, init_weights, masked_mean


class TransformerEncoder(nn.Module):
    """``embed`` maps the input (token ids, or numeric steps) to (B, T, d_model) with positions:
    :class:`TokenPositionEmbedding` or :class:`ValueEmbedding`."""

    def __init__(self, cfg: TransformerConfig, embed: nn.Module):
        super().__init__()
        ffn = cfg.ffn_dim or 4 * cfg.d_model
        self.embed = embed
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.heads, ffn, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out_dim = cfg.d_model
        self.checkpointing = cfg.checkpointing
        init_weights(self)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)  # (B, T, C)
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                # Activation checkpointing: keep only the block's input; recompute its
                # activations in the backward pass (the RNG state is replayed for dropout).
                x = checkpoint(block, x, attention_mask, use_reentrant=False)
            else:
                x = block(x, attention_mask)  # (B, T, C)
        return masked_mean(self.ln_f(x), attention_mask)  # (B, C)
