"""The command line: each command loads a config or a run directory, calls one library function, prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from minitx.errors import ReportedElsewhere, TrainingInterrupted, UserError
from minitx.progress import set_quiet

app = typer.Typer(
    help=(
        "Train and evaluate small Transformers, for translation or text classification, from one "
        "YAML file.\n\n"
        "  minitx train configs/quickstart.yaml\n\n"
        "  minitx eval runs/quickstart --split test\n\n"
        '  minitx translate runs/quickstart "three hundred forty two"\n\n'
        '  minitx predict runs/sst2 "a gorgeous , witty , seductive movie ."'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SET_HELP = "Override a config key, e.g. --set train.lr=3e-4 (repeatable)."
QUIET_HELP = "No progress bars or status lines."


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config file."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Where to write the run [default: runs/<config name>]."
    ),
    fresh: bool = typer.Option(
        False, "--fresh", help="Delete the run directory's contents and start over."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --fresh deletes a run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Train in N processes on this machine with DDP (starts torchrun; one per GPU).",
    ),
) -> None:
    """Train a model; resume if the run directory already holds a checkpoint.

    Examples:

      minitx train configs/quickstart.yaml

      minitx train configs/multi30k_de_en_raw.yaml --set data.path=../shared/data/multi30k

      minitx train configs/quickstart.yaml --set train.max_steps=500 --run-dir runs/short --fresh --yes

      minitx train configs/multi30k_de_en_raw.yaml --nproc 4     # same as torchrun --standalone --nproc_per_node 4 -m minitx train ...
    """
    from minitx import distributed
    from minitx.config import load_config
    from minitx.run_dir import prepare_run_dir
    from minitx.train.loop import train as train_run

    set_quiet(quiet)
    cfg = load_config(config, overrides)
    run_dir = run_dir or Path("runs") / config.stem
    launched = distributed.launched()
    if nproc > 1 and launched:
        raise UserError("--nproc starts torchrun itself; inside torchrun, leave it out")
    if fresh and run_dir.exists() and any(run_dir.iterdir()) and not yes:
        if launched or not sys.stdin.isatty():
            raise UserError(f"--fresh would delete {run_dir}; add --yes to confirm")
        typer.confirm(f"Delete everything in {run_dir} and start over?", abort=True)
    if nproc > 1:
        args = ["train", str(config), "--run-dir", str(run_dir)]
        args += [item for override in overrides for item in ("--set", override)]
        args += (["--fresh", "--yes"] if fresh else []) + (["--quiet"] if quiet else [])
        raise typer.Exit(distributed.launch(nproc, args))
    ranks = distributed.join(cfg.run.device)
    try:
        if not ranks.is_main:
            set_quiet(True)  # rank 0 speaks for the group
        ranks.main_only(lambda: prepare_run_dir(cfg, run_dir, fresh))
        scores = train_run(cfg, run_dir, ranks)
    finally:
        distributed.leave(ranks)
    if ranks.is_main:
        typer.echo(json.dumps({"run_dir": str(run_dir), **scores}))


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `minitx train`."),
    split: str = typer.Option(
        "test", "--split", help="train, validation, test, or a split name of the data."
    ),
    beam: int | None = typer.Option(
        None, "--beam", min=1, help="Beam size [default: decode.beam_size]."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="best, last, or step_N (kept with train.keep_last)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Score a split; writes RUN_DIR/eval/<split>.json.

    Translation: BLEU, chrF, exact match, loss (hypotheses in <split>.hyp). Classification:
    accuracy, macro-F1, per-class scores, confusion matrix, loss (predictions in <split>.pred, the
    matrix drawn in <split>.confusion.png).

    Examples:

      minitx eval runs/quickstart

      minitx eval runs/multi30k_de_en_raw --split test --beam 5

      minitx eval runs/multi30k_de_en_raw --split validation --checkpoint last --set decode.length_penalty=0.6

      minitx eval runs/sst2 --split test
    """
    from minitx.evaluate import evaluate_split, load_run

    set_quiet(quiet)
    run = load_run(run_dir, checkpoint, tuple(overrides))
    if beam is not None and run.config.task != "translation":
        raise UserError(f"--beam is for translation runs, and {run_dir} is a {run.config.task} run")
    report = evaluate_split(run, split, beam)
    if run.config.task == "classification":
        for key in ("accuracy", "macro_f1", "loss"):
            typer.echo(f"{key:>12}: {report[key]}")
        for name, scores in report["per_class"].items():
            typer.echo(
                f"{name:>12}: precision {scores['precision']}, recall {scores['recall']}, "
                f"F1 {scores['f1']}, support {scores['support']}"
            )
        skipped = "".join(f", skipped {n} with {why}" for why, n in report["skipped"].items())
        typer.echo(
            f"{'examples':>12}: {report['examples']}  (checkpoint step "
            f"{report['checkpoint_step']}{skipped})"
        )
    else:
        for key in ("bleu", "chrf", "exact_match", "loss", "ppl"):
            typer.echo(f"{key:>12}: {report[key]}")
        typer.echo(
            f"{'sentences':>12}: {report['sentences']}  (checkpoint step {report['checkpoint_step']}, beam {report['decoding']['beam_size']})"
        )
        typer.echo(f"{'signature':>12}: {report['bleu_signature']}")
    typer.echo(f"{'written':>12}: {run_dir / 'eval' / (split + '.json')}")


@app.command()
def translate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `minitx train`."),
    texts: list[str] = typer.Argument(
        None, help="Sentences to translate; stdin when none and no --input."
    ),
    input_file: Path | None = typer.Option(
        None, "--input", "-i", help="Translate each line of this file."
    ),
    beam: int | None = typer.Option(
        None, "--beam", min=1, help="Beam size [default: decode.beam_size]."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Sentences decoded together."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="best, last, or step_N (kept with train.keep_last)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Translate sentences: one output line per input line.

    Examples:

      minitx translate runs/quickstart "three hundred forty two"

      minitx translate runs/multi30k_de_en_raw --input sentences.de --beam 5 > sentences.en

      echo "Ein Hund rennt durch den Park." | minitx translate runs/multi30k_de_en_raw
    """
    from minitx.evaluate import load_run, translate_texts

    lines = _input_lines(texts, input_file)
    run = load_run(run_dir, checkpoint, tuple(overrides))
    outputs = _for_non_empty(lines, lambda texts: translate_texts(run, texts, beam, batch_size))
    for line in outputs:
        typer.echo(line or "")


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
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="best, last, or step_N (kept with train.keep_last)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Classify texts: LABEL<TAB>PROBABILITY per input line (an empty line for an empty one).

    Examples:

      minitx predict runs/sst2 "a gorgeous , witty , seductive movie ."

      minitx predict runs/sst2 --input reviews.txt --json > predictions.jsonl

      cat reviews.txt | minitx predict runs/sst2
    """
    from minitx.evaluate import classify_texts, load_run

    lines = _input_lines(texts, input_file)
    run = load_run(run_dir, checkpoint, tuple(overrides))
    results = _for_non_empty(lines, lambda texts: classify_texts(run, texts))
    for line, probabilities in zip(lines, results, strict=True):
        label = max(probabilities, key=probabilities.get) if probabilities else None
        if as_json:
            record = {
                "text": line,
                "label": label,
                "probability": round(probabilities[label], 4) if label else None,
                "probabilities": {k: round(v, 4) for k, v in (probabilities or {}).items()},
            }
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            typer.echo(f"{label}\t{probabilities[label]:.4f}" if label else "")


@app.command()
def attention(
    run_dir: Path = typer.Argument(..., help="A run directory written by `minitx train`."),
    text: str = typer.Argument(..., help="The sentence (or text) to look at."),
    layer: int | None = typer.Option(None, "--layer", min=0, help="Only this layer (from 0)."),
    head: int | None = typer.Option(None, "--head", min=0, help="Only this head (from 0)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write [default: RUN_DIR/attention]."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="best, last, or step_N (kept with train.keep_last)."
    ),
) -> None:
    """Draw attention maps: PNG heatmaps (a grid of heads per layer) and the raw weights as JSON.

    Translation runs: the sentence is translated (greedy), then encoder self-attention, decoder
    self-attention and cross-attention are drawn. Classification runs: encoder self-attention and
    the prediction.

    Examples:

      minitx attention runs/multi30k_de_en_raw "Ein Hund rennt durch den Park."

      minitx attention runs/quickstart "three hundred forty two" --layer 1 --head 0 --out maps/
    """
    from minitx.evaluate import attention_maps, load_run
    from minitx.plots import draw_attention_maps

    run = load_run(run_dir, checkpoint)
    cfg = run.config.model
    n_layers = (
        cfg.n_encoder_layers
        if run.config.task == "classification"
        else max(cfg.n_encoder_layers, cfg.n_decoder_layers)
    )
    if layer is not None and layer >= n_layers:
        raise UserError(f"--layer {layer}: the model has layers 0 to {n_layers - 1}")
    if head is not None and head >= cfg.n_heads:
        raise UserError(f"--head {head}: the model has heads 0 to {cfg.n_heads - 1}")
    if not text.strip():
        raise UserError("give a non-empty text to look at")
    maps = attention_maps(run, text)
    if "translation" in maps:
        typer.echo(f"translation: {maps['translation']}")
    if "prediction" in maps:
        typer.echo(
            f"prediction: {maps['prediction']['label']} ({maps['prediction']['probability']})"
        )
    for path in draw_attention_maps(maps, out or run_dir / "attention", run_dir.name, layer, head):
        typer.echo(f"wrote {path}")


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="A run directory written by `minitx train`."),
) -> None:
    """Draw training loss, learning rate and validation metrics from metrics.jsonl as PNG curves.

    Example:

      minitx plot runs/quickstart     # writes runs/quickstart/plots/curves.png
    """
    from minitx.plots import plot_curves

    events = _read_metrics(run_dir)
    (run_dir / "plots").mkdir(exist_ok=True)
    path = run_dir / "plots" / "curves.png"
    panels = plot_curves(events, path, run_dir.name)
    typer.echo(f"wrote {path} ({', '.join(panels)})")


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; is it a minitx run directory?")
    lines = path.read_text(encoding="utf-8").splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(f"{path} line {number} is not JSON; the file is damaged") from None
            # else: the last line of a run killed mid-write; skip it
    if not any(e.get("event") == "train" for e in events):
        raise UserError(f"{path} has no training steps logged yet; train longer than log_every")
    return events


def _for_non_empty(lines: list[str], function) -> list:
    """`function` applied to the non-empty lines in one call; None in place of each empty line."""
    non_empty = [i for i, line in enumerate(lines) if line.strip()]
    results: list = [None] * len(lines)
    for i, result in zip(non_empty, function([lines[i] for i in non_empty]), strict=True):
        results[i] = result
    return results


def _input_lines(texts: list[str] | None, input_file: Path | None) -> list[str]:
    """Lines from the arguments, from --input, or else from stdin."""
    if texts and input_file:
        raise UserError("give texts as arguments or with --input, not both")
    if input_file is not None:
        if not input_file.is_file():
            raise UserError(f"input file not found: {input_file}")
        return _read_text_lines(input_file.read_bytes(), str(input_file))
    if texts:
        return list(texts)
    return _read_text_lines(sys.stdin.buffer.read(), "stdin")


def _read_text_lines(data: bytes, where: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} is not UTF-8 text (bad byte at position {exc.start})") from None
    # Only newlines separate sentences: str.splitlines would also split on form feeds and U+2028.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def main() -> None:
    """Run the CLI; every way it can fail ends in one line on stderr and a documented exit code."""
    try:
        code = app(standalone_mode=False)
    except ReportedElsewhere:  # rank 0 of a torchrun group printed it
        raise SystemExit(2) from None
    except UserError as exc:
        _fail(f"error: {exc}", 2)
    except typer.TyperException as exc:  # bad or missing arguments and options
        message = exc.format_message()
        if not message:  # `minitx` alone: the help was shown
            raise SystemExit(2) from None
        commands = {c.name or c.callback.__name__ for c in app.registered_commands}
        command = f"{sys.argv[1]} " if len(sys.argv) > 1 and sys.argv[1] in commands else ""
        _fail(f"error: {message} (see 'minitx {command}--help')", 2)
    except TrainingInterrupted as exc:  # under torchrun every rank stops; rank 0 says so
        _fail(str(exc) if os.environ.get("RANK", "0") == "0" else "", 128 + exc.signal_number)
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", 130)
    raise SystemExit(code if isinstance(code, int) else 0)


def _fail(message: str, exit_code: int) -> None:
    if message:
        typer.echo(message, err=True)
    raise SystemExit(exit_code)
