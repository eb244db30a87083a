"""Dropout whose CPU masks come from 16-bit slices of 64-bit random words.

`torch.nn.Dropout` draws its CPU mask with `bernoulli_`, one generator call per element; in bf16
training of the Multi30k model on the 2-core CPU that was 17% of the step (torch.profiler through
`scripts/bench_train.py --profile`). Filling 64-bit words with `random_` and comparing each 16-bit
slice against a threshold draws the same mask about 5 times faster. The keep probability is
rounded to a multiple of 1/65536, and the output is rescaled by the exact rounded value, so the
expectation is unchanged. On other devices torch's fused dropout is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SLICES = 4  # 16-bit slices per 64-bit random word


def apply_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    drop = round(p * 65536)  # of the 65536 values a slice can take, this many drop
    words = torch.empty(-(-x.numel() // _SLICES), dtype=torch.int64)
    # The full range: random_() alone leaves the top bit of every word 0.
    words.random_(-(2**63), 2**63 - 1)
    slices = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform over −32768…32767
    keep = slices >= drop - 32768
    return x * keep.to(x.dtype) * (65536 / (65536 - drop))


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
