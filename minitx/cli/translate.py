"""`minitx translate`: text in, translations out, batch by batch as input arrives."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from minitx.cli.app import BEAM, CHECKPOINT, QUIET, RUN_DIR, SETS, app, start
from minitx.cli.inputs import for_non_empty, input_batches, print_lines
from minitx.errors import UserError


@app.command()
def translate(
    run_dir: Path = RUN_DIR,
    texts: list[str] = typer.Argument(
        None, help="Sentences to translate; stdin when none and no --input."
    ),
    input_file: Path | None = typer.Option(
        None, "--input", "-i", help="Translate each line of this file."
    ),
    beam: int | None = BEAM,
    n_best: int | None = typer.Option(
        None, "--n-best", min=1, help="Give the N best hypotheses (N <= beam), or N samples."
    ),
    sample: bool = typer.Option(
        False, "--sample", help="Sample each token (with --temperature, --top-k, --top-p, --seed)."
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature."),
    top_k: int | None = typer.Option(None, "--top-k", help="Sample from the k likeliest tokens."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling: 0 < p <= 1."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sampling draws."),
    alignments: bool = typer.Option(
        False, "--alignments", help="Word alignments, source-target 'i-j' pairs (Moses style)."
    ),
    output_format: str = typer.Option(
        "text", "--format", help="text: one line per hypothesis; jsonl: one object per input."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Sentences decoded together [default: decode.batch_size]."
    ),
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
) -> None:
    """Translate sentences: one output line per input line (N lines with --n-best N; with
    --alignments each line is followed by a tab and its alignment), printed batch by batch as
    input arrives.

    Examples:

      minitx translate runs/quickstart "three hundred forty two"

      minitx translate runs/multi30k_de_en_raw --input sentences.de --beam 5 > sentences.en

      minitx translate runs/quickstart "seventy two" --n-best 3 --format jsonl

      minitx translate runs/multi30k_de_en_raw --sample --top-p 0.9 --seed 1 < mono.de > back.en

      tail -f sentences.de | minitx translate runs/multi30k_de_en_raw
    """
    from minitx.api import load

    start(quiet)
    if output_format not in ("text", "jsonl"):
        raise UserError(f"--format must be text or jsonl, got '{output_format}'")
    model = load(run_dir, checkpoint, overrides=overrides)
    options = {
        "beam_size": beam,
        "n_best": n_best,
        "sample": sample or None,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        "alignments": alignments or None,
        "batch_size": batch_size,
    }
    decode = model.decode_config(**options)  # checked before any input is read
    for lines in input_batches(texts, input_file, decode.batch_size):
        found = for_non_empty(lines, lambda some: model.translate(some, **options))
        print_lines(
            _translation_lines(line, translation, output_format, decode.n_best)
            for line, translation in zip(lines, found, strict=True)
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
