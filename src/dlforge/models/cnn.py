"""Convolutional encoders.

Text and numeric sequences: TextCNN (Kim, 2014): embeddings (or a linear map of numeric steps)
→ parallel 1-D convolutions of several widths → max over time → concatenated.
Images: a stem (a 3×3 convolution; for images of 64 pixels and more ResNet's 7×7 stride-2
convolution and max pool), then stages of conv → batch-norm → ReLU blocks (with a residual
connection around each block if asked, as in ResNet), each stage after the first halving the
resolution with a stride-2 convolution, then global average pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.config import CNNConfig
from dlforge.models.layers import ConvBank


class SequenceCNN(nn.Module):
    """``embed`` maps token ids (an embedding) or numeric steps (a linear map) to (B, T, C)."""

    def __init__(self, cfg: CNNConfig, embed: nn.Module):
        super().__init__()
        self.embed = embed
        self.convs = ConvBank(cfg.d_model, cfg.filters, cfg.kernel_sizes)
        self.out_dim = self.convs.out_dim

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Padded steps are zero vectors, like the [PAD] embedding (a linear map of numeric
        # steps would give its bias there), so a short sequence's output never depends on
        # its batch.
        h = self.embed(x).masked_fill(~attention_mask.unsqueeze(-1), 0.0)
        return self.convs(h, attention_mask)  # (B, F * kernels)


class ConvBlock(nn.Module):
    """3×3 conv → batch-norm → ReLU → 3×3 conv → batch-norm, plus the input if ``residual``
    (through a 1×1 conv when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if self.residual:
            h = h + self.shortcut(x)
        return F.relu(h)


class ImageCNN(nn.Module):
    def __init__(self, cfg: CNNConfig, channels: int, height: int, width: int):
        super().__init__()
        widths = list(cfg.channels)
        if min(height, width) >= 64:
            # Photographs: ResNet's stem (a 7×7 stride-2 convolution and a 3×3 stride-2 max
            # pool) brings the image to a quarter of its size before the blocks.
            self.stem = nn.Sequential(
                nn.Conv2d(channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
            height, width = -(-height // 4), -(-width // 4)
        else:  # small images (digits, CIFAR): keep every pixel
            self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks = []
        c_in = widths[0]
        for s, c_out in enumerate(widths):
            for b in range(cfg.blocks):
                # Halve the resolution at the start of each stage after the first, while the
                # image is still larger than 1 pixel.
                # (never below 2x2: batch-norm needs more than one value per channel)
                stride = 2 if s > 0 and b == 0 and min(height, width) >> s >= 2 else 1
                blocks.append(ConvBlock(c_in, c_out, stride, cfg.residual))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = widths[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(images))  # (B, C, H', W')
        return x.mean(dim=(2, 3))  # global average pooling: (B, C)
