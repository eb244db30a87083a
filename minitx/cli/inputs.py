"""Input lines for the commands that read text: from arguments, a file, or stdin as it arrives."""

from __future__ import annotations

import io
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from minitx.errors import UserError


def for_non_empty(lines: list[str], function: Callable[[list[str]], list]) -> list:
    """`function` applied to the non-empty lines in one call; None in place of each empty line."""
    non_empty = [i for i, line in enumerate(lines) if line.strip()]
    results: list = [None] * len(lines)
    if non_empty:
        for i, result in zip(non_empty, function([lines[i] for i in non_empty]), strict=True):
            results[i] = result
    return results


def print_lines(lines) -> None:
    for line in lines:
        typer.echo(line)
    sys.stdout.flush()  # a pipe would otherwise hold the batch back


def input_batches(
    texts: list[str] | None, input_file: Path | None, batch_size: int
) -> Iterator[list[str]]:
    """The input lines, from the arguments, from --input, or else from stdin, in batches."""
    if texts and input_file:
        raise UserError("give texts as arguments or with --input, not both")
    if texts:
        yield list(texts)
    elif input_file is not None:
        if not input_file.is_file():
            raise UserError(f"input file not found: {input_file}")
        with input_file.open("rb") as handle:
            yield from _line_batches(handle, batch_size, str(input_file))
    else:
        yield from _line_batches(sys.stdin.buffer, batch_size, "stdin")


def _line_batches(stream, batch_size: int, where: str) -> Iterator[list[str]]:
    """Lines of a byte stream, in batches of every line that has arrived (at most `batch_size`):
    a batch never waits for more input once it holds a line, so `tail -f … |` is answered as it
    writes, and a file is read in full batches."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stream
        fd = None
    pending, lines, number = b"", [], 0
    while True:
        waiting = lines and fd is not None and not select.select([fd], [], [], 0)[0]
        if waiting or len(lines) >= batch_size:
            yield lines[:batch_size]
            lines = lines[batch_size:]
            continue
        chunk = os.read(fd, 1 << 16) if fd is not None else stream.read()
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        for raw in complete:
            number += 1
            lines.append(_decode_line(raw, where, number))
    if pending:
        lines.append(_decode_line(pending, where, number + 1))
    while lines:
        yield lines[:batch_size]
        lines = lines[batch_size:]


def _decode_line(raw: bytes, where: str, number: int) -> str:
    try:
        # Only newlines separate sentences: str.splitlines would also split on form feeds and
        # U+2028.
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{where} line {number} is not UTF-8 text (bad byte at position {exc.start})"
        ) from None
