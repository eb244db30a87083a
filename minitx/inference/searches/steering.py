"""What every search does with a batch's `SentenceSteering`: force each sentence's target prefix
(after one batched forward pass over the part all rows share) and keep banned phrases out.

Rows are the batch's sentences, each in `copies` consecutive rows (beams or samples); a row keeps
its sentence through a beam search's reordering, so these per-row tensors never move.
"""

from __future__ import annotations

import math

import torch

from minitx.inference.searches.base import (
    DecoderState,
    SentenceError,
    SentenceInputs,
    SentenceSteering,
)


class RowSteering:
    """The prefixes and banned phrases of a batch's rows."""

    def __init__(self, inputs: SentenceInputs | None, batch: int, copies: int, device):
        sentences = list(inputs) if inputs is not None else [None] * batch
        rows = [s or SentenceSteering() for s in sentences for _ in range(copies)]
        longest = max((len(row.prefix) for row in rows), default=0)
        self.prefix_length = torch.tensor([len(row.prefix) for row in rows], device=device)
        self.prefix = torch.tensor(
            [list(row.prefix) + [0] * (longest - len(row.prefix)) for row in rows],
            dtype=torch.long,
            device=device,
        ).view(len(rows), longest)
        self.shared = int(self.prefix_length.min()) if rows else 0  # forced in every row
        self.any_prefix = longest > 0
        # Banned token sequences grouped by length: (rows (M,), sequences (M, L)).
        grouped: dict[int, tuple[list[int], list[tuple[int, ...]]]] = {}
        for index, row in enumerate(rows):
            for sequence in row.banned:
                owners, sequences = grouped.setdefault(len(sequence), ([], []))
                owners.append(index)
                sequences.append(sequence)
        self.banned = {
            length: (torch.tensor(owners, device=device), torch.tensor(sequences, device=device))
            for length, (owners, sequences) in grouped.items()
        }

    def check_fits(self, limits: torch.Tensor, copies: int) -> None:
        """Refuse a prefix that does not fit its sentence's output limit (EOS included)."""
        too_long = self.prefix_length >= limits.repeat_interleave(copies)
        if bool(too_long.any()):
            row = int(too_long.nonzero()[0])
            raise SentenceError(
                row // copies,
                f"its target prefix has {int(self.prefix_length[row])} "
                f"tokens and its output may have {int(limits[row // copies]) - 1} "
                "(decode.max_len_ratio × source length + decode.max_len_offset): shorten the "
                "prefix or raise the limit",
            )

    def prefill(
        self, state: DecoderState, bos_id: int, rows: int, device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed BOS and the prefix tokens every row shares in one forward pass: the tokens
        (N, 1 + P), the summed log-probability of the forced ones (N,) and the log-probabilities
        of the next token (N, V)."""
        bos = torch.full((rows, 1), bos_id, dtype=torch.long, device=device)
        tokens = torch.cat([bos, self.prefix[:, : self.shared]], dim=1)
        log_probs = state.log_probs(tokens)  # (N, 1 + P, V)
        forced = log_probs[:, :-1].gather(2, tokens[:, 1:, None]).squeeze(2).sum(dim=1)
        return tokens, forced, log_probs[:, -1]

    def steer(self, log_probs: torch.Tensor, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """`log_probs` (N, V) of the token at `step` after `tokens` (N, 1 + step), with every
        token that would complete a banned sequence at -inf (the others renormalised) and, for a
        row still in its prefix, only the prefix's token left (with its own log-probability: a
        prefix is scored)."""
        steered = log_probs
        generated = tokens.shape[1] - 1  # without BOS
        banning = torch.zeros(log_probs.shape[0], dtype=torch.bool, device=log_probs.device)
        for length, (owners, sequences) in self.banned.items():
            if length - 1 > generated:
                continue
            if length > 1:
                context = tokens[owners, tokens.shape[1] - (length - 1) :]
                hit = (context == sequences[:, :-1]).all(dim=1)
                owners, last = owners[hit], sequences[hit, -1]
            else:
                last = sequences[:, 0]
            if steered is log_probs:
                steered = log_probs.clone()
            steered[owners, last] = -math.inf
            banning[owners] = True
        if bool(banning.any()):
            # What is banned is as if the model could not say it: the rest is renormalised (as
            # CTranslate2's suppress_sequences does), so scores compare across engines.
            steered[banning] = torch.log_softmax(steered[banning], dim=-1)
        if self.any_prefix:
            forced = step < self.prefix_length
            if bool(forced.any()):
                token = self.prefix[:, min(step, self.prefix.shape[1] - 1)].unsqueeze(1)
                only = torch.full_like(log_probs, -math.inf).scatter(
                    1, token, log_probs.gather(1, token)
                )
                steered = torch.where(forced.unsqueeze(1), only, steered)
        return steered
