"""Token ids on disk: a training split encoded once, a chunk at a time, into flat int32 arrays
with int64 offsets (fairseq's binarized datasets, as numpy files), then memory-mapped.

`RUN_DIR/cache/<key>/` holds `src.bin` + `src.offsets.npy` and `tgt.*` (translation) or `text.*`
+ `labels.npy` (classification), and `rows.json`, written last. The key hashes the tokenizer, the
data config and the corpus fingerprint: a changed corpus or tokenizer is encoded anew, nothing
stale is read. A store is built under a temporary name and renamed whole, so a crash leaves no
half-written store; every rank of a torchrun group maps the one rank 0 wrote, and the page cache
holds its ids once for all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tokenizers

from minitx.config import DataConfig
from minitx.data.batching import (
    EncodedTexts,
    RaggedIds,
    SkippedRows,
    TokenPairs,
    encode_pair_rows,
    labelled_rows,
    no_pairs_left,
)
from minitx.data.corpus import Corpus
from minitx.data.tokenizer import Codecs
from minitx.progress import bar

log = logging.getLogger(__name__)

# Bump when the layout or the reading of the text (line splitting, filters) changes: old stores
# are then ignored, not misread.
FORMAT = 1
DONE = "rows.json"


def store_directory(
    cache_dir: Path, codecs: Codecs, data: DataConfig, corpus: Corpus, labels: list[str] | None
) -> Path:
    """Where the split `corpus` encoded by `codecs` is kept."""
    digest = hashlib.sha256(f"{FORMAT} {tokenizers.__version__}".encode())
    for codec in {id(c): c for c in (codecs.src, codecs.tgt)}.values():
        digest.update(codec.tokenizer.to_str().encode())
    described = {"data": dataclasses.asdict(data), "labels": labels, "corpus": corpus.fingerprint}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return cache_dir / f"train-{digest.hexdigest()[:24]}"


def is_stored(directory: Path) -> bool:
    """Finished, and every ids file as long as its offsets say (a truncated file is rebuilt)."""
    if not (directory / DONE).is_file():
        return False
    try:
        for offsets in directory.glob("*.offsets.npy"):
            ids = offsets.with_name(offsets.name.replace(".offsets.npy", ".bin"))
            if ids.stat().st_size != 4 * int(np.load(offsets, mmap_mode="r")[-1]):
                return False
    except (OSError, ValueError, IndexError):
        return False
    return True


class _RaggedWriter:
    """Appends rows of token ids to `NAME.bin`; the offsets are written at the end."""

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name
        self.file = (directory / f"{name}.bin").open("wb")
        self.ends: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self.rows = self.tokens = 0

    def append(self, rows: list[list[int]]) -> None:
        chunk = RaggedIds.from_rows(rows)  # may be empty: every row of a chunk filtered out
        self.file.write(chunk.ids.tobytes())
        self.ends.append(chunk.offsets[1:] + self.tokens)
        self.rows, self.tokens = self.rows + len(rows), self.tokens + len(chunk.ids)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # on disk before the store is renamed into place
        self.file.close()
        np.save(self.directory / f"{self.name}.offsets.npy", np.concatenate(self.ends))


def _read_ragged(directory: Path, name: str) -> RaggedIds:
    offsets = np.load(directory / f"{name}.offsets.npy")
    if offsets[-1] == 0:  # np.memmap refuses an empty file
        return RaggedIds(np.zeros(0, dtype=np.int32), offsets)
    return RaggedIds(np.memmap(directory / f"{name}.bin", dtype=np.int32, mode="r"), offsets)


def _build(directory: Path, split: str, corpus: Corpus, write: Callable, unit: str) -> None:
    """Run `write(tmp, chunks)` into a temporary directory, then rename it to `directory`;
    `unit` names the rows (pairs, texts) for the progress bar and the log."""
    tmp = directory.with_name(f"{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        with bar(total=corpus.count_rows(), desc=f"encode {split}", unit=f" {unit}") as progress:
            rows, tokens = write(tmp, _counted(corpus.chunks(), progress))
        (tmp / DONE).write_text(json.dumps({"rows": rows, "tokens": tokens}) + "\n")
        if directory.exists() and not is_stored(directory):  # damaged: never renamed whole
            shutil.rmtree(directory)
        with contextlib.suppress(OSError):  # another process finished first: keep theirs
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # A run trains on one split with one tokenizer: other stores are stale (a corpus that changed
    # since), and each may be gigabytes. Only the process training the run (it holds its lock)
    # writes here, so none of them is in use.
    for stale in directory.parent.iterdir():  # with the .npz caches of minitx before the store
        if stale != directory and (stale.name.startswith("train-") or stale.suffix == ".npz"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    log.info(
        f"{split}: encoded {rows:,} {unit} ({tokens:,} tokens) in {seconds:.0f} s "
        f"({rows / max(seconds, 1e-9):,.0f} {unit}/s) into {directory}"
    )


def _counted(chunks, progress):
    for chunk in chunks:  # a Dataset, or a dict of column lists
        yield chunk
        progress.update(len(next(iter(chunk.values()))) if isinstance(chunk, dict) else len(chunk))


def store_pairs(
    directory: Path, corpus: Corpus, codecs: Codecs, max_len: int | None, split: str
) -> None:
    """Encode a translation corpus into `directory`, without pairs over `max_len` tokens."""

    def write(tmp: Path, chunks) -> tuple[int, int]:
        src, tgt = _RaggedWriter(tmp, "src"), _RaggedWriter(tmp, "tgt")
        for chunk in chunks:
            src_ids, tgt_ids, _ = encode_pair_rows(chunk, codecs.src, codecs.tgt, max_len)
            src.append(src_ids)
            tgt.append(tgt_ids)
        src.close()
        tgt.close()
        if not src.rows:
            raise no_pairs_left(max_len)
        return src.rows, src.tokens + tgt.tokens

    _build(directory, split, corpus, write, "pairs")


def store_labelled(
    directory: Path,
    corpus: Corpus,
    codecs: Codecs,
    names: list[str],
    max_len: int | None,
    split: str,
) -> None:
    """Encode a classification corpus into `directory`, skipping (and reporting) unusable rows."""

    def write(tmp: Path, chunks) -> tuple[int, int]:
        text, labels, skipped = _RaggedWriter(tmp, "text"), [], SkippedRows()
        for chunk in chunks:
            ids, chunk_labels, chunk_skipped = labelled_rows(chunk, codecs.src, names, max_len)
            text.append(ids)
            labels += chunk_labels
            skipped.add(chunk_skipped)
        text.close()
        skipped.report(split, names, kept=len(labels))
        np.save(tmp / "labels.npy", np.array(labels, dtype=np.int64))
        return len(labels), text.tokens

    _build(directory, split, corpus, write, "texts")


def read_pairs(directory: Path) -> TokenPairs:
    return TokenPairs(_read_ragged(directory, "src"), _read_ragged(directory, "tgt"))


def read_labelled(directory: Path) -> EncodedTexts:
    return EncodedTexts(_read_ragged(directory, "text"), np.load(directory / "labels.npy"))
