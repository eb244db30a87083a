"""Multi-head attention: projections, scoring, positions inside attention, masks, a key/value cache.

For each head, queries Q, keys K and values V are learned projections of the input; the output is
softmax(score(Q, K) + bias)·V, the heads concatenated and projected back (Vaswani et al., 2017).
`score` is one of
- `scaled_dot`: QKᵀ/√d_k (the default, run by torch's fused `scaled_dot_product_attention`);
- `dot`: QKᵀ, unscaled (Luong et al., 2015);
- `cosine`: cos(Q, K) × a learned per-head scale (query-key normalisation: Henry et al., 2020;
  Swin V2, Liu et al., 2022).
`bias` comes from a relative position scheme (positions.py); masks hide padding and, in decoder
self-attention, the future. With `n_kv_heads` < `n_heads`, groups of query heads share keys and
values (grouped-query attention, Ainslie et al., 2023; 1 = multi-query, Shazeer, 2019), and the
cache shrinks with them. With a `window`, each query sees only its W neighbours on each side,
`dilation` apart (Longformer's sliding and dilated windows, Beltagy et al., 2020), computed as a band
so that memory grows with T·W rather than T².
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minitx.config import ModelConfig
from minitx.model.dropout import apply_dropout
from minitx.model.positions import AlibiBias, RelativeBias, Rotary
from minitx.model.slicing import padded, sliced


@dataclass
class KVCache:
    """Keys and values of earlier decoding steps (self-attention) or of the source (cross-attention).

    A `static` cache is filled once (cross-attention over the encoder output) and then only read;
    otherwise each step's keys and values are appended, so step t costs O(t), not O(t²).
    """

    static: bool = False
    k: torch.Tensor | None = None  # (B, H_kv, T, Dh)
    v: torch.Tensor | None = None  # (B, H_kv, T, Dh)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search follows the surviving hypotheses)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk), True where query i may see key j: the queries are the last Tq of the Tk positions
    (Tq = Tk in training; Tq < Tk when decoding continues a cached prefix)."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float = 0.0,
    scale: float | torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    steps: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QKᵀ·scale + bias)·V written out: the output and the attention weights (B, H, Tq, Tk).

    `mask` is True where attention is allowed (padding and causal masks combined). The same result
    as `F.scaled_dot_product_attention`; used where the weights are wanted, and on the CPU in bf16,
    where it is faster. `scale` may be one per head (H, 1, 1). Given a `steps` dict, the raw
    scores QKᵀ, the position bias and the mask are put in it as they are computed.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    raw = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk)
    scores = raw * scale
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if steps is not None:
        steps.update(raw=raw, bias=bias, allowed=mask)
    out = apply_dropout(weights, dropout, training=dropout > 0).to(v.dtype) @ v
    return out, weights


@dataclass(frozen=True)
class AttentionSpec:
    """What one attention module computes. `from_config` reads it from the model config; the
    encoder and decoder layers then adapt it to each use (a window, no positions, one direction)."""

    d_model: int
    n_heads: int
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None: n_heads
    score: str = "scaled_dot"  # scaled_dot, dot or cosine
    dropout: float = 0.0  # on the attention weights
    positions: str = "none"  # rope, relative and alibi act inside attention; the others do not
    # relative: keys before and after the query get their own buckets (T5's encoder). Decoder
    # self-attention sees no keys after the query and uses all buckets for those before.
    relative_bidirectional: bool = True
    window: int | None = None  # see only this many neighbours on each side (None: all)
    dilation: int = 1  # with a window: the step between the neighbours seen

    @classmethod
    def from_config(cls, cfg: ModelConfig, **changes) -> AttentionSpec:
        spec = cls(
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            score=cfg.attention,
            dropout=cfg.attention_dropout,
            positions=cfg.positions,
        )
        return dataclasses.replace(spec, **changes)


class MultiHeadAttention(nn.Module):
    def __init__(self, spec: AttentionSpec):
        super().__init__()
        self.n_heads = spec.n_heads
        self.n_kv_heads = spec.n_kv_heads or spec.n_heads
        self.d_head = spec.d_model // spec.n_heads
        self.dropout = spec.dropout
        self.score = spec.score
        # None: 1/√d_k. `dot` leaves the scores unscaled; `cosine` scales them by log_scale.
        self.scale = None if spec.score == "scaled_dot" else 1.0
        self.window, self.dilation = spec.window, spec.dilation
        self.q_proj = nn.Linear(spec.d_model, spec.d_model)
        # keys and values in one matmul, n_kv_heads of each
        self.kv_proj = nn.Linear(spec.d_model, 2 * self.n_kv_heads * self.d_head)
        self.out_proj = nn.Linear(spec.d_model, spec.d_model)
        if spec.score == "cosine":
            # log of the per-head scale, starting at 10 and capped at 100 (Swin V2)
            self.log_scale = nn.Parameter(torch.full((spec.n_heads, 1, 1), math.log(10.0)))
        self.rotary = Rotary(self.d_head) if spec.positions == "rope" else None
        self.bias = None
        if spec.positions == "relative":
            self.bias = RelativeBias(spec.n_heads, bidirectional=spec.relative_bidirectional)
        elif spec.positions == "alibi":
            self.bias = AlibiBias(spec.n_heads)
        self.keep_weights = False  # set by `recording_attention`: keep the last weights for a plot
        self.weights: torch.Tensor | None = None  # (B, H, Tq, Tk) when kept
        # Set by `recording_attention(steps=True)`: every term of the last forward pass (`_record`).
        self.keep_steps = False
        self.steps: dict | None = None
        # A gate on each head's output (Michel et al., 2019: 0 masks the head, and the loss's
        # gradient with respect to it measures the head's importance); None: every head, ungated.
        self.head_gate: torch.Tensor | None = None  # (H,)
        self.head_ids = list(range(spec.n_heads))  # each head's number as trained (see `prune`)

    def prune(self, heads: list[int]) -> None:
        """Remove the heads numbered `heads` (as trained): their rows of the query, key and value
        projections, their columns of the output projection and their position parameters, so
        the module computes exactly what it did with those heads masked, in less time."""
        if self.n_kv_heads != self.n_heads:
            raise ValueError("heads that share keys and values cannot be removed one at a time")
        keep = [i for i, head in enumerate(self.head_ids) if head not in heads]
        if not keep:
            raise ValueError("pruning would leave an attention module with no head")
        rows = torch.cat([torch.arange(i * self.d_head, (i + 1) * self.d_head) for i in keep])
        half = self.n_kv_heads * self.d_head  # kv_proj: the keys' rows, then the values'
        self.q_proj = sliced(self.q_proj, rows, dim=0)
        self.kv_proj = sliced(self.kv_proj, torch.cat([rows, rows + half]), dim=0)
        self.out_proj = sliced(self.out_proj, rows, dim=1)
        if self.score == "cosine":
            self.log_scale = nn.Parameter(self.log_scale.data[keep].clone())
        if self.bias is not None:
            self.bias.keep_heads(keep)
        self.head_ids = [self.head_ids[i] for i in keep]
        self.n_heads = self.n_kv_heads = len(keep)

    def restore_heads(self, n_heads: int) -> None:
        """Undo `prune` with zeros: the removed heads come back with zero queries, keys, values
        and output columns, so they add nothing and the module computes what it did, at full
        size (for formats with one head count for every layer)."""
        d_head, full = self.d_head, n_heads * self.d_head
        rows = torch.cat([torch.arange(h * d_head, (h + 1) * d_head) for h in self.head_ids])
        self.q_proj = padded(self.q_proj, rows, full, dim=0)
        self.kv_proj = padded(self.kv_proj, torch.cat([rows, rows + full]), 2 * full, dim=0)
        self.out_proj = padded(self.out_proj, rows, full, dim=1)
        if self.score == "cosine":
            log_scale = torch.full_like(self.log_scale.data[:1], math.log(10.0)).repeat(
                n_heads, 1, 1
            )
            log_scale[self.head_ids] = self.log_scale.data
            self.log_scale = nn.Parameter(log_scale)
        if self.bias is not None:
            self.bias.restore_heads(self.head_ids, n_heads)
        self.head_ids = list(range(n_heads))
        self.n_heads = self.n_kv_heads = n_heads

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """Queries from `x` (B, Tq, D) attend to `context` (B, Tk, D).

        `mask` (B, 1, 1|Tq, Tk) is True where attention is allowed (padding masks); `causal`
        hides later positions (training-time decoder self-attention; with a cache, the earlier
        steps are all there is). `offset` is the position of x[:, 0] (decoding step by step).
        """
        batch, q_len, d_model = x.shape
        q = self._split_heads(self.q_proj(x), self.n_heads)  # (B, H, Tq, Dh)
        if cache is not None and cache.static and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            kv = self.kv_proj(context).chunk(2, dim=-1)
            k, v = (self._split_heads(t, self.n_kv_heads) for t in kv)  # (B, H_kv, Tk, Dh)
            if self.rotary is not None:
                k = self.rotary(k, torch.arange(offset, offset + k.shape[2], device=k.device))
            if cache is not None:
                if not cache.static and cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        if self.rotary is not None:
            q = self.rotary(q, torch.arange(offset, offset + q_len, device=q.device))
        k, v = self._share_kv_heads(k), self._share_kv_heads(v)  # (B, H, Tk, Dh)
        steps = {} if self.keep_steps else None
        scale = self.scale  # None: 1/√d_k
        if self.score == "cosine":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = self.log_scale.clamp(max=math.log(100.0)).exp().to(q.dtype)  # (H, 1, 1)
            if steps is None:  # the fused kernels take one scale for all heads: scale q instead
                q, scale = q * scale, 1.0
        if self.window is not None:
            out = self._banded(q, k, v, mask, scale, steps)
        else:
            out = self._full(q, k, v, mask, causal and q_len > 1, scale, steps)
        if self.head_gate is not None:
            out = out * self.head_gate.to(out.dtype)[:, None, None]  # (B, H, Tq, Dh)
        if steps is not None:
            self.steps = self._record(steps, q, k, v, out, scale)
        out = out.transpose(1, 2).reshape(batch, q_len, self.n_heads * self.d_head)  # (B, Tq, H·Dh)
        return self.out_proj(out)

    def _record(self, steps: dict, q, k, v, out, scale) -> dict:
        """The terms of one forward pass, for a reader to follow one head's computation: the
        vectors that were compared (q and k after rotation; unit length for cosine), the raw
        scores q·k, the scale per head, the position bias (H, Tq, Tk) and the mask (True where
        allowed) as they were added, the softmax weights, the values, each head's output Σ w·v (times its gate, if
        any), and its share of the layer output: its slice of the output projection applied to it (the
        shares plus `out_bias` sum to the layer's output)."""
        heads = self.n_heads
        scale = torch.as_tensor(self.d_head**-0.5 if scale is None else scale, device=q.device)
        per_head = self.out_proj.weight.view(-1, heads, self.d_head)  # (D, H, Dh)
        share = torch.einsum("bhtd,ehd->bhte", out.to(per_head.dtype), per_head)
        if steps.get("allowed") is not None:  # one shape for every mask: (B, H, Tq, Tk)
            steps["allowed"] = torch.broadcast_to(steps["allowed"], steps["raw"].shape)
        return {
            **{name: t.detach() for name, t in steps.items() if t is not None},
            "q": q.detach(),
            "k": k.detach(),
            "v": v.detach(),
            "weights": self.weights,
            "scale": scale.detach().float().reshape(-1).expand(heads).clone(),
            "head_out": out.detach(),
            **({} if self.head_gate is None else {"gate": self.head_gate.detach()}),
            "share": share.detach(),
            "out_bias": self.out_proj.bias.detach(),
        }

    def _relative_bias(self, q_len: int, k_len: int, device: torch.device) -> torch.Tensor | None:
        """The position bias (H, Tq, Tk) of the last Tq queries against Tk keys, if any."""
        if self.bias is None:
            return None
        queries = torch.arange(k_len - q_len, k_len, device=device)
        distance = torch.arange(k_len, device=device)[None, :] - queries[:, None]
        return self.bias(distance)

    def _full(self, q, k, v, mask, causal: bool, scale, steps: dict | None) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        q_len, k_len = q.shape[2], k.shape[2]
        bias = self._relative_bias(q_len, k_len, q.device)
        bias = None if bias is None else bias.to(q.dtype)
        slow_fused = q.device.type == "cpu" and q.dtype == torch.bfloat16
        explicit = self.keep_weights or steps is not None or slow_fused
        if causal and (explicit or bias is not None or q_len != k_len):
            # One mask for the explicit formula, and for the fused kernel, which takes a bias or
            # a mask but not both, and no `is_causal` beside a mask; its `is_causal` also aligns
            # the queries with the first keys, not the last (several new tokens after a cache).
            allowed = causal_mask(q_len, k_len, q.device)
            mask, causal = allowed if mask is None else mask & allowed, False
        if explicit:
            # torch's fused CPU kernel is slow in bf16: its backward took 7x longer than these
            # three ops on Multi30k-sized batches (torch 2.13, scripts/bench_attention.py).
            out, weights = explicit_attention(q, k, v, mask, dropout, scale, bias, steps)
            if self.keep_weights or steps is not None:
                self.weights = weights.detach()
            return out
        if bias is not None:
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale
        )

    def _banded(self, q, k, v, mask, scale, steps: dict | None) -> torch.Tensor:
        """Each query i attends to keys i + j·dilation, j = −W…W, in blocks of C queries: a block
        scores only its C + 2·W·dilation neighbouring keys, so memory grows with T·(C + 2WD), not T²."""
        batch, heads, length, d_head = q.shape
        reach = self.window * self.dilation  # P: how far a query looks on each side
        block = max(32, 2 * reach)  # C
        n_blocks = -(-length // block)
        padded = n_blocks * block
        span = block + 2 * reach  # keys a block of queries can see
        q = F.pad(q, (0, 0, 0, padded - length))  # (B, H, nC, Dh)
        # Keys and values padded by P on the left and P + (nC − T) on the right, then cut into
        # overlapping windows, one per block: views, no copies.
        k_win = F.pad(k, (0, 0, reach, reach + padded - length)).unfold(2, span, block)
        v_win = F.pad(v, (0, 0, reach, reach + padded - length)).unfold(2, span, block)
        # (B, H, n, Dh, span) each
        q_blocks = q.view(batch, heads, n_blocks, block, d_head)  # (B, H, n, C, Dh)
        scale = d_head**-0.5 if scale is None else scale
        if isinstance(scale, torch.Tensor):
            scale = scale.unsqueeze(-1)  # (H, 1, 1, 1): one per head
        raw = q_blocks @ k_win  # (B, H, n, C, span)
        scores = raw * scale
        offset = torch.arange(span, device=q.device)[None, :] - reach
        distance = offset - torch.arange(block, device=q.device)[:, None]  # key − query (C, span)
        bias = None
        if self.bias is not None:
            bias = self.bias(distance).to(scores.dtype)[:, None]  # (H, 1, C, span)
            scores = scores + bias
        in_band = (distance.abs() <= reach) & (distance % self.dilation == 0)
        real = torch.ones(batch, length, dtype=torch.bool, device=q.device)
        if mask is not None:  # (B, 1, 1, T) key padding
            real = mask[:, 0, 0]
        real = F.pad(real, (reach, reach + padded - length)).unfold(1, span, block)  # (B, n, span)
        # A query always sees itself, so no row is empty (padding queries would give NaN).
        allowed = (in_band & real[:, None, :, None, :]) | (distance == 0)  # (B, 1, n, C, span)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        if self.keep_weights or steps is not None:
            self.weights = self._spread(weights.detach(), length, reach)
        if steps is not None:  # as (Tq, Tk) matrices, zero (and not allowed) outside the band
            steps["raw"] = self._spread(raw, length, reach)
            steps["allowed"] = self._spread(allowed.expand_as(raw), length, reach)
            if bias is not None:
                steps["bias"] = self._spread(bias.expand_as(raw), length, reach)[0]
        dropout = self.dropout if self.training else 0.0
        weights = apply_dropout(weights, dropout, training=dropout > 0).to(v.dtype)
        out = weights @ v_win.transpose(-2, -1)  # (B, H, n, C, Dh)
        return out.reshape(batch, heads, padded, d_head)[:, :, :length]

    @staticmethod
    def _spread(weights: torch.Tensor, length: int, reach: int) -> torch.Tensor:
        """Blocked band weights (B, H, n, C, span) → (B, H, T, T) for a picture."""
        batch, heads, n_blocks, block, span = weights.shape
        full = weights.new_zeros(batch, heads, n_blocks * block, n_blocks * block + 2 * reach)
        for b in range(n_blocks):
            full[:, :, b * block : (b + 1) * block, b * block : b * block + span] = weights[:, :, b]
        return full[:, :, :length, reach : reach + length]

    def _split_heads(self, t: torch.Tensor, n_heads: int) -> torch.Tensor:
        batch, length, _ = t.shape
        return t.view(batch, length, n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)

    def _share_kv_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H_kv, T, Dh) → (B, H, T, Dh): each key/value head serves H/H_kv query heads."""
        groups = self.n_heads // self.n_kv_heads
        return t if groups == 1 else t.repeat_interleave(groups, dim=1)


@contextmanager
def recording_attention(model: nn.Module, steps: bool = False):
    """Within this block every attention module of `model` keeps its last weights (`.weights`,
    (B, H, Tq, Tk)): the same forward pass, through the explicit formula, for plots. With
    `steps`, also every term of the computation (`.steps`, see `MultiHeadAttention._record`)."""
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    for module in modules:
        module.keep_weights, module.keep_steps = True, steps
    try:
        yield
    finally:
        for module in modules:
            module.keep_weights, module.weights = False, None
            module.keep_steps, module.steps = False, None
