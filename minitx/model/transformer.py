"""Encoder, Decoder, the encoder-decoder Seq2Seq model and the encoder-only Classifier; `build_model`."""

from __future__ import annotations

import math

import torch
from torch import nn

from minitx.config import ModelConfig
from minitx.model.attention import KVCache, MultiHeadAttention
from minitx.model.dropout import Dropout
from minitx.model.layers import DecoderLayer, EncoderLayer
from minitx.model.positions import LearnedPositions, SinusoidalPositions


class Embedding(nn.Module):
    """Token embeddings × √d_model (Vaswani et al., 2017, 3.4), plus absolute positions when
    `positions` is sinusoidal or learned (relative schemes live in attention instead)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        pad_id: int,
        dropout: float,
        positions: str = "sinusoidal",
        max_positions: int = 1024,
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.positions = None
        if positions == "sinusoidal":
            self.positions = SinusoidalPositions(d_model)
        elif positions == "learned":
            self.positions = LearnedPositions(d_model, max_positions)
        self.dropout = Dropout(dropout)
        self.scale = math.sqrt(d_model)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.tokens(ids) * self.scale  # (B, T, D)
        if self.positions is not None:
            x = x + self.positions(ids.shape[1], offset)
        return self.dropout(x)


def embedding(cfg: ModelConfig, vocab_size: int, pad_id: int) -> Embedding:
    return Embedding(vocab_size, cfg.d_model, pad_id, cfg.dropout, cfg.positions, cfg.max_positions)


def final_norm(cfg: ModelConfig) -> nn.Module:
    # Pre-norm leaves the residual stream unnormalised; one final norm fixes its scale.
    return nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, embedding: Embedding):
        super().__init__()
        self.embedding = embedding
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.final_norm = final_norm(cfg)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.embedding(src)
        for layer in self.layers:
            x = layer(x, src_mask)
        return self.final_norm(x)  # (B, S, D)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, embedding: Embedding, vocab_size: int):
        super().__init__()
        self.embedding = embedding
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.final_norm = final_norm(cfg)
        self.output = nn.Linear(cfg.d_model, vocab_size, bias=cfg.output_bias)
        if cfg.tie_embeddings:
            self.output.weight = embedding.tokens.weight  # Press & Wolf (2017)

    def forward(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: list[tuple[KVCache, KVCache]] | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """Logits (B, T, V) for each target position; `offset` is the position of tgt_in[:, 0]."""
        y = self.embedding(tgt_in, offset)
        for i, layer in enumerate(self.layers):
            y = layer(y, memory, src_mask, None if cache is None else cache[i], offset)
        return self.output(self.final_norm(y))


class Seq2Seq(nn.Module):
    """The encoder-decoder Transformer: `encode` the source once, `decode` target prefixes against it."""

    def __init__(
        self,
        cfg: ModelConfig,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int,
        joint_vocab: bool,
    ):
        super().__init__()
        self.pad_id = pad_id
        src_embedding = embedding(cfg, src_vocab_size, pad_id)
        if joint_vocab and cfg.tie_embeddings:
            tgt_embedding = src_embedding  # one table for source, target and output
        else:
            tgt_embedding = embedding(cfg, tgt_vocab_size, pad_id)
        self.encoder = Encoder(cfg, src_embedding)
        self.decoder = Decoder(cfg, tgt_embedding, tgt_vocab_size)
        init_weights(self, cfg.d_model)
        prune_heads(self, cfg.pruned_heads)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory (B, S, D), source mask (B, 1, 1, S))."""
        src_mask = padding_mask(src, self.pad_id)
        return self.encoder(src, src_mask), src_mask

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, **step
    ) -> torch.Tensor:
        """Logits (B, T, V) of the target prefix `tgt_in` against the encoded source; `step` holds
        the `cache` and `offset` when decoding step by step (see Decoder.forward)."""
        return self.decoder(tgt_in, memory, src_mask, **step)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V)."""
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        """An empty (self-attention, cross-attention) cache for each decoder layer."""
        return [(KVCache(), KVCache(static=True)) for _ in self.decoder.layers]


class Classifier(nn.Module):
    """The encoder, a pooling step and a linear head: text → class logits.

    Pooling is the mean of the encoder outputs over real tokens, or (`cls`) the output at the
    `<s>` every input starts with, a learned token in the role of BERT's [CLS].
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int, n_classes: int):
        super().__init__()
        self.pad_id = pad_id
        self.pooling = cfg.pooling
        self.encoder = Encoder(cfg, embedding(cfg, vocab_size, pad_id))
        self.dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.d_model, n_classes)
        init_weights(self, cfg.d_model)
        prune_heads(self, cfg.pruned_heads)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder outputs (B, S, D), padding mask (B, 1, 1, S))."""
        src_mask = padding_mask(src, self.pad_id)
        return self.encoder(src, src_mask), src_mask

    def pool(self, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """One vector per text (B, D)."""
        if self.pooling == "cls":
            return memory[:, 0]
        real = src_mask[:, 0, 0, :, None].to(memory.dtype)  # (B, S, 1)
        return (memory * real).sum(1) / real.sum(1).clamp(min=1)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C)."""
        return self.head(self.dropout(self.pool(*self.encode(src))))


def attention_modules(model: nn.Module) -> dict[tuple[str, int], MultiHeadAttention]:
    """Every attention module of a Seq2Seq or Classifier by (kind, layer): kinds encoder_self,
    decoder_self and cross."""
    modules = {
        ("encoder_self", i): layer.self_attention for i, layer in enumerate(model.encoder.layers)
    }
    decoder = getattr(model, "decoder", None)
    for i, layer in enumerate(decoder.layers if decoder is not None else []):
        modules["decoder_self", i] = layer.self_attention
        modules["cross", i] = layer.cross_attention
    return modules


def prune_heads(model: nn.Module, pruned: dict[str, list[int]]) -> None:
    """Remove the heads `pruned` names ({"KIND.LAYER": [head, …]}, model.pruned_heads)."""
    modules = attention_modules(model)
    for key, heads in pruned.items():
        kind, _, layer = key.partition(".")
        if (kind, int(layer)) not in modules:
            raise ValueError(f"model.pruned_heads names {key}, which this model does not have")
        modules[kind, int(layer)].prune(heads)


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (ids != pad_id)[:, None, None, :]  # (B, 1, 1, S): True where a real token


def init_weights(model: nn.Module, d_model: int) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    # Embeddings last, so a tied output layer ends with the embedding init, not Xavier's.
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            # N(0, d^-1/2): after the √d scale, embeddings start at unit size (fairseq).
            nn.init.normal_(module.weight, std=d_model**-0.5)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()


def build_model(
    cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int, joint_vocab: bool
) -> Seq2Seq:
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size, pad_id, joint_vocab)


def build_classifier(cfg: ModelConfig, vocab_size: int, pad_id: int, n_classes: int) -> Classifier:
    return Classifier(cfg, vocab_size, pad_id, n_classes)
