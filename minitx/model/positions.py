"""Where a token is: absolute encodings added to the embeddings, or relative schemes inside attention.

`model.positions` picks one:
- `sinusoidal`: fixed sinusoids added to the embeddings (Vaswani et al., 2017, section 3.5);
- `learned`: a learned vector per position, added (Gehring et al., 2017; BERT), up to `max_positions`;
- `rope`: queries and keys rotated by their position (Su et al., 2021, RoFormer);
- `relative`: a learned per-head bias on the scores for each bucket of query-key distance, exact
  for short distances and logarithmic for long ones (Raffel et al., 2020, T5);
- `alibi`: a fixed per-head linear penalty on the query-key distance (Press et al., 2022);
- `none`: nothing; attention alone cannot tell positions apart (a bag of words in the encoder).

Relative schemes apply to self-attention; cross-attention compares positions of two different
sentences and gets none. All but `learned` work for sequences longer than any seen in training.
"""

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


def halves_order(d_model: int) -> torch.Tensor:
    """The features of SinusoidalPositions in the layout of fairseq, Marian and Pegasus (sines in
    the first half, cosines in the second): `table[:, halves_order(d)]` is their table. Permuting
    the model width this way in every weight that touches the residual stream changes no output
    (export/hf.py)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


class LearnedPositions(nn.Module):
    """One learned vector per position, up to `max_positions`."""

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        self.table = nn.Embedding(max_positions, d_model)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        if offset + length > self.table.num_embeddings:
            raise ValueError(
                f"learned positions go up to {self.table.num_embeddings} tokens, and this "
                f"sequence needs {offset + length}; raise model.max_positions or use another "
                "model.positions"
            )
        positions = torch.arange(offset, offset + length, device=self.table.weight.device)
        return self.table(positions)


class Rotary(nn.Module):
    """Rotate each pair of query/key features by an angle proportional to the position, so that
    q·k depends on the positions only through their difference (RoFormer, eq. 34)."""

    def __init__(self, d_head: int, base: float = 10000.0):
        super().__init__()
        inverse_frequency = base ** (-torch.arange(0, d_head, 2).float() / d_head)
        self.register_buffer("inverse_frequency", inverse_frequency, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, H, T, Dh) at `positions` (T,) → rotated x, same shape and dtype."""
        angles = positions.float()[:, None] * self.inverse_frequency  # (T, Dh/2)
        cos, sin = angles.cos(), angles.sin()
        even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)


class RelativeBias(nn.Module):
    """T5's bias: a learned scalar per head for each bucket of the distance key − query."""

    def __init__(
        self, n_heads: int, bidirectional: bool, n_buckets: int = 32, max_distance: int = 128
    ):
        super().__init__()
        self.bidirectional = bidirectional
        self.n_buckets = n_buckets
        self.max_distance = max_distance
        self.bias = nn.Embedding(n_buckets, n_heads)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """distance (…) = key position − query position → bias (H, …)."""
        return self.bias(self._bucket(distance)).movedim(-1, 0)

    def keep_heads(self, keep: list[int]) -> None:
        """Only the heads `keep` (head pruning)."""
        self._set_table(self.bias.weight.data[:, keep].clone())

    def restore_heads(self, head_ids: list[int], n_heads: int) -> None:
        """Back to `n_heads` columns, the kept heads' at `head_ids` and zeros elsewhere."""
        table = self.bias.weight.data.new_zeros(self.n_buckets, n_heads)
        table[:, head_ids] = self.bias.weight.data
        self._set_table(table)

    def _set_table(self, table: torch.Tensor) -> None:
        self.bias = nn.Embedding(table.shape[0], table.shape[1]).to(table.device, table.dtype)
        self.bias.weight.data.copy_(table)

    def _bucket(self, distance: torch.Tensor) -> torch.Tensor:
        n = self.n_buckets
        bucket = torch.zeros_like(distance)
        if self.bidirectional:  # half the buckets for keys after the query
            n //= 2
            bucket = (distance > 0).long() * n
            distance = distance.abs()
        else:  # keys at or before the query only
            distance = (-distance).clamp(min=0)
        exact = n // 2
        # Distances from `exact` up to max_distance share logarithmically wider buckets.
        log_bucket = exact + (
            torch.log(distance.float().clamp(min=1) / exact)
            / math.log(self.max_distance / exact)
            * (n - exact)
        ).long().clamp(max=n - 1 - exact)
        return bucket + torch.where(distance < exact, distance, log_bucket)


class AlibiBias(nn.Module):
    """ALiBi: −slope_h × |key − query|, slopes 2^(−8h/H) for heads h = 1…H (Press et al., 2022)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.register_buffer("slopes", self.slopes_of(n_heads), persistent=False)

    @staticmethod
    def slopes_of(n_heads: int) -> torch.Tensor:
        return torch.tensor([2 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)])

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """distance (…) = key position − query position → bias (H, …)."""
        return -self.slopes.view(-1, *[1] * distance.dim()) * distance.abs().float()

    def keep_heads(self, keep: list[int]) -> None:
        """Only the heads `keep` (head pruning): each keeps the slope it was trained with."""
        self.slopes = self.slopes[keep]

    def restore_heads(self, head_ids: list[int], n_heads: int) -> None:
        """Back to the slopes of all `n_heads` (a restored head adds nothing, whatever its slope)."""
        self.slopes = self.slopes_of(n_heads).to(self.slopes.device)
