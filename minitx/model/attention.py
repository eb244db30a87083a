"""Multi-head scaled dot-product attention, softmax(QKᵀ/√d_k)·V, with masks and a key/value cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class KVCache:
    """Keys and values of earlier decoding steps (self-attention) or of the source (cross-attention).

    A `static` cache is filled once (cross-attention over the encoder output) and then only read;
    otherwise each step's keys and values are appended, so step t costs O(t), not O(t²).
    """

    static: bool = False
    k: torch.Tensor | None = None  # (B, H, T, Dh)
    v: torch.Tensor | None = None  # (B, H, T, Dh)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search follows the surviving hypotheses)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout: float,
) -> torch.Tensor:
    """softmax(QKᵀ/√d_k)·V written out; the same result as `F.scaled_dot_product_attention`."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if causal:
        q_len, k_len = scores.shape[-2:]
        future = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = F.dropout(scores.softmax(dim=-1), dropout, training=dropout > 0)
    return weights.to(v.dtype) @ v


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)  # keys and values in one matmul
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Queries from `x` (B, Tq, D) attend to `context` (B, Tk, D).

        `mask` (B, 1, 1|Tq, Tk) is True where attention is allowed (padding masks); `causal`
        hides later positions (training-time decoder self-attention; with a cache, the earlier
        steps are all there is, so no mask is needed).
        """
        batch, q_len, d_model = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, H, Tq, Dh)
        if cache is not None and cache.static and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            k, v = (self._split_heads(t) for t in self.kv_proj(context).chunk(2, dim=-1))
            if cache is not None:
                if not cache.static and cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        dropout = self.dropout if self.training else 0.0
        causal = causal and q_len > 1
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # torch's fused CPU kernel is slow in bf16: its backward took 7x longer than these
            # three ops on Multi30k-sized batches (torch 2.13, scripts/bench_attention.py).
            out = explicit_attention(q, k, v, mask, causal, dropout)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
            )
        # (B, H, Tq, Dh)
        out = out.transpose(1, 2).reshape(batch, q_len, d_model)  # (B, Tq, D)
        return self.out_proj(out)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, length, _ = t.shape
        return t.view(batch, length, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
