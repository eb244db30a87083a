"""Token ids → padded tensors, grouped into token-budget batches of similar length.

Translation pairs become `Batch`es (source, target in, target out); labelled texts become
`LabelBatch`es (token ids and class indices).

Sorting pairs by length (with a seeded random tie-break) before cutting batches keeps padding to a
few percent, as fairseq does; shuffling the batch order each epoch keeps the gradient noise.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from minitx.data.labels import row_labels
from minitx.data.sources import column
from minitx.data.tokenizer import TextCodec
from minitx.errors import UserError

log = logging.getLogger(__name__)

IGNORED = -100  # target value that adds nothing to the loss (torch's default ignore_index)


T = TypeVar("T")


class _Tensors:
    """Moves every tensor field of a batch dataclass at once."""

    def to(self: T, device: torch.device) -> T:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self: T) -> T:
        """Page-locked copies, so that copies to the GPU run asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self: T, function) -> T:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {k: function(v) for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **moved)


@dataclass
class Batch(_Tensors):
    """A padded batch. `tgt_in` starts with BOS, `tgt_out` ends with EOS; both have the same shape."""

    src: torch.Tensor  # (B, S)
    tgt_in: torch.Tensor  # (B, T)
    tgt_out: torch.Tensor  # (B, T), padded with IGNORED
    n_targets: int  # target tokens: the terms of the loss


@dataclass
class LabelBatch(_Tensors):
    """Padded texts, each `<s> text </s>` (`<s> text </s> pair </s>` for pairs), and their classes."""

    src: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B,)

    @property
    def n_targets(self) -> int:  # examples: the terms of the loss
        return len(self.labels)


def pad(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def make_batch(
    src_ids: list[list[int]], tgt_ids: list[list[int]], pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    """Source gets EOS appended; the target becomes BOS + y (input) and y + EOS (output), the
    output padded with IGNORED so that the loss skips padding without knowing the pad id."""
    src = pad([s + [eos_id] for s in src_ids], pad_id)
    tgt_in = pad([[bos_id] + t for t in tgt_ids], pad_id)
    tgt_out = pad([t + [eos_id] for t in tgt_ids], IGNORED)
    return Batch(src, tgt_in, tgt_out, sum(len(t) + 1 for t in tgt_ids))


def token_budget_batches(
    widths: list[np.ndarray], batch_tokens: int, seed: int | None
) -> list[np.ndarray]:
    """Group example indices into batches whose padded size (rows × widest) fits `batch_tokens`.

    `widths` holds each example's padded length per side, the first sorting first (the target for
    translation). With a seed, ties in length are broken at random and the batch order is shuffled
    (training); without one the order is deterministic (evaluation).
    """
    n = len(widths[0])
    tie_break = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    order = np.lexsort((tie_break, *reversed(widths)))  # lexsort's last key sorts first
    width = np.max(np.stack(widths), axis=0)[order]
    batches, start = [], 0
    while start < n:
        # A batch cannot hold more rows than fit at its first row's width; within that window the
        # padded size of the first k rows (k × running maximum) only grows, so one search cuts it.
        window = width[start : start + batch_tokens // max(int(width[start]), 1) + 1]
        sizes = np.maximum.accumulate(window) * np.arange(1, len(window) + 1)
        end = start + max(int(np.searchsorted(sizes, batch_tokens, side="right")), 1)
        batches.append(order[start:end])
        start = end
    if seed is not None:
        permutation = np.random.default_rng(seed + 1).permutation(len(batches))
        batches = [batches[i] for i in permutation]
    return batches


class RaggedIds:
    """Token-id sequences of different lengths in one flat array: row i is
    `ids[offsets[i]:offsets[i + 1]]`. The arrays may be memory-mapped files (data/token_store.py):
    millions of rows then cost the operating system's page cache, not Python objects."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        self.ids, self.offsets = ids, offsets
        self.lengths = np.diff(offsets)

    @classmethod
    def from_rows(cls, rows: list[list[int]]) -> RaggedIds:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        ids = np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(lengths.sum()))
        return cls(ids, np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, rows: slice) -> RaggedIds:
        """The first rows (`[:n]`), sharing the arrays."""
        if rows.start or rows.step:
            raise ValueError("RaggedIds takes the first rows only: [:n]")
        offsets = self.offsets[: len(self.lengths[rows]) + 1]
        return RaggedIds(self.ids[: offsets[-1]], offsets)

    def rows(self, indices) -> list[list[int]]:
        ids, offsets = self.ids, self.offsets
        return [ids[offsets[i] : offsets[i + 1]].tolist() for i in indices]


class _Encoded:
    """What encoded splits share: a subset, and token-budget batches of similar length."""

    def widths(self) -> list[np.ndarray]:
        """Each example's padded length per side, the side that sorts first first."""
        raise NotImplementedError

    def batch(self, indices: list[int], codec: TextCodec) -> Batch | LabelBatch:
        raise NotImplementedError

    def n_targets(self, indices: np.ndarray) -> int:
        """The loss terms of the examples at `indices`, known before their batch is made."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.widths()[0])

    def subset(self: T, n: int) -> T:
        """The first `n` examples."""
        fields = dataclasses.fields(self)
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[:n] for f in fields})

    def batch_groups(self, batch_tokens: int, seed: int | None) -> list[np.ndarray]:
        return token_budget_batches(self.widths(), batch_tokens, seed)

    def batches(self, batch_tokens: int, seed: int | None, codec: TextCodec) -> list:
        groups = self.batch_groups(batch_tokens, seed)
        return [self.batch(group.tolist(), codec) for group in groups]

    def padding_fraction(self, groups: Sequence[np.ndarray]) -> float:
        """Share of the padded source (text) positions of batches `groups` that are padding."""
        width = self.widths()[-1]
        real = sum(int(width[group].sum()) for group in groups)
        padded = sum(len(group) * int(width[group].max()) for group in groups)
        return 1.0 - real / max(padded, 1)


@dataclass
class TokenPairs(_Encoded):
    """Source and target token ids (without EOS/BOS), ready to be cut into batches."""

    src: RaggedIds
    tgt: RaggedIds

    def widths(self) -> list[np.ndarray]:
        # +1 for the EOS/BOS each side gets; target first, as the loss is counted on it.
        return [self.tgt.lengths + 1, self.src.lengths + 1]

    def n_targets(self, indices: np.ndarray) -> int:
        return int((self.tgt.lengths[indices] + 1).sum())

    def batch(self, indices: list[int], codec: TextCodec) -> Batch:
        return make_batch(
            self.src.rows(indices), self.tgt.rows(indices), codec.pad_id, codec.bos_id, codec.eos_id
        )


@dataclass
class EncodedPairs(TokenPairs):
    """A split's token ids with its text (references for BLEU)."""

    src_text: list[str]
    tgt_text: list[str]

    @property
    def src_ids(self) -> list[list[int]]:
        return self.src.rows(range(len(self.src)))

    @property
    def tgt_ids(self) -> list[list[int]]:
        return self.tgt.rows(range(len(self.tgt)))


def encode_pair_rows(
    columns, src_codec: TextCodec, tgt_codec: TextCodec, max_len: int | None
) -> tuple[list[list[int]], list[list[int]], list[int] | range]:
    """The token ids of the `src` and `tgt` columns of `columns` (a Dataset or a dict of lists;
    the tokenizer encodes a whole column in one batched call), without the pairs that have more
    than `max_len` tokens on a side; and the indices of the pairs kept."""
    src_ids, tgt_ids = (
        src_codec.encode(column(columns, "src")),
        tgt_codec.encode(column(columns, "tgt")),
    )
    if max_len is None:
        return src_ids, tgt_ids, range(len(src_ids))
    keep = [
        i
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
        if len(s) <= max_len and len(t) <= max_len
    ]
    return [src_ids[i] for i in keep], [tgt_ids[i] for i in keep], keep


def no_pairs_left(max_len: int | None) -> UserError:
    return UserError(
        f"every training pair has more than data.max_len ({max_len}) tokens on a side; "
        "raise data.max_len"
    )


def encode_pairs(dataset, src_codec, tgt_codec, max_len: int | None = None) -> EncodedPairs:
    """Tokenize a `src`/`tgt` Dataset, keeping its text; optionally drop the pairs with more than
    `max_len` tokens on a side."""
    src_ids, tgt_ids, keep = encode_pair_rows(dataset, src_codec, tgt_codec, max_len)
    if not keep:
        raise no_pairs_left(max_len)
    src_text, tgt_text = column(dataset, "src"), column(dataset, "tgt")
    if len(keep) < len(src_text):
        src_text, tgt_text = [src_text[i] for i in keep], [tgt_text[i] for i in keep]
    return EncodedPairs(
        RaggedIds.from_rows(src_ids), RaggedIds.from_rows(tgt_ids), src_text, tgt_text
    )


@dataclass
class EncodedTexts(_Encoded):
    """A split's labelled texts as model inputs (`<s> text </s>`, plus `pair </s>` for pairs)."""

    ids: RaggedIds
    labels: np.ndarray  # indices into the run's label names

    def widths(self) -> list[np.ndarray]:
        return [self.ids.lengths]

    def n_targets(self, indices: np.ndarray) -> int:
        return len(indices)

    def batch(self, indices: list[int], codec: TextCodec) -> LabelBatch:
        return LabelBatch(
            pad(self.ids.rows(indices), codec.pad_id),
            torch.as_tensor(self.labels[indices], dtype=torch.long),
        )


def encode_texts(
    codec: TextCodec, texts: list[str], pairs: list[str] | None = None
) -> list[list[int]]:
    """`<s> text </s>` or `<s> text </s> pair </s>`: the <s> doubles as the [CLS] token."""
    first = codec.encode(texts)
    second = codec.encode(pairs) if pairs is not None else [None] * len(first)
    return [
        [codec.bos_id, *a, codec.eos_id] + ([*b, codec.eos_id] if b is not None else [])
        for a, b in zip(first, second, strict=True)
    ]


SKIP_REASONS = ("missing label", "unknown label", "too many tokens")


@dataclass
class SkippedRows:
    """Labelled rows left out of a split: counts by reason, and the unknown labels met."""

    counts: collections.Counter = dataclasses.field(  # reasons in the order the log gives them
        default_factory=lambda: collections.Counter(dict.fromkeys(SKIP_REASONS, 0))
    )
    unknown: set = dataclasses.field(default_factory=set)

    def add(self, other: SkippedRows) -> None:
        self.counts.update(other.counts)
        self.unknown |= other.unknown

    def report(self, split: str, names: list[str], kept: int) -> dict:
        """Say what was skipped; a split with nothing left is an error. Returns the counts."""
        counts = {reason: n for reason, n in self.counts.items() if n}
        if counts:
            unknown = sorted(self.unknown)
            detail = f"; unknown labels {unknown[:5]}, known {names}" if unknown else ""
            reasons = ", ".join(f"{n} with {reason}" for reason, n in counts.items())
            log.info(f"{split}: skipped {sum(counts.values())} row(s): {reasons}{detail}")
        if not kept:
            raise UserError(
                f"split '{split}' has no usable rows (a known label, at most data.max_len tokens); "
                f"check data.label, data.max_len and data.rename_columns"
            )
        return counts


def labelled_rows(
    dataset, codec: TextCodec, names: list[str], max_len: int | None
) -> tuple[list[list[int]], list[int], SkippedRows]:
    """Model inputs and class indices of a `text`/`label` Dataset's usable rows; rows with a
    missing or unknown label, or more than `max_len` tokens, are counted and skipped."""
    index = {name: i for i, name in enumerate(names)}
    labels = row_labels(dataset)
    texts = column(dataset, "text")
    pairs = column(dataset, "text_pair") if "text_pair" in dataset.column_names else None
    ids = encode_texts(codec, texts, pairs)
    n_special = 2 if pairs is None else 3
    skipped, kept_ids, kept_labels = SkippedRows(), [], []
    for label, row_ids in zip(labels, ids, strict=True):
        if label is None:
            skipped.counts["missing label"] += 1
        elif label not in index:
            skipped.counts["unknown label"] += 1
            skipped.unknown.add(label)
        elif max_len is not None and len(row_ids) - n_special > max_len:
            skipped.counts["too many tokens"] += 1
        else:
            kept_ids.append(row_ids)
            kept_labels.append(index[label])
    return kept_ids, kept_labels, skipped


def encode_labelled(
    dataset, codec: TextCodec, names: list[str], split: str, max_len: int | None = None
) -> tuple[EncodedTexts, dict]:
    """Tokenize a `text`/`label` Dataset (see `labelled_rows`); returns the encoded split and the
    counts of skipped rows by reason."""
    ids, labels, skipped = labelled_rows(dataset, codec, names, max_len)
    counts = skipped.report(split, names, kept=len(ids))
    return EncodedTexts(RaggedIds.from_rows(ids), np.array(labels, dtype=np.int64)), counts
