"""A training split read a chunk at a time, with a fingerprint of its content: corpora too large to
hold as Python objects are tokenized as a stream, and their token ids cached under that
fingerprint (data/token_store.py).

Parallel text files are read line by line and fingerprinted by their path, size and modification
time (as `datasets` does for local files); every other source is a `datasets.Dataset` (Arrow,
memory-mapped when it comes from files or the Hub), read a slice at a time and fingerprinted by
`datasets` itself.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minitx.data.sources import check_parallel, column, text_lines
from minitx.errors import UserError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000  # rows tokenized per call: big enough for the tokenizer's threads


@dataclass
class Corpus:
    """One split: a fingerprint of its content, its row count (counted when asked: it may read
    every file), and its rows a chunk at a time (a Dataset, or a dict of column lists)."""

    fingerprint: str
    count_rows: Callable[[], int]
    chunks: Callable[[], Iterator]
    dataset: datasets.Dataset | None = None  # the whole split, when it is a Dataset


def dataset_corpus(dataset: datasets.Dataset) -> Corpus:
    def chunks() -> Iterator[datasets.Dataset]:
        for start in range(0, len(dataset), CHUNK_ROWS):  # contiguous: no copy
            yield dataset.select(range(start, min(start + CHUNK_ROWS, len(dataset))))

    return Corpus(dataset._fingerprint, lambda: len(dataset), chunks, dataset)


def text_corpus(src_file: Path, tgt_file: Path, split: str) -> Corpus:
    """Two aligned text files as `src`/`tgt` chunks; pairs with an empty side are dropped and
    counted, as for every other source."""
    stats = [
        (str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in (src_file, tgt_file)
    ]
    fingerprint = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:32]

    reported = False  # the skipped pairs are said once, not on every pass

    def chunks() -> Iterator[dict[str, list[str]]]:
        nonlocal reported
        src_lines, tgt_lines = text_lines(src_file), text_lines(tgt_file)
        kept = dropped = 0
        while src := list(itertools.islice(src_lines, CHUNK_ROWS)):
            tgt = list(itertools.islice(tgt_lines, CHUNK_ROWS))
            if len(tgt) < len(src):
                check_parallel(src_file, tgt_file)  # raises, naming both line counts
            keep = [
                i for i, (s, t) in enumerate(zip(src, tgt, strict=True)) if s.strip() and t.strip()
            ]
            kept, dropped = kept + len(keep), dropped + len(src) - len(keep)
            yield {"src": [src[i] for i in keep], "tgt": [tgt[i] for i in keep]}
        if next(tgt_lines, None) is not None:
            check_parallel(src_file, tgt_file)
        if not kept:
            raise UserError(f"split '{split}' has no non-empty sentence pairs")
        if dropped and not reported:
            log.info(f"{split}: skipped {dropped} sentence pairs with an empty text")
        reported = True

    return Corpus(fingerprint, lambda: check_parallel(src_file, tgt_file), chunks)


@dataclass(frozen=True)
class WeightedPart:
    """One corpus of several: each of its rows is read `weight` times per pass, and `tag` (a special
    token of the vocabulary) is put before the text of its `tagged` column."""

    corpus: Corpus
    weight: int = 1
    tag: str | None = None


def combined_corpus(parts: list[WeightedPart], columns: list[str], tagged: str) -> Corpus:
    """Several corpora as one, in order, each repeated by its weight (fairseq's upsampling, Marian's
    and OpenNMT-py's corpus weights at the granularity of whole passes); rows keep only `columns`.
    The token store holds the repeated rows, so a batch of the shuffled whole mixes the corpora in
    proportion to their weights."""
    described = [(p.corpus.fingerprint, p.weight, p.tag) for p in parts]
    fingerprint = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:32]

    def chunks() -> Iterator:
        for part in parts:
            for _ in range(part.weight):
                for chunk in part.corpus.chunks():
                    yield _tagged(chunk, columns, tagged, part.tag)

    def count_rows() -> int:
        return sum(p.weight * p.corpus.count_rows() for p in parts)

    return Corpus(fingerprint, count_rows, chunks, _every_row(parts))


def _tagged(chunk, columns: list[str], tagged: str, tag: str | None):
    """A chunk cut down to `columns`, with `tag` before each text of `tagged`; a Dataset stays
    one, keeping its features (class labels)."""
    if isinstance(chunk, dict):
        rows = {name: chunk[name] for name in columns}
        if tag:
            rows[tagged] = [f"{tag} {text}" for text in rows[tagged]]
        return rows
    chunk = chunk.select_columns(columns)
    if not tag:
        return chunk
    return chunk.map(
        lambda rows: {tagged: [f"{tag} {text}" for text in rows[tagged]]},
        batched=True,
        keep_in_memory=True,  # a chunk is read once; no cache file beside the data
        desc=None,
    )


def _every_row(parts: list[WeightedPart]) -> datasets.Dataset | None:
    """Every row once, untagged, when each part is a Dataset (what label names are read from)."""
    if not all(p.corpus.dataset is not None for p in parts):
        return None
    import datasets

    try:
        return datasets.concatenate_datasets([p.corpus.dataset for p in parts])
    except ValueError as exc:  # columns of different types, e.g. string labels and class labels
        raise UserError(
            f"data.train_corpora do not have the same columns and types: {exc}"
        ) from None


def sample_rows(corpus: Corpus, columns: list[str], limit: int, seed: int) -> dict[str, list]:
    """At most `limit` rows of `columns`, drawn uniformly at random (seeded) in one pass, kept in
    corpus order; every row when there are no more. Each row gets a random key and the `limit`
    smallest keys win (reservoir sampling, the buffer cut back whenever it doubles)."""
    rng = np.random.default_rng(seed)
    kept: dict[str, list] = {name: [] for name in columns}
    keys = np.empty(0)
    for chunk in corpus.chunks():
        for name in columns:
            kept[name] += column(chunk, name)
        keys = np.concatenate([keys, rng.random(len(kept[columns[0]]) - len(keys))])
        if len(keys) >= 2 * limit:
            keys, kept = _smallest(keys, kept, limit)
    if len(keys) > limit:
        keys, kept = _smallest(keys, kept, limit)
    return kept


def _smallest(keys: np.ndarray, kept: dict[str, list], limit: int):
    """The `limit` rows with the smallest keys, in their original order."""
    chosen = np.sort(np.argpartition(keys, limit)[:limit])
    rows = chosen.tolist()
    return keys[chosen], {name: [values[i] for i in rows] for name, values in kept.items()}
