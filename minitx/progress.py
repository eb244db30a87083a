"""The one place that talks to the terminal while work runs: the `minitx` logger and tqdm bars.

Modules log status lines to `logging.getLogger(__name__)` (children of the `minitx` logger). The
command line attaches the terminal handler (`show_status`): stderr, through tqdm so that lines do
not tear a progress bar, stdout staying clean for translations and scores. Training also copies the
lines, timestamped, into RUN_DIR/train.log (`log_to_file`). Library use attaches nothing and prints
nothing but warnings, as Python's logging does by default.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger("minitx")
_show_bars = True


class _TerminalHandler(logging.Handler):
    """Status lines as they are; warnings and errors with their level in front."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        tqdm.write(message, file=sys.stderr)  # sys.stderr looked up now: tests replace it


def show_status(quiet: bool = False, silent: bool = False) -> None:
    """Status lines on stderr; `quiet`: warnings only and no bars; `silent`: nothing (the ranks
    other than 0, which speak through rank 0)."""
    global _show_bars
    _show_bars = not (quiet or silent)
    for handler in [h for h in logger.handlers if isinstance(h, _TerminalHandler)]:
        logger.removeHandler(handler)
    handler = _TerminalHandler()
    handler.setLevel(logging.CRITICAL + 1 if silent else logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Append every status line of the block to `path`, timestamped."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A progress bar on stderr, hidden when quiet or when stderr is not a terminal."""
    disable = not _show_bars or not sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)
