"""What every search shares: the `Hypothesis` it returns, the `SearchFunction` interface, each
sentence's length limit and the next-token step over `Seq2Seq.encode`/`decode`.

The source is encoded once; with the key/value cache each step feeds only the newest token.
Without it (`use_cache=False`) a search recomputes the whole prefix each step: slower, same
output, and the reference the cache is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from minitx.config import DecodeConfig
from minitx.data.tokenizer import SpecialIds
from minitx.model.attention import KVCache
from minitx.model.transformer import Seq2Seq

# One entry per source of a batch: what a search takes per sentence beyond its tokens (a target
# prefix or lexical constraints, for the searches that will use them), None where there is none.
SentenceInputs = Sequence[object | None]


@dataclass
class Hypothesis:
    """One output for one source: its tokens (no BOS or EOS) and how likely the model finds them."""

    tokens: list[int]
    log_prob: float  # summed log-probability of the tokens and the final EOS
    score: float  # log_prob / length**length_penalty (length with EOS): what ranks hypotheses
    text: str = ""  # detokenized, filled in by `translate`
    alignment: list[tuple[int, int]] | None = None  # (source word, target word), when asked


class SearchFunction(Protocol):
    """A search: a batch of sources (B, S) → each source's hypotheses, best first."""

    def __call__(
        self,
        model: Seq2Seq,
        src: torch.Tensor,
        ids: SpecialIds,
        cfg: DecodeConfig,
        inputs: SentenceInputs | None = None,
        use_cache: bool = True,
    ) -> list[list[Hypothesis]]: ...


def max_lengths(src: torch.Tensor, pad_id: int, cfg: DecodeConfig) -> torch.Tensor:
    """Per-sentence output limit (tokens, EOS included): ratio × source length + offset."""
    src_len = (src != pad_id).sum(dim=1).float()
    return torch.clamp((src_len * cfg.max_len_ratio).ceil().long() + cfg.max_len_offset, min=1)


def next_log_probs(
    model: Seq2Seq,
    tokens: torch.Tensor,
    memory: torch.Tensor,
    src_mask: torch.Tensor,
    cache: list[tuple[KVCache, KVCache]] | None,
) -> torch.Tensor:
    """Log-probabilities (N, V) of the token after `tokens` (N, t)."""
    if cache is not None:
        step = tokens.shape[1] - 1
        logits = model.decode(tokens[:, -1:], memory, src_mask, cache=cache, offset=step)
    else:
        logits = model.decode(tokens, memory, src_mask)
    return F.log_softmax(logits[:, -1].float(), dim=-1)
