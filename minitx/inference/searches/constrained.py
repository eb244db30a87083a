"""Lexically constrained beam search: every output contains each of its sentence's target phrases.

Dynamic beam allocation (Post & Vilar, 2018), batched over sentences and beams as Hu et al. (2019)
do: each step's candidates are the 2·K best extensions (as plain beam search), plus, for every
beam, the next token of each constraint it has not met and its own best token. A candidate's
*bank* is how many constraint tokens it has met; the K survivors are picked round-robin across
banks, best first within each, the fullest bank first in each round, so that hypotheses that
have met more constraints are not crowded out by likelier ones that have met fewer.

A multi-token phrase, once started, is tracked: the next token either continues it or abandons
it (its progress is lost). EOS is allowed only once every constraint is met, and a beam whose
remaining length is just enough for the tokens it still needs may only take them, so that every
sentence ends with hypotheses that hold all its constraints.
"""

from __future__ import annotations

import math

import torch

from minitx.config import DecodeConfig
from minitx.data.tokenizer import SpecialIds
from minitx.inference.searches.base import (
    Hypothesis,
    SentenceError,
    SentenceInputs,
    next_log_probs,
)
from minitx.inference.searches.beam import _Finished, start_beams
from minitx.inference.searches.steering import RowSteering
from minitx.model.transformer import Seq2Seq


class _Constraints:
    """Per sentence its constraints as tokens (B, C, L), and per row where it stands: which
    constraints it has met (N, C), the one it is in the middle of (N,; -1: none) and how many of
    that one's tokens it has matched (N,)."""

    def __init__(self, inputs: SentenceInputs | None, batch: int, copies: int, device):
        phrases = [list(s.constraints) if s is not None else [] for s in inputs or [None] * batch]
        width = max((len(p) for p in phrases), default=0)
        longest = max((len(c) for p in phrases for c in p), default=1)
        self.tokens = torch.zeros(batch, max(width, 1), longest, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, max(width, 1), dtype=torch.long, device=device)
        for b, sentence in enumerate(phrases):
            for c, phrase in enumerate(sentence):
                self.tokens[b, c, : len(phrase)] = torch.tensor(phrase, device=device)
                self.lengths[b, c] = len(phrase)
        self.copies = copies
        self.total = self.lengths.sum(dim=1)  # (B,): constraint tokens each sentence needs
        rows = batch * copies
        self.met = (self.lengths == 0).repeat_interleave(copies, dim=0)  # absent ones: met
        self.active = torch.full((rows,), -1, dtype=torch.long, device=device)
        self.matched = torch.zeros(rows, dtype=torch.long, device=device)

    def sentence_of(self, rows: torch.Tensor) -> torch.Tensor:
        return rows // self.copies

    def progress(self, met, matched, sentences) -> torch.Tensor:
        """Constraint tokens met: the bank."""
        return (met * self.lengths[sentences]).sum(dim=-1) + matched

    def next_tokens(self) -> torch.Tensor:
        """(N, C): each row's next token for each constraint (-1 where met): the one after its
        matched tokens for the phrase it is in, the first for the others."""
        sentences = self.sentence_of(torch.arange(self.met.shape[0], device=self.met.device))
        position = torch.zeros_like(self.met, dtype=torch.long)
        in_phrase = self.active >= 0
        position[in_phrase, self.active[in_phrase]] = self.matched[in_phrase]
        tokens = self.tokens[sentences].gather(2, position.unsqueeze(2)).squeeze(2)
        return tokens.masked_fill(self.met, -1)

    def after(self, rows: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor):
        """The state (met, active, matched) of rows `rows` (R,) after the first `lengths` (R,)
        of their `tokens` (R, T)."""
        state = (self.met[rows], self.active[rows], self.matched[rows])
        for position in range(tokens.shape[1]):
            moved = self.advance_from(state, rows, tokens[:, position])
            within = lengths > position
            state = tuple(
                torch.where(within.view(-1, *[1] * (new.dim() - 1)), new, old)
                for new, old in zip(moved, state, strict=True)
            )
        return state

    def advance(self, rows: torch.Tensor, token: torch.Tensor):
        """The state (met, active, matched) of rows `rows` (any shape) after `token` (same shape)."""
        return self.advance_from(
            (self.met[rows], self.active[rows], self.matched[rows]), rows, token
        )

    def advance_from(self, state, rows: torch.Tensor, token: torch.Tensor):
        """`state` (met, active, matched) of rows `rows` after `token`."""
        sentences = self.sentence_of(rows)
        met, active, matched = state[0].clone(), state[1], state[2]
        phrases, lengths = self.tokens[sentences], self.lengths[sentences]  # (..., C, L), (..., C)
        current = active.clamp(min=0)
        expected = phrases.gather(
            -2, current[..., None, None].expand(*current.shape, 1, phrases.shape[-1])
        ).squeeze(-2)  # (..., L): the phrase in progress
        expected = expected.gather(-1, matched.clamp(max=phrases.shape[-1] - 1)[..., None])[..., 0]
        continues = (active >= 0) & (token == expected)
        length = lengths.gather(-1, current[..., None])[..., 0]
        completes = continues & (matched + 1 == length)
        # Otherwise a token may start a phrase not yet met (the first such, if several).
        starts_each = (phrases[..., 0] == token[..., None]) & ~met & (lengths > 0)
        starts = ~continues & starts_each.any(dim=-1)
        started = starts_each.float().argmax(dim=-1)
        started_length = lengths.gather(-1, started[..., None])[..., 0]
        met = met | (completes[..., None] & _one_hot(current, met.shape[-1]))
        met = met | ((starts & (started_length == 1))[..., None] & _one_hot(started, met.shape[-1]))
        going_on = continues & ~completes
        opened = starts & (started_length > 1)
        active = torch.where(going_on, active, torch.where(opened, started, -1))
        matched = torch.where(going_on, matched + 1, torch.where(opened, 1, 0))
        return met, active, matched

    def take(self, state) -> None:
        """Make `state` (met, active, matched), each (B, K, ...) or (N, 1, ...), the rows' own."""
        self.met, self.active, self.matched = (t.reshape(-1, *t.shape[2:]) for t in state)


def _one_hot(index: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, width).bool()


@torch.no_grad()
def constrained_beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    ids: SpecialIds,
    cfg: DecodeConfig,
    inputs: SentenceInputs | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Beam search whose hypotheses each contain every constraint of their sentence (`inputs`);
    prefixes and banned phrases are honoured as in the other searches."""
    batch, k, device = src.shape[0], cfg.beam_size, src.device
    state, limits, steering, tokens, scores, log_probs = start_beams(
        model, src, ids, cfg, inputs, use_cache
    )
    constraints = _Constraints(inputs, batch, k, device)
    _check_constraints_fit(constraints, steering, limits, k)
    rows = torch.arange(batch * k, device=device)
    fed = torch.full_like(rows, tokens.shape[1] - 1)  # a prefix may already meet constraints
    constraints.take([t[:, None] for t in constraints.after(rows, tokens[:, 1:], fed)])
    finished = _Finished(batch, k, cfg.length_penalty)
    row_limits = limits.repeat_interleave(k)
    for step in range(steering.shared, int(limits.max())):
        if step > steering.shared:
            log_probs = next_log_probs(state, tokens)
        log_probs = steering.steer(log_probs, tokens, step).clone()
        vocab = log_probs.shape[1]
        sentences = constraints.sentence_of(rows)
        needed = constraints.total[sentences] - constraints.progress(
            constraints.met, constraints.matched, sentences
        )
        log_probs[needed > 0, ids.eos_id] = -math.inf  # no end before every constraint is met
        wanted = constraints.next_tokens()  # (N, C)
        # in a phrase, only its next token keeps progress
        in_phrase = constraints.active >= 0
        keep = _one_hot(constraints.active.clamp(min=0), wanted.shape[1]) | ~in_phrase[:, None]
        tight_wanted = wanted.masked_fill(~keep, -1)
        tight = (needed > 0) & (row_limits - 1 - step <= needed)
        if bool(tight.any()):  # just enough room left: only the tokens still needed
            allowed = tight_wanted.clamp(min=0)
            needed_scores = log_probs.gather(1, allowed).masked_fill(tight_wanted < 0, -math.inf)
            only = torch.full_like(log_probs, -math.inf).scatter_(1, allowed, needed_scores)
            log_probs = torch.where(tight[:, None], only, log_probs)
        at_limit = step >= row_limits - 1
        log_probs[at_limit] = torch.where(
            torch.arange(vocab, device=device) == ids.eos_id, log_probs[at_limit], -math.inf
        )
        origin, token, score = _candidates(scores, log_probs, wanted, k)  # (B, M) each
        ordered, order = score.sort(dim=1, descending=True)
        origin, token = origin.gather(1, order), token.gather(1, order)
        # Only beams that have met every constraint may end (EOS is -inf for the others): every
        # such ending is kept, not only those among the K likeliest candidates, which beams
        # held back to meet constraints seldom are.
        ends = (token == ids.eos_id) & torch.isfinite(ordered)
        finished.add(tokens, ordered, origin, ends)
        ordered = ordered.masked_fill(ends, -math.inf)
        new_state = constraints.advance(origin, token)
        bank = constraints.progress(new_state[0], new_state[2], origin // k)
        chosen = _allocate(ordered, bank, k)  # (B, K) indices into the ordered candidates
        scores = ordered.gather(1, chosen)
        finished.close(scores.max(dim=1).values / (step + 1) ** cfg.length_penalty)
        if finished.done():
            break
        survivors = origin.gather(1, chosen).view(-1)
        constraints.take([_picked(t, chosen) for t in new_state])
        tokens = torch.cat([tokens[survivors], token.gather(1, chosen).view(-1, 1)], dim=1)
        state.reorder(survivors)
    found = finished.best(cfg.n_best)
    empty = [i for i, hypotheses in enumerate(found) if not hypotheses]
    if empty:
        raise SentenceError(
            empty[0],
            "no output could hold every constraint (is a constraint banned, or in conflict "
            "with the target prefix?)",
        )
    return found


def _candidates(scores, log_probs, wanted, k):
    """Per sentence: the 2·K best extensions, each beam's extension by each constraint's next
    token, and each beam's best token; duplicates dropped. (origin row, token, score) (B, M)."""
    batch = scores.shape[0]
    vocab = log_probs.shape[1]
    total = scores.view(-1, 1) + log_probs  # (N, V)
    top_scores, top = total.view(batch, k * vocab).topk(2 * k, dim=1)
    base = torch.arange(batch, device=scores.device).unsqueeze(1) * k
    top_origin, top_token = base + top // vocab, top % vocab
    rows = torch.arange(batch * k, device=scores.device)
    wanted_score = total.gather(1, wanted.clamp(min=0)).masked_fill(wanted < 0, -math.inf)
    wanted_origin = rows[:, None].expand_as(wanted)
    best_score, best_token = total.max(dim=1, keepdim=True)
    origin = torch.cat([top_origin, wanted_origin.reshape(batch, -1), rows.view(batch, k)], dim=1)
    token = torch.cat(
        [top_token, wanted.clamp(min=0).reshape(batch, -1), best_token.view(batch, k)], dim=1
    )
    score = torch.cat([top_scores, wanted_score.reshape(batch, -1), best_score.view(batch, k)], 1)
    # The same (origin, token) may come from several lists: keep one.
    key = origin * vocab + token
    sorted_key, order = key.sort(dim=1)
    repeated = torch.zeros_like(sorted_key, dtype=torch.bool)
    repeated[:, 1:] = sorted_key[:, 1:] == sorted_key[:, :-1]
    score = score.scatter(1, order, score.gather(1, order).masked_fill(repeated, -math.inf))
    return origin, token, score


def _allocate(ordered: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """K of the candidates (sorted by score, best first): round-robin over banks, fullest bank
    first in each round, best first within a bank; impossible ones (-inf) last."""
    banks = int(bank.max()) + 1
    possible = torch.isfinite(ordered)
    seen = (torch.nn.functional.one_hot(bank, banks) * possible[..., None]).cumsum(dim=1)
    rank = seen.gather(2, bank.unsqueeze(2)).squeeze(2) - 1  # place within its bank
    priority = rank * banks + (banks - 1 - bank)
    priority = priority.masked_fill(~possible, torch.iinfo(torch.long).max)
    return priority.topk(k, dim=1, largest=False).indices


def _picked(state: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The rows of a per-candidate state (B, M, ...) that `chosen` (B, K) picks."""
    index = chosen.view(*chosen.shape, *([1] * (state.dim() - 2))).expand(
        *chosen.shape, *state.shape[2:]
    )
    return state.gather(1, index)


def _check_constraints_fit(constraints: _Constraints, steering: RowSteering, limits, k) -> None:
    """Refuse constraints that cannot fit the output limit after the target prefix (what the
    prefix already meets counts as met)."""
    rows = torch.arange(0, limits.shape[0] * k, k, device=limits.device)  # a row per sentence
    met, _, matched = constraints.after(rows, steering.prefix[rows], steering.prefix_length[rows])
    sentences = torch.arange(limits.shape[0], device=limits.device)
    still = constraints.total - constraints.progress(met, matched, sentences)
    need = still + steering.prefix_length[rows]
    too_long = need >= limits
    if bool(too_long.any()):
        sentence = int(too_long.nonzero()[0])
        raise SentenceError(
            sentence,
            f"its constraints (and target prefix) need {int(need[sentence])} tokens and its "
            f"output may have {int(limits[sentence]) - 1}: give fewer or shorter constraints, "
            "or raise decode.max_len_ratio / max_len_offset",
        )
