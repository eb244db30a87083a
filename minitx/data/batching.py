"""Token ids → padded tensors, grouped into token-budget batches of similar length.

Translation pairs become `Batch`es (source, target in, target out); labelled texts become
`LabelBatch`es (token ids and class indices).

Sorting pairs by length (with a seeded random tie-break) before cutting batches keeps padding to a
few percent, as fairseq does; shuffling the batch order each epoch keeps the gradient noise.
"""

from __future__ import annotations

import dataclasses
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
    width = np.max(np.stack(widths), axis=0)
    batches, start = [], 0
    while start < n:
        end, longest = start, 0
        while end < n:
            candidate = max(longest, width[order[end]])
            if (end - start + 1) * candidate > batch_tokens and end > start:
                break
            longest, end = candidate, end + 1
        batches.append(order[start:end])
        start = end
    if seed is not None:
        permutation = np.random.default_rng(seed + 1).permutation(len(batches))
        batches = [batches[i] for i in permutation]
    return batches


def padding_fraction(batches: Sequence[Batch | LabelBatch], pad_id: int) -> float:
    """Share of the source positions of `batches` that are padding."""
    real = sum(int((batch.src != pad_id).sum()) for batch in batches)
    return 1.0 - real / max(sum(batch.src.numel() for batch in batches), 1)


class _Encoded:
    """What encoded splits share: a subset, and token-budget batches of similar length."""

    def widths(self) -> list[np.ndarray]:
        """Each example's padded length per side, the side that sorts first first."""
        raise NotImplementedError

    def batch(self, indices: list[int], codec: TextCodec) -> Batch | LabelBatch:
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


@dataclass
class EncodedPairs(_Encoded):
    """A split's text and token ids, ready to be cut into batches."""

    src_text: list[str]
    tgt_text: list[str]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]

    def __post_init__(self) -> None:
        self.src_lengths = np.array([len(s) for s in self.src_ids], dtype=np.int64)
        self.tgt_lengths = np.array([len(t) for t in self.tgt_ids], dtype=np.int64)

    def widths(self) -> list[np.ndarray]:
        # +1 for the EOS/BOS each side gets; target first, as the loss is counted on it.
        return [self.tgt_lengths + 1, self.src_lengths + 1]

    def batch(self, indices: list[int], codec: TextCodec) -> Batch:
        return make_batch(
            [self.src_ids[i] for i in indices],
            [self.tgt_ids[i] for i in indices],
            codec.pad_id,
            codec.bos_id,
            codec.eos_id,
        )


def encode_pairs(dataset, src_codec, tgt_codec, max_len: int | None = None) -> EncodedPairs:
    """Tokenize a `src`/`tgt` Dataset (the tokenizer encodes a whole column in one batched call);
    optionally drop the pairs with more than `max_len` tokens on a side."""
    src_text, tgt_text = column(dataset, "src"), column(dataset, "tgt")
    src_ids, tgt_ids = src_codec.encode(src_text), tgt_codec.encode(tgt_text)
    if max_len is not None:
        keep = [
            i
            for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
            if len(s) <= max_len and len(t) <= max_len
        ]
        if not keep:
            raise UserError(
                f"every training pair has more than data.max_len ({max_len}) tokens on a side; "
                "raise data.max_len"
            )
        if len(keep) < len(src_ids):
            src_text, tgt_text = [src_text[i] for i in keep], [tgt_text[i] for i in keep]
            src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    return EncodedPairs(src_text, tgt_text, src_ids, tgt_ids)


@dataclass
class EncodedTexts(_Encoded):
    """A split's labelled texts as model inputs (`<s> text </s>`, plus `pair </s>` for pairs)."""

    ids: list[list[int]]
    labels: list[int]  # indices into the run's label names

    def __post_init__(self) -> None:
        self.lengths = np.array([len(ids) for ids in self.ids], dtype=np.int64)

    def widths(self) -> list[np.ndarray]:
        return [self.lengths]

    def batch(self, indices: list[int], codec: TextCodec) -> LabelBatch:
        return LabelBatch(
            pad([self.ids[i] for i in indices], codec.pad_id),
            torch.tensor([self.labels[i] for i in indices], dtype=torch.long),
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


def encode_labelled(
    dataset, codec: TextCodec, names: list[str], split: str, max_len: int | None = None
) -> tuple[EncodedTexts, dict]:
    """Tokenize a `text`/`label` Dataset; rows with a missing or unknown label are counted and skipped.

    Returns the encoded split and the counts of skipped rows by reason.
    """
    index = {name: i for i, name in enumerate(names)}
    labels = row_labels(dataset)
    texts = column(dataset, "text")
    pairs = column(dataset, "text_pair") if "text_pair" in dataset.column_names else None
    ids = encode_texts(codec, texts, pairs)
    n_special = 2 if pairs is None else 3
    skipped = {"missing label": 0, "unknown label": 0, "too many tokens": 0}
    keep = []
    for row, (label, row_ids) in enumerate(zip(labels, ids, strict=True)):
        if label is None:
            skipped["missing label"] += 1
        elif label not in index:
            skipped["unknown label"] += 1
        elif max_len is not None and len(row_ids) - n_special > max_len:
            skipped["too many tokens"] += 1
        else:
            keep.append(row)
    skipped = {reason: count for reason, count in skipped.items() if count}
    if skipped:
        unknown = sorted({label for label in labels if label is not None and label not in index})
        detail = f"; unknown labels {unknown[:5]}, known {names}" if unknown else ""
        reasons = ", ".join(f"{count} with {reason}" for reason, count in skipped.items())
        log.info(f"{split}: skipped {sum(skipped.values())} row(s): {reasons}{detail}")
    if not keep:
        raise UserError(
            f"split '{split}' has no usable rows (a known label, at most data.max_len tokens); "
            f"check data.label, data.max_len and data.rename_columns"
        )
    encoded = EncodedTexts([ids[r] for r in keep], [index[labels[r]] for r in keep])
    return encoded, skipped
