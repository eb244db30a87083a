"""`minitx eval`: score a split."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from minitx.cli.app import BEAM, CHECKPOINT, QUIET, RUN_DIR, SETS, app, start
from minitx.cli.inputs import steering_file
from minitx.errors import UserError


@app.command("eval")
def evaluate(
    run_dir: Path = RUN_DIR,
    split: str = typer.Option(
        "test", "--split", help="train, validation, test, or a split name of the data."
    ),
    beam: int | None = BEAM,
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    as_json: bool = typer.Option(False, "--json", help="Print the scores as one JSON object."),
    ensemble: list[Path] = typer.Option(
        None, "--ensemble", help="Another run to decode with, as one ensemble (repeatable)."
    ),
    steer_file: Path | None = typer.Option(
        None,
        "--steer",
        help="A jsonl file, one line per pair of the split: {target_prefix, constraints, "
        "banned}, each optional.",
    ),
    quiet: bool = QUIET,
) -> None:
    """Score a split; writes RUN_DIR/eval/<split>.json.

    Translation: BLEU, chrF, exact match, loss (hypotheses in <split>.hyp). Classification:
    accuracy, macro-F1, per-class scores, confusion matrix, loss (predictions in <split>.pred, the
    matrix drawn in <split>.confusion.png).

    Examples:

    \b
      minitx eval runs/quickstart
      minitx eval runs/multi30k_de_en_raw --split test --beam 5
      minitx eval runs/multi30k_de_en_raw --split validation --checkpoint last --set decode.length_penalty=0.6
      minitx eval runs/sst2 --split test --json
      minitx eval runs/multi30k_a --ensemble runs/multi30k_b     # writes runs/multi30k_a/eval/ensemble/
      minitx eval runs/multi30k_de_en_raw --steer constraints.jsonl
    """
    import datasets

    from minitx.api import load

    start(quiet)
    datasets.disable_progress_bars()
    model = load([run_dir, *(ensemble or [])], checkpoint, overrides=overrides)
    run, task = model.run, model.task
    if beam is not None and not task.generates_text:
        raise UserError(f"--beam is for runs that write text, and {run} is a {task.name} run")
    steering = steering_file(steer_file) if steer_file is not None else []
    report = model.evaluate(split, steering, beam_size=beam)
    written = run.eval_files(split).report
    if as_json:
        typer.echo(json.dumps({**report, "written": str(written)}, ensure_ascii=False))
        return
    count = f"{report[task.counted]} {task.counted}"
    for key in task.shown_scores:
        typer.echo(f"{key:>12}: {report[key]}")
    for name, scores in report.get("per_class", {}).items():
        typer.echo(
            f"{name:>12}: precision {scores['precision']}, recall {scores['recall']}, "
            f"F1 {scores['f1']}, support {scores['support']}"
        )
    details = [f"checkpoint step {report['checkpoint_step']}"]
    if "decoding" in report:
        details.append(f"beam {report['decoding']['beam_size']}")
    details += [f"skipped {n} with {why}" for why, n in report.get("skipped", {}).items()]
    typer.echo(f"{'scored':>12}: {count} ({', '.join(details)})")
    if "bleu_signature" in report:
        typer.echo(f"{'signature':>12}: {report['bleu_signature']}")
    typer.echo(f"{'written':>12}: {written}")
