"""The search methods decoding can use, in one registry: greedy decoding, beam search, sampling,
and lexically constrained beam search.

Every search has the `SearchFunction` interface (base.py): a batch of sources and, per source,
what else the search takes (`SentenceInputs`) → ranked hypotheses. `search_for` picks the one a
DecodeConfig asks for. A new search is one module with its function and one registry line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minitx.config import DecodeConfig
from minitx.errors import UserError
from minitx.inference.searches.base import (
    Hypothesis,
    SearchFunction,
    SentenceError,
    SentenceInputs,
    SentenceSteering,
    max_lengths,
)
from minitx.inference.searches.beam import beam_search
from minitx.inference.searches.constrained import constrained_beam_search
from minitx.inference.searches.greedy import greedy
from minitx.inference.searches.sampling import sample


@dataclass(frozen=True)
class Search:
    """A registered search: its name, the decode settings it serves, and the search itself."""

    name: str
    # (settings, whether a sentence has lexical constraints) → whether this search serves them;
    # exactly one registered search serves each case
    serves: Callable[[DecodeConfig, bool], bool]
    run: SearchFunction


_SEARCHES: dict[str, Search] = {}


def register_search(search: Search) -> None:
    _SEARCHES[search.name] = search


def search_for(cfg: DecodeConfig, constrained: bool = False) -> Search:
    """The registered search that serves `cfg` (for sentences with lexical constraints when
    `constrained`)."""
    if constrained and (cfg.sample or cfg.beam_size < 2):
        raise UserError(
            "lexical constraints need beam search: a beam of 2 or more (--beam, decode.beam_size), "
            "without sampling"
        )
    serving = [search for search in _SEARCHES.values() if search.serves(cfg, constrained)]
    if len(serving) != 1:  # a registry mistake, not the user's
        names = [search.name for search in serving]
        raise RuntimeError(f"the searches {names} serve {cfg}; exactly one should")
    return serving[0]


def _searching(cfg: DecodeConfig) -> bool:
    return not cfg.sample and cfg.beam_size > 1


register_search(
    Search("greedy", lambda cfg, c: not c and not cfg.sample and cfg.beam_size == 1, greedy)
)
register_search(Search("beam", lambda cfg, c: not c and _searching(cfg), beam_search))
register_search(Search("sampling", lambda cfg, c: not c and cfg.sample, sample))
register_search(
    Search("constrained", lambda cfg, c: c and _searching(cfg), constrained_beam_search)
)

__all__ = [
    "Hypothesis",
    "Search",
    "SearchFunction",
    "SentenceError",
    "SentenceInputs",
    "SentenceSteering",
    "constrained_beam_search",
    "beam_search",
    "greedy",
    "max_lengths",
    "register_search",
    "sample",
    "search_for",
]
