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
from minitx.errors import UserError
from minitx.model.transformer import Seq2Seq

# One entry per source of a batch: what its output must do (a `SentenceSteering`: a target
# prefix, lexical constraints, banned phrases), None where there is nothing.
SentenceInputs = Sequence["SentenceSteering | None"]


@dataclass(frozen=True)
class SentenceSteering:
    """What one sentence's output must do, in target token ids: start with `prefix`, contain each
    of `constraints`, and contain none of `banned` (every tokenization of each banned phrase)."""

    prefix: tuple[int, ...] = ()
    constraints: tuple[tuple[int, ...], ...] = ()
    banned: tuple[tuple[int, ...], ...] = ()


class SentenceError(UserError):
    """One sentence of a batch cannot be decoded as asked. `sentence` is its place in the batch;
    `decode.translate` names it by its place in the input."""

    def __init__(self, sentence: int, reason: str):
        super().__init__(reason)
        self.sentence, self.reason = sentence, reason


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


class DecoderState(Protocol):
    """A batch being decoded: the next-token log-probabilities of target prefixes."""

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, t_new, V): the log-probabilities after each position of `tokens` (N, t) not fed
        before (all of them without a cache)."""
        ...

    def reorder(self, rows: torch.Tensor) -> None:
        """Rows follow `rows` (beam search keeps its survivors; each stays within its sentence)."""
        ...


class ModelState:
    """One model decoding a batch (B, S): the source encoded once and repeated `copies` times per
    sentence, and its key/value cache, so that each call feeds only the tokens it has not seen."""

    def __init__(self, model: Seq2Seq, src: torch.Tensor, copies: int, use_cache: bool):
        memory, src_mask = model.encode(src)
        self.model = model
        self.memory = memory.repeat_interleave(copies, dim=0)  # (B·copies, S, D)
        self.src_mask = src_mask.repeat_interleave(copies, dim=0)
        self.cache = model.new_cache() if use_cache else None
        self.fed = 0  # target positions already in the cache

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            logits = self.model.decode(tokens, self.memory, self.src_mask)[:, self.fed :]
        else:
            new = tokens[:, self.fed :]
            logits = self.model.decode(
                new, self.memory, self.src_mask, cache=self.cache, offset=self.fed
            )
        self.fed = tokens.shape[1]
        return F.log_softmax(logits.float(), dim=-1)

    def reorder(self, rows: torch.Tensor) -> None:
        if self.cache is not None:
            # Cross-attention caches need no reordering: all copies of a sentence share its source.
            for self_cache, _ in self.cache:
                self_cache.reorder(rows)


def start(model, src: torch.Tensor, copies: int, use_cache: bool) -> DecoderState:
    """The decoder state of `model` for a batch of sources (B, S), each decoded in `copies` rows:
    a model with its own `start` (an Ensemble) makes it; any other has a Seq2Seq's `encode`,
    `decode` and `new_cache`."""
    if hasattr(model, "start"):
        return model.start(src, copies, use_cache)
    return ModelState(model, src, copies, use_cache)


def next_log_probs(state: DecoderState, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (N, V) of the token after `tokens` (N, t)."""
    return state.log_probs(tokens)[:, -1]
