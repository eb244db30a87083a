"""The one place that talks to the terminal while work runs: messages and tqdm progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def info(message: str) -> None:
    """A status line on stderr (stdout stays clean for translations and scores)."""
    if not _quiet:
        tqdm.write(message, file=sys.stderr)


def bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A progress bar on stderr, hidden when quiet or when stderr is not a terminal."""
    disable = _quiet or not sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)
