"""Sampling: each token drawn from the model's distribution, reshaped by temperature, top-k and
top-p (Holtzman et al., 2020), with draws that depend only on the seed, the source and the copy."""

from __future__ import annotations

import functools
import hashlib
import math
import os

import torch

from minitx.config import DecodeConfig
from minitx.data.tokenizer import SpecialIds
from minitx.inference.searches.base import Hypothesis, SentenceInputs
from minitx.inference.searches.greedy import token_by_token
from minitx.model.transformer import Seq2Seq


@torch.no_grad()
def sample(
    model: Seq2Seq,
    src: torch.Tensor,
    ids: SpecialIds,
    cfg: DecodeConfig,
    inputs: SentenceInputs | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """`cfg.n_best` samples per source, each token drawn from the model's distribution reshaped by
    `temperature`, `top_k` and `top_p`; ranked by score.

    The draws of a sample depend only on `cfg.seed`, its source and which copy it is, never on the
    other sources in the batch: the same seed gives the same samples however the input is split
    into batches or streamed. Without a seed, one is drawn from the OS."""
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(7), "little")
    keys = torch.tensor(
        [
            _draw_key(seed, row[row != ids.pad_id].tolist(), copy)
            for row in src.cpu()
            for copy in range(cfg.n_best)
        ],
        dtype=torch.long,
        device=src.device,
    )
    draw = functools.partial(_draw, cfg=cfg, keys=keys)
    return token_by_token(model, src, ids, cfg, draw, use_cache, inputs)


def _draw(
    log_probs: torch.Tensor, step: int, cfg: DecodeConfig, keys: torch.Tensor
) -> torch.Tensor:
    """One token per row, drawn from softmax(log_probs / temperature) within top-k and top-p, by
    inverting the cumulative distribution at the row's uniform number for this step."""
    logits = log_probs / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = logits.topk(cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
        # Keep each token whose more likely predecessors have not yet reached p (the first always).
        ordered = ordered.masked_fill(before >= cfg.top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
    cumulative = logits.double().softmax(dim=-1).cumsum(dim=-1)  # (N, V)
    target = _uniform(keys, step).unsqueeze(1) * cumulative[:, -1:]
    # right=True: the first token whose cumulative probability exceeds the target, never one
    # with zero probability.
    chosen = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    return chosen.clamp(max=logits.shape[-1] - 1)


def _draw_key(seed: int, source: list[int], copy: int) -> int:
    """A 63-bit key of (seed, source tokens, copy) for `_uniform`."""
    digest = hashlib.blake2b(f"{seed}:{copy}:{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(keys: torch.Tensor, step: int) -> torch.Tensor:
    """A number in [0, 1) per key and step: splitmix64 of (key, step) (Steele et al., 2014), in
    int64 arithmetic that wraps; right shifts are made logical with masks."""

    def shift(z: torch.Tensor, bits: int) -> torch.Tensor:
        return (z >> bits) & ((1 << (64 - bits)) - 1)

    z = keys + torch.full_like(keys, step + 1) * _signed(0x9E3779B97F4A7C15)
    z = (z ^ shift(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ shift(z, 27)) * _signed(0x94D049BB133111EB)
    z = z ^ shift(z, 31)
    return shift(z, 11).double() / float(1 << 53)


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant
