"""What every inference engine offers, and what an export directory gives the engine that runs it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from minitx.config import Config, DecodeConfig
from minitx.data.tokenizer import Codecs, TextCodec
from minitx.errors import UserError
from minitx.inference.decode import Hypothesis
from minitx.inference.steering import Steering


class Engine(Protocol):
    """Runs a trained model: the PyTorch run itself, or an export another runtime executes.

    An engine offers what its format can compute: `translate` for models that write text,
    `class_probabilities` for classifiers. The exporter of a format declares the tasks it
    supports, so a task never meets an engine that lacks its operation (see minitx/export)."""

    name: str  # what GET /info reports: pytorch, ctranslate2, onnx

    def translate(
        self, texts: list[str], decode: DecodeConfig, steering: Sequence[Steering | None] = ()
    ) -> list[list[Hypothesis]]:
        """Each text's hypotheses, best first; `steering`, one per text where given, says what
        its output must start with, contain or avoid (an engine refuses what it cannot honour)."""
        ...

    def class_probabilities(self, src: torch.Tensor) -> torch.Tensor:
        """(B, C) class probabilities of padded token ids (B, T)."""
        ...


@dataclass(frozen=True)
class ExportedRun:
    """An export directory as its engine needs it: the files, config, tokenizer and export.json."""

    directory: Path
    model_file: Path  # the ONNX graph (CTranslate2 reads the directory)
    config: Config
    codecs: Codecs
    info: dict


# Engines that take one length limit per call, as CTranslate2 and `generate()` do, run each
# length-sorted batch at its largest sentence limit and cut a hypothesis longer than its own
# sentence's limit back to it (minitx's limit is per sentence): only outputs that run to the
# limit can differ. Splitting batches by limit instead cost half the speed (many small calls).


def check_export_inputs(lengths: list[int], decode: DecodeConfig, max_positions: int) -> None:
    """Refuse what an export cannot do: word alignments (they come from the PyTorch model's
    attention), and inputs of `lengths` tokens (EOS included) beyond its position table."""
    if decode.alignments:
        raise UserError(
            "word alignments come from the PyTorch model's attention: translate with the run "
            "directory instead of the export"
        )
    too_long = [i for i, length in enumerate(lengths) if length > max_positions]
    if too_long:
        raise UserError(
            f"input {too_long[0] + 1} has {lengths[too_long[0]]} tokens; this export has "
            f"positions for {max_positions}"
        )


def length_sorted_batches(sources: list[list], batch_size: int) -> Iterator[list[int]]:
    """The indices of `sources`, shortest first, `batch_size` at a time."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def output_limit(src_length: int, decode: DecodeConfig, max_positions: int) -> int:
    """A sentence's output limit (tokens, EOS included), as searches.base.max_lengths computes
    it, within the export's position table."""
    limit = math.ceil(src_length * decode.max_len_ratio) + decode.max_len_offset
    return max(1, min(limit, max_positions))


def within_limit(hypothesis: Hypothesis, limit: int, codec: TextCodec) -> Hypothesis:
    """`hypothesis` cut to `limit` tokens with its EOS, as minitx's own search would end it."""
    if len(hypothesis.tokens) < limit:  # room for its EOS
        return hypothesis
    ids = hypothesis.tokens[: limit - 1]
    return replace(hypothesis, tokens=ids, text=codec.decode([ids])[0])


def refuse_steering(steering: Sequence[Steering | None], engine: str, fields: tuple[str, ...]):
    """One clear error where a text asks for what `engine` cannot do (`fields` of Steering)."""
    for number, one in enumerate(steering, start=1):
        for field in fields:
            if one is not None and getattr(one, field):
                raise UserError(
                    f"input {number}: the {engine} engine cannot honour {field.replace('_', ' ')}"
                    "; translate with the run directory (the PyTorch model) instead"
                )
