"""Several trained models decoding as one (an ensemble), with every search: at each step the
models' next-token distributions are combined, each model with its own key/value cache.

`mean_prob` (the default, as fairseq's and OpenNMT-py's ensembles) averages the probabilities,
log((p₁ + … + pₙ)/n); `mean_log_prob` averages the log-probabilities and renormalises (a
normalised geometric mean, the product of experts). docs/decoding.md compares them on Multi30k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minitx.inference.searches.base import ModelState
from minitx.model.transformer import Seq2Seq

COMBINATIONS = ("mean_prob", "mean_log_prob")


class Ensemble:
    """Seq2Seq models sharing their vocabularies, decoded together (see `start`)."""

    def __init__(self, models: list[Seq2Seq], combine: str = "mean_prob"):
        if combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {COMBINATIONS}, got {combine}")
        self.models, self.combine = models, combine

    def eval(self) -> Ensemble:
        for model in self.models:
            model.eval()
        return self

    def __call__(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced combined log-probabilities (B, T, V): the ensemble's "logits" for a
        loss (a log-softmax leaves them as they are)."""
        return self.start(src, 1, use_cache=False).log_probs(tgt_in)

    def start(self, src: torch.Tensor, copies: int, use_cache: bool) -> EnsembleState:
        states = [ModelState(model, src, copies, use_cache) for model in self.models]
        return EnsembleState(states, self.combine)


class EnsembleState:
    """The decoder states of every model of an ensemble, advanced together."""

    def __init__(self, states: list[ModelState], combine: str):
        self.states, self.combine = states, combine

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        each = torch.stack([state.log_probs(tokens) for state in self.states])  # (M, N, t, V)
        if self.combine == "mean_prob":
            return torch.logsumexp(each, dim=0) - math.log(len(self.states))
        return F.log_softmax(each.mean(dim=0), dim=-1)

    def reorder(self, rows: torch.Tensor) -> None:
        for state in self.states:
            state.reorder(rows)
