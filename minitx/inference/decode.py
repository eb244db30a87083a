"""Decoding many sources: length-sorted batches, each through the search its DecodeConfig picks
from the registry (minitx/inference/searches), every hypothesis given its text.

The searches and their `Hypothesis` are importable from here as well, the face of decoding for
the engines and scripts.
"""

from __future__ import annotations

from dataclasses import replace

from minitx.config import DecodeConfig
from minitx.data.batching import pad
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.inference.searches import (
    Hypothesis,
    SentenceError,
    SentenceInputs,
    beam_search,
    greedy,
    max_lengths,
    sample,
    search_for,
)
from minitx.model.transformer import Seq2Seq
from minitx.runtime import Compute

__all__ = ["Hypothesis", "beam_search", "greedy", "max_lengths", "sample", "translate"]


def translate(
    model: Seq2Seq,
    src_ids: list[list[int]],
    codecs: Codecs,
    cfg: DecodeConfig,
    compute: Compute,
    use_cache: bool = True,
    inputs: SentenceInputs | None = None,
) -> list[list[Hypothesis]]:
    """Decode many sources in length-sorted batches of `cfg.batch_size`; return each source's
    hypotheses (best first, with their text), in input order. `inputs`, one entry per source, go
    to the search with their sources; `use_cache=False` recomputes every prefix."""
    model.eval()
    # Sentences with lexical constraints go through the constrained search in batches of their
    # own: a sentence's output never depends on which others share its batch.
    constrained = [bool(inputs is not None and inputs[i] and inputs[i].constraints) for i in
                   range(len(src_ids))]  # fmt: skip
    if any(constrained):
        search_for(cfg, constrained=True)  # settings no constrained search serves: refused now
    order = sorted(range(len(src_ids)), key=lambda i: (constrained[i], len(src_ids[i])))
    outputs: list[list[Hypothesis]] = [[] for _ in src_ids]
    src_codec, tgt_codec = codecs.src, codecs.tgt
    batches = [
        order[start : start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)
    ]
    for chosen in (part for batch in batches for part in _split_by(batch, constrained)):
        src = pad([src_ids[i] + [src_codec.eos_id] for i in chosen], src_codec.pad_id)
        batch_inputs = None if inputs is None else [inputs[i] for i in chosen]
        search = search_for(cfg, constrained[chosen[0]])
        try:
            with compute.autocast():
                found = search.run(
                    model, src.to(compute.device), tgt_codec.special_ids, cfg, batch_inputs,
                    use_cache,
                )  # fmt: skip
        except SentenceError as error:
            raise UserError(f"input {chosen[error.sentence] + 1}: {error.reason}") from None
        for i, hypotheses in zip(chosen, found, strict=True):
            texts = tgt_codec.decode([h.tokens for h in hypotheses])
            outputs[i] = [replace(h, text=text) for h, text in zip(hypotheses, texts, strict=True)]
    return outputs


def _split_by(batch: list[int], flag: list[bool]) -> list[list[int]]:
    """`batch` as the runs of its indices with the same `flag` (at most two: it is sorted)."""
    parts = [[i for i in batch if not flag[i]], [i for i in batch if flag[i]]]
    return [part for part in parts if part]
