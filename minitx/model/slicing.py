"""Linear layers cut down to some of their rows or columns, or grown back with zeros: how heads are
removed from an attention module and restored (`MultiHeadAttention.prune` and `restore_heads`)."""

from __future__ import annotations

import torch
from torch import nn


def sliced(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of `linear` keeping the output rows (dim 0) or input columns (dim 1) `index`."""
    weight = linear.weight.data.index_select(dim, index)
    sliced = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    sliced.to(weight.device, weight.dtype)
    sliced.weight.data.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias.data if dim == 1 else linear.bias.data.index_select(0, index)
        sliced.bias.data.copy_(bias)
    return sliced


def padded(linear: nn.Linear, index: torch.Tensor, size: int, dim: int) -> nn.Linear:
    """`linear` grown to `size` output rows (dim 0) or input columns (dim 1), its own at `index`
    and zeros elsewhere."""
    shape = list(linear.weight.shape)
    shape[dim] = size
    weight = linear.weight.data.new_zeros(shape)
    weight.index_copy_(dim, index.to(weight.device), linear.weight.data)
    padded = nn.Linear(shape[1], shape[0], bias=linear.bias is not None)
    padded.to(weight.device, weight.dtype)
    padded.weight.data.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias.data
        if dim == 0:
            bias = bias.new_zeros(size).index_copy_(0, index.to(bias.device), bias)
        padded.bias.data.copy_(bias)
    return padded
