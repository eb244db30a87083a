"""The search methods decoding can use, in one registry: greedy decoding, beam search, sampling.

Every search has the `SearchFunction` interface (base.py): a batch of sources and, per source,
what else the search takes (`SentenceInputs`) → ranked hypotheses. `search_for` picks the one a
DecodeConfig asks for. A new search is one module with its function and one registry line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minitx.config import DecodeConfig
from minitx.inference.searches.base import Hypothesis, SearchFunction, SentenceInputs, max_lengths
from minitx.inference.searches.beam import beam_search
from minitx.inference.searches.greedy import greedy
from minitx.inference.searches.sampling import sample


@dataclass(frozen=True)
class Search:
    """A registered search: its name, the decode settings it serves, and the search itself."""

    name: str
    serves: Callable[[DecodeConfig], bool]  # exactly one registered search serves each setting
    run: SearchFunction


_SEARCHES: dict[str, Search] = {}


def register_search(search: Search) -> None:
    _SEARCHES[search.name] = search


def search_for(cfg: DecodeConfig) -> Search:
    """The registered search that serves `cfg`."""
    serving = [search for search in _SEARCHES.values() if search.serves(cfg)]
    if len(serving) != 1:  # a registry mistake, not the user's
        names = [search.name for search in serving]
        raise RuntimeError(f"the searches {names} serve {cfg}; exactly one should")
    return serving[0]


register_search(Search("greedy", lambda cfg: not cfg.sample and cfg.beam_size == 1, greedy))
register_search(Search("beam", lambda cfg: not cfg.sample and cfg.beam_size > 1, beam_search))
register_search(Search("sampling", lambda cfg: cfg.sample, sample))

__all__ = [
    "Hypothesis",
    "Search",
    "SearchFunction",
    "SentenceInputs",
    "beam_search",
    "greedy",
    "max_lengths",
    "register_search",
    "sample",
    "search_for",
]
