"""`minitx predict`: classify texts."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from minitx.cli.app import CHECKPOINT, QUIET, SETS, app, start
from minitx.cli.inputs import for_non_empty, input_batches, print_lines


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A classification run written by `minitx train`."),
    texts: list[str] = typer.Argument(
        None, help="Texts to classify; stdin when none and no --input. Pairs: TEXT<TAB>PAIR."
    ),
    input_file: Path | None = typer.Option(
        None, "--input", "-i", help="Classify each line of this file."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line, with every label's probability."
    ),
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
) -> None:
    """Classify texts, one LABEL<TAB>PROBABILITY line each.

    One line per input line (an empty line for an empty one).

    Examples:

    \b
      minitx predict runs/sst2 "a gorgeous , witty , seductive movie ."
      minitx predict runs/sst2 --input reviews.txt --json > predictions.jsonl
      cat reviews.txt | minitx predict runs/sst2
    """
    from minitx.api import load

    start(quiet)
    model = load(run_dir, checkpoint, overrides=overrides)
    for lines in input_batches(texts, input_file, 256):
        results = for_non_empty(lines, model.predict)
        print_lines(
            _prediction_line(line, prediction, as_json)
            for line, prediction in zip(lines, results, strict=True)
        )


def _prediction_line(text: str, prediction, as_json: bool) -> str:
    if not as_json:
        return f"{prediction.label}\t{prediction.probability:.4f}" if prediction else ""
    record = {
        "text": text,
        "label": prediction.label if prediction else None,
        "probability": round(prediction.probability, 4) if prediction else None,
        "probabilities": {k: round(v, 4) for k, v in prediction.probabilities.items()}
        if prediction
        else {},
    }
    return json.dumps(record, ensure_ascii=False)
