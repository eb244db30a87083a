"""Greedy decoding, and the token-by-token loop it shares with sampling: each step appends one
chosen token per output until every output has ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from minitx.config import DecodeConfig
from minitx.data.tokenizer import SpecialIds
from minitx.inference.searches.base import (
    Hypothesis,
    SentenceInputs,
    max_lengths,
    next_log_probs,
    start,
)
from minitx.inference.searches.steering import RowSteering
from minitx.model.transformer import Seq2Seq

# (next-token log-probabilities (N, V), step) → the chosen token of each row (N,)
ChooseToken = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def greedy(
    model: Seq2Seq,
    src: torch.Tensor,
    ids: SpecialIds,
    cfg: DecodeConfig,
    inputs: SentenceInputs | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """The most likely next token at every step, for each source of a batch (B, S): one
    hypothesis each."""
    return token_by_token(model, src, ids, replace(cfg, n_best=1), _most_likely, use_cache, inputs)


def _most_likely(log_probs: torch.Tensor, step: int) -> torch.Tensor:
    return log_probs.argmax(dim=-1)


def token_by_token(
    model: Seq2Seq,
    src: torch.Tensor,
    ids: SpecialIds,
    cfg: DecodeConfig,
    choose: ChooseToken,
    use_cache: bool,
    inputs: SentenceInputs | None = None,
) -> list[list[Hypothesis]]:
    """Decode `cfg.n_best` outputs per source, each token `choose`n from the next-token
    log-probabilities (N, V), steered by `inputs` (prefixes, banned phrases); returns them
    ranked by score."""
    copies = cfg.n_best
    rows, device = src.shape[0] * copies, src.device
    state = start(model, src, copies, use_cache)
    sentence_limits = max_lengths(src, ids.pad_id, cfg)
    limits = sentence_limits.repeat_interleave(copies)  # (B·N,)
    steering = RowSteering(inputs, src.shape[0], copies, device)
    steering.check_fits(sentence_limits, copies)
    tokens, log_prob, log_probs = steering.prefill(state, ids.bos_id, rows, device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    for step in range(steering.shared, int(limits.max())):
        if step > steering.shared:
            log_probs = next_log_probs(state, tokens)  # (B·N, V)
        log_probs = steering.steer(log_probs, tokens, step)
        next_tokens = torch.where(step >= limits - 1, ids.eos_id, choose(log_probs, step))
        next_tokens = torch.where(finished, ids.pad_id, next_tokens)
        chosen = log_probs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        log_prob += torch.where(finished, 0.0, chosen)
        tokens = torch.cat([tokens, next_tokens.unsqueeze(1)], dim=1)
        finished |= next_tokens == ids.eos_id
        if bool(finished.all()):
            break
    outputs = []
    for row, total in zip(tokens[:, 1:].tolist(), log_prob.tolist(), strict=True):
        row = row[: row.index(ids.eos_id)] if ids.eos_id in row else row
        outputs.append(Hypothesis(row, total, total / (len(row) + 1) ** cfg.length_penalty))
    grouped = [outputs[i : i + copies] for i in range(0, rows, copies)]
    return [sorted(group, key=lambda h: -h.score) for group in grouped]
