"""Feed-forward block, encoder layer and decoder layer, with pre- or post-norm residuals."""

from __future__ import annotations

import torch
from torch import nn

from minitx.config import ModelConfig
from minitx.model.attention import AttentionSpec, KVCache, MultiHeadAttention
from minitx.model.dropout import Dropout

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, d_ff),
            ACTIVATIONS[activation](),
            Dropout(dropout),
            nn.Linear(d_ff, d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Residual(nn.Module):
    """x + dropout(sublayer(norm(x))) (pre-norm) or norm(x + dropout(sublayer(x))) (post-norm).

    Pre-norm trains stably without a long warmup (Xiong et al., 2020); post-norm is the original.
    """

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention over the source (within `model.window` when set), then feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        spec = AttentionSpec.from_config(cfg, window=cfg.window, dilation=cfg.dilation)
        self.self_attention = MultiHeadAttention(spec)
        self.feed_forward = FeedForward(
            cfg.d_model, cfg.d_ff, cfg.activation_dropout, cfg.activation
        )
        self.attention_residual = Residual(cfg.d_model, cfg.dropout, cfg.norm == "pre")
        self.feed_forward_residual = Residual(cfg.d_model, cfg.dropout, cfg.norm == "pre")

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention_residual(x, lambda h: self.self_attention(h, h, mask=src_mask))
        return self.feed_forward_residual(x, self.feed_forward)


class DecoderLayer(nn.Module):
    """Causal self-attention over the target prefix, cross-attention to the source, feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self_spec = AttentionSpec.from_config(cfg, relative_bidirectional=False)
        self.self_attention = MultiHeadAttention(self_spec)
        # Cross-attention relates positions of two different sentences: no relative positions.
        self.cross_attention = MultiHeadAttention(AttentionSpec.from_config(cfg, positions="none"))
        self.feed_forward = FeedForward(
            cfg.d_model, cfg.d_ff, cfg.activation_dropout, cfg.activation
        )
        pre_norm = cfg.norm == "pre"
        self.self_attention_residual = Residual(cfg.d_model, cfg.dropout, pre_norm)
        self.cross_attention_residual = Residual(cfg.d_model, cfg.dropout, pre_norm)
        self.feed_forward_residual = Residual(cfg.d_model, cfg.dropout, pre_norm)

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: tuple[KVCache, KVCache] | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """`cache` = (self-attention cache, cross-attention cache) when decoding step by step;
        `offset` = the position of y[:, 0]."""
        self_cache, cross_cache = cache if cache is not None else (None, None)
        y = self.self_attention_residual(
            y, lambda h: self.self_attention(h, h, causal=True, cache=self_cache, offset=offset)
        )
        y = self.cross_attention_residual(
            y, lambda h: self.cross_attention(h, memory, mask=src_mask, cache=cross_cache)
        )
        return self.feed_forward_residual(y, self.feed_forward)
