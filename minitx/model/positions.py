"""Absolute positional encodings: the fixed sinusoids of Vaswani et al. (2017), section 3.5."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositions(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…); any length, no parameters."""

    def __init__(self, d_model: int, initial_length: int = 1024):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", self._table(initial_length), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(
            torch.arange(0, self.d_model, 2).float() * (-math.log(10000.0) / self.d_model)
        )
        table = torch.zeros(length, self.d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: self.d_model // 2])
        return table

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """Encodings of positions offset … offset+length-1, shape (length, D)."""
        if offset + length > self.table.shape[0]:
            self.table = self._table(2 * (offset + length)).to(self.table.device)
        return self.table[offset : offset + length]
