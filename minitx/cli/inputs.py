"""Input lines for the commands that read text: from arguments, a file, or stdin as it arrives."""

from __future__ import annotations

import io
import json
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from minitx.errors import UserError
from minitx.inference.steering import Steering
from minitx.run_dir import RunDir

STEERING_FIELDS = ("target_prefix", "constraints", "banned")


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


def leading_runs(first: Path, texts: list[str], more: list[Path]) -> tuple[list[Path], list[str]]:
    """The runs to load (the first, the texts' leading arguments that are run directories, and
    `more`) and the texts left: `minitx translate RUN1 RUN2 TEXT` is an ensemble of two."""
    runs = [first]
    while texts and RunDir(texts[0]).is_run():
        runs.append(Path(texts.pop(0)))
    return runs + more, texts


def steered_line(line: str, given: Steering, number: int) -> tuple[str, Steering]:
    """A jsonl input line → its text and its steering (its own fields, else `given`'s)."""
    if not line.strip():
        return "", given
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(
            f"input line {number} is not JSON ({error.msg}); see --input-format"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UserError(f'input line {number} needs a "text" string, as {{"text": "..."}}')
    return record["text"], record_steering(record, given, f"input line {number}")


def record_steering(record: dict, given: Steering, where: str) -> Steering:
    """The steering fields of a parsed jsonl record (its own, else `given`'s), checked."""
    unknown = set(record) - {"text", *STEERING_FIELDS}
    if unknown:
        raise UserError(
            f"{where}: unknown field {sorted(unknown)[0]!r}; the fields are text, "
            + ", ".join(STEERING_FIELDS)
        )
    prefix = record.get("target_prefix", given.target_prefix)
    phrases = {
        field: record.get(field, list(getattr(given, field))) for field in STEERING_FIELDS[1:]
    }
    if not isinstance(prefix, str) or not all(
        isinstance(value, list) and all(isinstance(p, str) for p in value)
        for value in phrases.values()
    ):
        raise UserError(
            f"{where}: target_prefix is a string, constraints and banned lists of strings"
        )
    return Steering(prefix, tuple(phrases["constraints"]), tuple(phrases["banned"]))


def steering_file(path: Path) -> list[Steering]:
    """A jsonl file of steering, one object per line ({target_prefix, constraints, banned})."""
    if not path.is_file():
        raise UserError(f"steering file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f'{path} line {number}: an object, as {{"constraints": [...]}}')
        found.append(record_steering(record, Steering(), f"input line {number}"))
    return found
