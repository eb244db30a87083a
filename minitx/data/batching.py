"""Token ids → padded tensors, grouped into token-budget batches of similar length.

Sorting pairs by length (with a seeded random tie-break) before cutting batches keeps padding to a
few percent, as fairseq does; shuffling the batch order each epoch keeps the gradient noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    """A padded batch. `tgt_in` starts with BOS, `tgt_out` ends with EOS; both have the same shape."""

    src: torch.Tensor  # (B, S)
    tgt_in: torch.Tensor  # (B, T)
    tgt_out: torch.Tensor  # (B, T)
    n_tgt_tokens: int

    def to(self, device: torch.device) -> Batch:
        src, tgt_in, tgt_out = (
            t.to(device, non_blocking=True) for t in (self.src, self.tgt_in, self.tgt_out)
        )
        return Batch(src, tgt_in, tgt_out, self.n_tgt_tokens)


def pad(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def make_batch(
    src_ids: list[list[int]], tgt_ids: list[list[int]], pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    """Source gets EOS appended; the target becomes BOS + y (input) and y + EOS (output)."""
    src = pad([s + [eos_id] for s in src_ids], pad_id)
    tgt_in = pad([[bos_id] + t for t in tgt_ids], pad_id)
    tgt_out = pad([t + [eos_id] for t in tgt_ids], pad_id)
    return Batch(src, tgt_in, tgt_out, sum(len(t) + 1 for t in tgt_ids))


def token_budget_batches(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int, seed: int | None
) -> list[np.ndarray]:
    """Group pair indices into batches whose padded size (rows × longest side) fits `batch_tokens`.

    With a seed, ties in length are broken at random and the batch order is shuffled (training);
    without one the order is deterministic (evaluation).
    """
    n = len(src_lengths)
    tie_break = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    # +1 for the EOS/BOS each side gets; sort by target then source length.
    src_len, tgt_len = src_lengths + 1, tgt_lengths + 1
    order = np.lexsort((tie_break, src_len, tgt_len))
    batches, start = [], 0
    while start < n:
        end, longest = start, 0
        while end < n:
            candidate = max(longest, src_len[order[end]], tgt_len[order[end]])
            if (end - start + 1) * candidate > batch_tokens and end > start:
                break
            longest, end = candidate, end + 1
        batches.append(order[start:end])
        start = end
    if seed is not None:
        permutation = np.random.default_rng(seed + 1).permutation(len(batches))
        batches = [batches[i] for i in permutation]
    return batches


def padding_fraction(
    batches: list[np.ndarray], src_lengths: np.ndarray, tgt_lengths: np.ndarray
) -> float:
    """Share of target positions that are padding, over all batches."""
    real = padded = 0
    for batch in batches:
        lengths = tgt_lengths[batch] + 1
        real += int(lengths.sum())
        padded += int(lengths.max()) * len(batch)
    return 1.0 - real / max(padded, 1)


@dataclass
class EncodedPairs:
    """A split's text and token ids, ready to be cut into batches."""

    src_text: list[str]
    tgt_text: list[str]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]

    def __post_init__(self) -> None:
        self.src_lengths = np.array([len(s) for s in self.src_ids], dtype=np.int64)
        self.tgt_lengths = np.array([len(t) for t in self.tgt_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.src_ids)

    def subset(self, n: int) -> EncodedPairs:
        return EncodedPairs(
            self.src_text[:n], self.tgt_text[:n], self.src_ids[:n], self.tgt_ids[:n]
        )

    def batches(
        self, batch_tokens: int, seed: int | None, pad_id: int, bos_id: int, eos_id: int
    ) -> list[Batch]:
        groups = token_budget_batches(self.src_lengths, self.tgt_lengths, batch_tokens, seed)
        return [self.batch(group.tolist(), pad_id, bos_id, eos_id) for group in groups]

    def batch(self, indices: list[int], pad_id: int, bos_id: int, eos_id: int) -> Batch:
        return make_batch(
            [self.src_ids[i] for i in indices],
            [self.tgt_ids[i] for i in indices],
            pad_id,
            bos_id,
            eos_id,
        )


def encode_pairs(dataset, src_codec, tgt_codec, max_len: int | None = None) -> EncodedPairs:
    """Tokenize a `src`/`tgt` Dataset with a batched `Dataset.map`; optionally drop over-long pairs."""
    encoded = dataset.map(
        lambda batch: {
            "src_ids": src_codec.encode(batch["src"]),
            "tgt_ids": tgt_codec.encode(batch["tgt"]),
        },
        batched=True,
        batch_size=2000,
    )
    if max_len is not None:
        encoded = encoded.filter(
            lambda batch: [
                len(s) <= max_len and len(t) <= max_len
                for s, t in zip(batch["src_ids"], batch["tgt_ids"], strict=True)
            ],
            batched=True,
        )
    return EncodedPairs(
        list(encoded["src"]),
        list(encoded["tgt"]),
        list(encoded["src_ids"]),
        list(encoded["tgt_ids"]),
    )
