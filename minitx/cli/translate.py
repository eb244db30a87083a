"""`minitx translate`: text in, translations out, batch by batch as input arrives."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from minitx.cli.app import CHECKPOINT, QUIET, RUN_DIR, SETS, app, decode_option, start
from minitx.cli.inputs import for_non_empty, input_batches, leading_runs, print_lines, steered_line
from minitx.config import DecodeConfig
from minitx.errors import UserError
from minitx.inference.steering import Steering, check_steering


def _with_decode_options(command: Callable) -> Callable:
    """`command`, which takes decode options as keyword arguments, with one command-line option
    per DecodeConfig field added to the signature Typer reads."""
    hints = typing.get_type_hints(DecodeConfig)
    options = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=decode_option(option.name),
            annotation=_cli_type(hints[option.name]) | None,
        )
        for option in dataclasses.fields(DecodeConfig)
    ]
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[*own, *options])
    return command


def _cli_type(hint):
    """A choice of strings (Literal) as `str`: older Typer versions take no Literal; the value is
    checked with the other decode options (`Model.decode_config`), one line when wrong."""
    return str if typing.get_origin(hint) is typing.Literal else hint


@app.command()
@_with_decode_options
def translate(
    run_dir: Path = RUN_DIR,
    texts: list[str] = typer.Argument(
        None, help="Sentences to translate; stdin when none and no --input."
    ),
    input_file: Path | None = typer.Option(
        None, "--input", "-i", help="Translate each line of this file."
    ),
    output_format: str = typer.Option(
        "text", "--format", help="text: one line per hypothesis; jsonl: one object per input."
    ),
    input_format: str = typer.Option(
        "text",
        "--input-format",
        help="text: one sentence per line; jsonl: one object per line, {text, target_prefix, "
        "constraints, banned}.",
    ),
    prefix: str | None = typer.Option(
        None, "--prefix", help="Every output starts with this target text (forced, scored)."
    ),
    constraints: list[str] = typer.Option(
        None, "--constraint", help="A target phrase every output must contain (repeatable)."
    ),
    banned: list[str] = typer.Option(
        None, "--ban", help="A target phrase no output may contain, however spelt (repeatable)."
    ),
    ensemble: list[Path] = typer.Option(
        None, "--ensemble", help="Another run to decode with, as one ensemble (repeatable)."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Translate this split of the run's data into --output (distillation)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="With --split: write OUTPUT.<src> and OUTPUT.<tgt>."
    ),
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
    **decode_options: Any,
) -> None:
    """Translate sentences, one output line per input line.

    N lines per input with --n-best N; with
    --alignments each line is followed by a tab and its alignment. Printed batch by batch as
    input arrives. The decoding options are the run's decode settings for this command.

    Examples:

    \b
      minitx translate runs/quickstart "three hundred forty two"
      minitx translate runs/multi30k_de_en_raw --input sentences.de --beam 5 > sentences.en
      minitx translate runs/quickstart "seventy two" --n-best 3 --format jsonl
      minitx translate runs/multi30k_de_en_raw --sample --top-p 0.9 --seed 1 < mono.de > back.en
      minitx translate runs/multi30k_de_en_raw -i sentences.de --length-penalty 0.6
      tail -f sentences.de | minitx translate runs/multi30k_de_en_raw
      minitx translate runs/multi30k_de_en_raw --split train --output distilled/train --beam 5
      minitx translate runs/multi30k_de_en_raw "Ein Hund rennt." --prefix "A brown" --ban puppy
      minitx translate runs/multi30k_de_en_raw "Ein Hund rennt." --constraint "on the grass"
      minitx translate runs/multi30k_de_en_raw --input-format jsonl -i steered.jsonl
      minitx translate runs/multi30k_a runs/multi30k_b "Ein Hund rennt."   # an ensemble

    With --split and --output the source side of a split of the run's data and its translations
    become a parallel corpus (OUTPUT.de and OUTPUT.en here) for data.path; run the same command
    again to go on after a stop.

    Steering: --prefix, --constraint and --ban hold for every input; with --input-format jsonl
    each line may give its own (its fields replace the options'). Run directories given before
    the texts, or with --ensemble, decode together as one ensemble.
    """
    from minitx.api import load

    start(quiet)
    if output_format not in ("text", "jsonl"):
        raise UserError(f"--format must be text or jsonl, got '{output_format}'")
    if input_format not in ("text", "jsonl"):
        raise UserError(f"--input-format must be text or jsonl, got '{input_format}'")
    runs, texts = leading_runs(run_dir, list(texts or []), list(ensemble or []))
    if (split is None) != (output is None):
        raise UserError("--split and --output go together: the split's translations go to a file")
    if split is not None and (texts or input_file):
        raise UserError(
            "with --split the sentences come from the split; leave out texts and --input"
        )
    if split is not None and (prefix or constraints or banned or input_format != "text"):
        raise UserError("--split translates the split as it is: leave out the steering options")
    model = load(runs, checkpoint, overrides=overrides)
    # Checked once, before any input is read; every batch then decodes with these settings.
    decode = model.decode_config(**decode_options)
    given = Steering(prefix or "", tuple(constraints or ()), tuple(banned or ()))
    check_steering(given, decode.max_phrases, "the options")
    if split is not None and output is not None:
        written = model.translate_split(split, output, decode)
        typer.echo(f"wrote {written[0]} and {written[1]}")
        return
    number = 0
    for lines in input_batches(texts, input_file, decode.batch_size):
        if input_format == "jsonl":
            inputs = [steered_line(line, given, number + i + 1) for i, line in enumerate(lines)]
        else:
            inputs = [(line, given) for line in lines]
        number += len(lines)
        sources = [text for text, _ in inputs]
        steering = [one for text, one in inputs if text.strip()]  # as for_non_empty passes them
        found = for_non_empty(
            sources, lambda some, steering=steering: model.translate(some, decode, steering)
        )
        print_lines(
            _translation_lines(line, translation, output_format, decode.n_best)
            for line, translation in zip(sources, found, strict=True)
        )


def _translation_lines(source: str, translation, output_format: str, n_best: int) -> str:
    """What `translate` prints for one input line (several lines with n-best in text format)."""
    from minitx.inference.alignments import format_alignments

    hypotheses = translation.hypotheses if translation else []
    if output_format == "jsonl":
        record = {"source": source, "hypotheses": [_hypothesis_record(h) for h in hypotheses]}
        return json.dumps(record, ensure_ascii=False)
    lines = [
        h.text + ("\t" + format_alignments(h.alignment) if h.alignment is not None else "")
        for h in hypotheses
    ]
    # Exactly n_best lines per input, empty ones included, so that line k of the output belongs
    # to input k // n_best.
    return "\n".join(lines + [""] * (n_best - len(lines)))


def _hypothesis_record(hypothesis) -> dict:
    from minitx.inference.alignments import format_alignments

    record = {
        "text": hypothesis.text,
        "score": round(hypothesis.score, 4),
        "log_prob": round(hypothesis.log_prob, 4),
    }
    if hypothesis.alignment is not None:
        record["alignment"] = format_alignments(hypothesis.alignment)
    return record
