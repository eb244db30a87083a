"""A parallel corpus written as it is produced, in the layout `data.path` reads (PREFIX.<src> and
PREFIX.<tgt>, one sentence per line), that a stopped writer continues instead of redoing.

Each chunk of pairs is appended to both files and flushed to disk before the next. A writer killed
between or during the two appends leaves one file longer, or a last line without its line break:
the next `ParallelOutput` cuts both back to the complete lines they have in common, and the caller
goes on after those.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from minitx.errors import UserError


class ParallelOutput:
    def __init__(self, prefix: Path, src: str, tgt: str):
        self.src_file = prefix.with_name(f"{prefix.name}.{src}")
        self.tgt_file = prefix.with_name(f"{prefix.name}.{tgt}")
        if not prefix.parent.is_dir():
            raise UserError(f"{prefix.parent} is not a directory; create it first")
        # Pairs already written, by an earlier run that stopped.
        self.done = min(_complete_lines(self.src_file), _complete_lines(self.tgt_file))
        for path in (self.src_file, self.tgt_file):
            _cut_to_lines(path, self.done)

    def append(self, sources: Sequence[str], targets: Sequence[str]) -> None:
        for path, lines in ((self.src_file, sources), (self.tgt_file, targets)):
            with path.open("a", encoding="utf-8", newline="\n") as handle:
                # A line break inside a sentence would shift every later pair.
                handle.writelines(" ".join(line.splitlines()) + "\n" for line in lines)
                handle.flush()
                os.fsync(handle.fileno())
        self.done += len(sources)


def _complete_lines(path: Path) -> int:
    """Lines ending in a line break (a file that does not exist has none)."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def _cut_to_lines(path: Path, keep: int) -> None:
    """Keep the first `keep` complete lines of `path` (creating it if it does not exist)."""
    with path.open("ab+") as handle:
        handle.seek(0)
        position = sum(len(handle.readline()) for _ in range(keep))
        handle.truncate(position)
