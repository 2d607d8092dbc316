"""CRNN for audio: convolution blocks over the log-mel spectrogram, then a recurrent layer over
its frames (as in keyword-spotting CRNNs, Arik et al., 2017).

A 3×3 stem, then one stage per width in ``channels``: a conv → batch-norm → ReLU block (the
image CNN's, residual if asked) and a 2×2 max pool, halving the mel bands and the frames (not
below 1). Each remaining frame's channels × bands become one step of a (bidirectional) GRU
or LSTM, whose final states feed the head.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import CRNNConfig
from dlforge.models.cnn import ConvBlock
from dlforge.models.layers import Dropout, RecurrentEncoder


class CRNN(nn.Module):
    def __init__(self, cfg: CRNNConfig, channels: int, height: int, width: int):
        super().__init__()
        widths = list(cfg.channels)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU()]
        c_in = widths[0]
        for c_out in widths:
            pool = (2 if height >= 2 else 1, 2 if width >= 2 else 1)
            layers += [ConvBlock(c_in, c_out, 1, cfg.residual), nn.MaxPool2d(pool)]
            height, width, c_in = height // pool[0], width // pool[1], c_out
        self.convs = nn.Sequential(*layers)
        self.drop = Dropout(cfg.dropout)
        self.recurrent = RecurrentEncoder(c_in * height, cfg.hidden, cfg.layers, cfg.cell,
                                          cfg.bidirectional, cfg.dropout)
        self.out_dim = self.recurrent.out_dim

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        h = self.convs(spectrograms)  # (B, C, mels', frames')
        b, c, m, t = h.shape
        steps = self.drop(h.permute(0, 3, 1, 2).reshape(b, t, c * m))  # (B, frames', C * mels')
        mask = torch.ones(b, t, dtype=torch.bool, device=h.device)  # every frame is real
        return self.recurrent(steps, mask)  # (B, hidden * directions)
