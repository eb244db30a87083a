"""The command line: each command loads a config or a run directory, calls one library function, prints."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from minitx import __version__
from minitx.errors import ReportedElsewhere, TrainingInterrupted, UserError
from minitx.progress import show_status
from minitx.run_dir import CHECKPOINT_CHOICES, RunDir

try:  # Typer 0.28 and later raise their own usage errors and no longer use Click
    from typer import TyperException as UsageProblem
except ImportError:  # Typer 0.12-0.27: Click's
    from click.exceptions import ClickException as UsageProblem

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
    pretty_exceptions_enable=False,
)

# Options several commands share, declared once.
SETS = typer.Option(
    [], "--set", help="Override a config key, e.g. --set train.lr=3e-4 (repeatable)."
)
QUIET = typer.Option(
    False, "--quiet", "-q", help="No progress bars or status lines (warnings stay)."
)
CHECKPOINT = typer.Option(
    "best", "--checkpoint", help=f"Which weights: {CHECKPOINT_CHOICES} (see train.keep_last)."
)
RUN_DIR = typer.Argument(..., help="A run directory written by `minitx train`.")
BEAM = typer.Option(None, "--beam", min=1, help="Beam size [default: decode.beam_size].")


def _show_version(show: bool) -> None:
    if show:
        typer.echo(f"minitx {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    # The app's help (above) describes minitx; this callback only adds --version.
    return None


def _start(quiet: bool) -> None:
    """What every command sets up for this process before its work."""
    from minitx import runtime

    show_status(quiet)
    runtime.keep_freed_memory()


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config file."),
    overrides: list[str] = SETS,
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Where to write the run [default: runs/<config name>]."
    ),
    fresh: bool = typer.Option(
        False, "--fresh", help="Delete the run directory's contents and start over."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --fresh deletes a run."),
    quiet: bool = QUIET,
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

    _start(quiet)
    cfg = load_config(config, overrides)
    run = RunDir(run_dir or Path("runs") / config.stem)
    launched = distributed.launched()
    if nproc > 1 and launched:
        raise UserError("--nproc starts torchrun itself; inside torchrun, leave it out")
    if fresh and run.root.exists() and any(run.root.iterdir()) and not yes:
        if launched or not sys.stdin.isatty():
            raise UserError(f"--fresh would delete {run}; add --yes to confirm")
        typer.confirm(f"Delete everything in {run} and start over?", abort=True)
    if nproc > 1:
        args = ["train", str(config), "--run-dir", str(run)]
        args += [item for override in overrides for item in ("--set", override)]
        args += (["--fresh", "--yes"] if fresh else []) + (["--quiet"] if quiet else [])
        raise typer.Exit(distributed.launch(nproc, args))
    import datasets

    from minitx.api import train_group

    datasets.disable_progress_bars()  # minitx shows its own progress
    scores = train_group(cfg, run, fresh, quiet)
    if scores is not None:
        typer.echo(json.dumps({"run_dir": str(run), **scores}))
    elif distributed.launched():
        # A rank other than 0, done, having written nothing: it skips the interpreter's shutdown.
        # There, gloo's worker thread can still be freeing a finished collective whose tensors
        # need the GIL, and the process aborts ("terminate called without an active exception";
        # gdb: ProcessGroupGloo::runLoop freeing an AsyncAllreduceWork inside Py_FinalizeEx),
        # in about one 2-process run in six.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
    quiet: bool = QUIET,
) -> None:
    """Score a split; writes RUN_DIR/eval/<split>.json.

    Translation: BLEU, chrF, exact match, loss (hypotheses in <split>.hyp). Classification:
    accuracy, macro-F1, per-class scores, confusion matrix, loss (predictions in <split>.pred, the
    matrix drawn in <split>.confusion.png).

    Examples:

      minitx eval runs/quickstart

      minitx eval runs/multi30k_de_en_raw --split test --beam 5

      minitx eval runs/multi30k_de_en_raw --split validation --checkpoint last --set decode.length_penalty=0.6

      minitx eval runs/sst2 --split test --json
    """
    import datasets

    from minitx.api import load

    _start(quiet)
    datasets.disable_progress_bars()
    model = load(run_dir, checkpoint, overrides=overrides)
    run = model.trained.run
    if beam is not None and model.task != "translation":
        raise UserError(f"--beam is for translation runs, and {run} is a {model.task} run")
    report = model.evaluate(split, beam_size=beam)
    written = run.eval_files(split).report
    if as_json:
        typer.echo(json.dumps({**report, "written": str(written)}, ensure_ascii=False))
        return
    if model.task == "classification":
        keys, count = ("accuracy", "macro_f1", "loss"), f"{report['examples']} examples"
    else:
        keys, count = (
            ("bleu", "chrf", "exact_match", "loss", "ppl"),
            f"{report['sentences']} sentences",
        )
    for key in keys:
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

    _start(quiet)
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
    for lines in _input_batches(texts, input_file, decode.batch_size):
        found = _for_non_empty(lines, lambda some: model.translate(some, **options))
        _print_lines(
            _translation_lines(line, translation, output_format, decode.n_best)
            for line, translation in zip(lines, found, strict=True)
        )


def _translation_lines(source: str, translation, output_format: str, n_best: int) -> str:
    """What `translate` prints for one input line (several lines with n-best in text format)."""
    from minitx.alignments import format_alignments

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
    from minitx.alignments import format_alignments

    record = {
        "text": hypothesis.text,
        "score": round(hypothesis.score, 4),
        "log_prob": round(hypothesis.log_prob, 4),
    }
    if hypothesis.alignment is not None:
        record["alignment"] = format_alignments(hypothesis.alignment)
    return record


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
    """Classify texts: LABEL<TAB>PROBABILITY per input line (an empty line for an empty one).

    Examples:

      minitx predict runs/sst2 "a gorgeous , witty , seductive movie ."

      minitx predict runs/sst2 --input reviews.txt --json > predictions.jsonl

      cat reviews.txt | minitx predict runs/sst2
    """
    from minitx.api import load

    _start(quiet)
    model = load(run_dir, checkpoint, overrides=overrides)
    if model.task != "classification":
        raise UserError(
            f"{run_dir} is a {model.task} run; `minitx predict` is for classification runs"
        )
    for lines in _input_batches(texts, input_file, 256):
        results = _for_non_empty(lines, model.predict)
        _print_lines(
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


@app.command()
def attention(
    run_dir: Path = RUN_DIR,
    text: str | None = typer.Argument(None, help="The sentence (or text) to look at."),
    input_file: Path | None = typer.Option(
        None, "--input", "-i", help="With --html: one page with an example per line of this file."
    ),
    as_html: bool = typer.Option(
        False, "--html", help="Write one interactive, self-contained page: OUT/attention.html."
    ),
    layer: int | None = typer.Option(None, "--layer", min=0, help="Only this layer (from 0)."),
    head: int | None = typer.Option(None, "--head", min=0, help="Only this head (from 0)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write [default: RUN_DIR/attention]."
    ),
    checkpoint: str = CHECKPOINT,
    quiet: bool = QUIET,
) -> None:
    """Draw attention maps: PNG heatmaps (a grid of heads per layer) and the raw weights as JSON,
    or with --html one interactive page (layers, heads, lines and matrix views) that opens from
    file:// with nothing loaded from the network.

    Translation runs: the sentence is translated (greedy), then encoder self-attention, decoder
    self-attention and cross-attention are drawn. Classification runs: encoder self-attention and
    the prediction.

    Examples:

      minitx attention runs/multi30k_de_en_raw "Ein Hund rennt durch den Park."

      minitx attention runs/multi30k_de_en_raw "Ein Hund rennt durch den Park." --html

      minitx attention runs/quickstart --input numbers.txt --html --out pages/

      minitx attention runs/quickstart "three hundred forty two" --layer 1 --head 0 --out maps/
    """
    from minitx.api import load

    _start(quiet)
    texts = [text] if text is not None else []
    if input_file is not None:
        if text is not None or not as_html:
            raise UserError("--input takes the place of TEXT and needs --html")
        texts = [line for batch in _input_batches(None, input_file, 1000) for line in batch]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("give a non-empty text to look at")
    model = load(run_dir, checkpoint)
    run = model.trained.run
    _check_layer_and_head(model.config, layer, head)
    examples = [model.attention(t) for t in texts]
    out = out or run.attention_dir
    if as_html:
        _write_attention_page(model.config, examples, out / "attention.html", run.name)
        return
    maps = examples[0]
    if "translation" in maps:
        typer.echo(f"translation: {maps['translation']}")
    if "prediction" in maps:
        typer.echo(
            f"prediction: {maps['prediction']['label']} ({maps['prediction']['probability']})"
        )
    from minitx.plots import draw_attention_maps

    for path in draw_attention_maps(maps, out, run.name, layer, head):
        typer.echo(f"wrote {path}")


def _check_layer_and_head(cfg, layer: int | None, head: int | None) -> None:
    n_layers = cfg.model.n_encoder_layers
    if cfg.task == "translation":
        n_layers = max(n_layers, cfg.model.n_decoder_layers)
    if layer is not None and layer >= n_layers:
        raise UserError(f"--layer {layer}: the model has layers 0 to {n_layers - 1}")
    if head is not None and head >= cfg.model.n_heads:
        raise UserError(f"--head {head}: the model has heads 0 to {cfg.model.n_heads - 1}")


def _write_attention_page(cfg, examples: list[dict], path: Path, name: str) -> None:
    """The page, and the same numbers as JSON beside it (attention.json)."""
    from minitx.attention_page import page_data, write_attention_page

    pooling = cfg.model.pooling if cfg.task == "classification" else None
    data = page_data(
        [{**maps, "pooling": pooling} for maps in examples],
        f"{name}: attention",
        cfg.model.window,
        cfg.model.dilation,
    )
    write_attention_page(data, path)
    path.with_suffix(".json").write_text(json.dumps(data, ensure_ascii=False) + "\n", "utf-8")
    typer.echo(f"wrote {path}")
    typer.echo(f"wrote {path.with_suffix('.json')}")


@app.command()
def average(
    run_dir: Path = RUN_DIR,
    last: int | None = typer.Option(
        None, "--last", min=2, help="Average the last N kept step_N checkpoints [default: 5]."
    ),
    steps: str | None = typer.Option(
        None, "--steps", help="Average these steps' checkpoints, e.g. --steps 3000,3500,4000."
    ),
    quiet: bool = QUIET,
) -> None:
    """Average kept step_N checkpoints into RUN_DIR/checkpoints/averaged (use it with
    --checkpoint averaged). Training keeps them with train.keep_last; train.average_last does this
    at the end of training.

    Examples:

      minitx average runs/multi30k_de_en_raw --last 5

      minitx eval runs/multi30k_de_en_raw --checkpoint averaged --beam 5
    """
    from minitx.training.average import average_snapshots

    _start(quiet)
    if last is not None and steps is not None:
        raise UserError("give --last or --steps, not both")
    numbers = None
    if steps is not None:
        parts = [part.strip() for part in steps.split(",") if part.strip()]
        if not parts or not all(part.isdigit() for part in parts):
            raise UserError(f"--steps takes step numbers separated by commas, got '{steps}'")
        numbers = [int(part) for part in parts]
    run = RunDir(run_dir)
    run.config()  # a run directory, or one clear error
    target = average_snapshots(run, last, numbers)
    typer.echo(f"wrote {target}")


@app.command()
def export(
    run_dir: Path = RUN_DIR,
    out: Path = typer.Option(..., "--out", "-o", help="The export directory (absent or empty)."),
    export_format: str | None = typer.Option(
        None,
        "--format",
        help="ctranslate2 (translation) or onnx (classifiers; the encoder of translation models) "
        "[default: ctranslate2 for translation, onnx for classification].",
    ),
    quantization: str = typer.Option(
        "none", "--quantization", help="CTranslate2 weights: none, int8, int8_float32, float16."
    ),
    checkpoint: str = CHECKPOINT,
    quiet: bool = QUIET,
) -> None:
    """Export a run for another engine: CTranslate2 for translation, ONNX Runtime for classifiers.
    The directory holds the model, config, tokenizer and export.json; `minitx translate`,
    `minitx predict` and `minitx.load` take it in place of the run. Needs pip install
    'minitx[export]'.

    Examples:

      minitx export runs/multi30k_de_en_raw --out exports/m30k_int8 --quantization int8

      minitx translate exports/m30k_int8 "Ein Hund rennt im Park."

      minitx export runs/sst2 --out exports/sst2_onnx
    """
    from dataclasses import replace

    from minitx.evaluate import load_run, require_model
    from minitx.export.writer import check_request, export_model

    _start(quiet)
    run = RunDir(run_dir)
    task = run.config().task
    export_format = export_format or ("ctranslate2" if task == "translation" else "onnx")
    check_request(task, export_format, quantization)  # before the weights load
    trained = load_run(run, checkpoint, ("run.device=cpu", "run.dtype=fp32"))
    require_model(trained, "export")
    origin = {"run": str(run_dir), "checkpoint": checkpoint, "step": trained.checkpoint_step}
    export_model(
        trained.model,
        replace(trained.config, run=run.config().run),  # the run's own device, not the export's
        trained.codecs,
        trained.labels,
        out,
        export_format,
        quantization,
        origin,
    )
    typer.echo(f"wrote {out} ({export_format}, step {trained.checkpoint_step} of {run_dir})")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory, or an export of one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    max_batch_texts: int = typer.Option(
        64, "--max-batch-texts", min=1, help="Texts decoded together at most."
    ),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", min=0.0, help="How long a request waits for others to batch with."
    ),
    max_texts: int = typer.Option(64, "--max-texts", min=1, help="Texts one request may send."),
    max_chars: int = typer.Option(2000, "--max-chars", min=1, help="Characters one text may have."),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Decode requests that arrive together as one batch."
    ),
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
) -> None:
    """Serve a run or an export over HTTP: POST /translate or /predict, GET /health and /info,
    OpenAPI docs at /docs. Needs pip install 'minitx[serve]'.

    Examples:

      minitx serve runs/multi30k_de_en_raw --port 8000

      curl -s localhost:8000/translate -H 'content-type: application/json'
        -d '{"texts": ["Ein Hund rennt."], "beam_size": 5}'
    """
    from minitx.api import load

    _start(quiet)
    try:
        import uvicorn

        from minitx.serve import ServeOptions, create_app, server_info
    except ImportError:
        raise UserError(
            "minitx serve needs FastAPI and uvicorn: pip install 'minitx[serve]'"
        ) from None
    model = load(run_dir, checkpoint, overrides=overrides)
    options = ServeOptions(max_batch_texts, max_wait_ms, max_texts, max_chars, batching)
    app_ = create_app(model, server_info(model), options)
    # uvicorn answers SIGTERM by draining the requests in flight, then raises the signal again
    # with the handler it found: this one makes that a clean exit 0, as a process manager expects.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info")


@app.command()
def report(run_dir: Path = RUN_DIR, checkpoint: str = CHECKPOINT, quiet: bool = QUIET) -> None:
    """Write RUN_DIR/report.html: what was trained, the curves, every evaluated split with its
    signature, the confusion matrix (classification) or the best and worst sample translations
    linked to their attention (translation). Works on a run that is still training.

    Example:

      minitx eval runs/quickstart && minitx report runs/quickstart
    """
    import datasets

    from minitx.report import build_report

    _start(quiet)
    datasets.disable_progress_bars()
    for path in build_report(RunDir(run_dir), checkpoint):
        typer.echo(f"wrote {path}")


@app.command()
def plot(run_dir: Path = RUN_DIR, quiet: bool = QUIET) -> None:
    """Draw training loss, learning rate and validation metrics from metrics.jsonl as PNG curves.

    Example:

      minitx plot runs/quickstart     # writes runs/quickstart/plots/curves.png
    """
    from minitx.metrics import read_metrics
    from minitx.plots import plot_curves

    _start(quiet)
    run = RunDir(run_dir)
    events = read_metrics(run)
    run.plots_dir.mkdir(exist_ok=True)
    path = run.curves_file
    panels = plot_curves(events, path, run.name)
    typer.echo(f"wrote {path} ({', '.join(panels)})")


def _for_non_empty(lines: list[str], function: Callable[[list[str]], list]) -> list:
    """`function` applied to the non-empty lines in one call; None in place of each empty line."""
    non_empty = [i for i, line in enumerate(lines) if line.strip()]
    results: list = [None] * len(lines)
    if non_empty:
        for i, result in zip(non_empty, function([lines[i] for i in non_empty]), strict=True):
            results[i] = result
    return results


def _print_lines(lines) -> None:
    for line in lines:
        typer.echo(line)
    sys.stdout.flush()  # a pipe would otherwise hold the batch back


def _input_batches(
    texts: list[str] | None, input_file: Path | None, batch_size: int
) -> Iterator[list[str]]:
    """The input lines, from the arguments, from --input, or else from stdin, in batches."""
    if texts and input_file:
        raise UserError("give texts as arguments or with --input, not both")
    if texts:
        yield list(texts)
    elif input_file is not None:
        if not input_file.is_file():
            raise UserError(f"input file not found: {input_file}")
        with input_file.open("rb") as handle:
            yield from _line_batches(handle, batch_size, str(input_file))
    else:
        yield from _line_batches(sys.stdin.buffer, batch_size, "stdin")


def _line_batches(stream, batch_size: int, where: str) -> Iterator[list[str]]:
    """Lines of a byte stream, in batches of every line that has arrived (at most `batch_size`):
    a batch never waits for more input once it holds a line, so `tail -f … |` is answered as it
    writes, and a file is read in full batches."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stream
        fd = None
    pending, lines, number = b"", [], 0
    while True:
        waiting = lines and fd is not None and not select.select([fd], [], [], 0)[0]
        if waiting or len(lines) >= batch_size:
            yield lines[:batch_size]
            lines = lines[batch_size:]
            continue
        chunk = os.read(fd, 1 << 16) if fd is not None else stream.read()
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        for raw in complete:
            number += 1
            lines.append(_decode_line(raw, where, number))
    if pending:
        lines.append(_decode_line(pending, where, number + 1))
    while lines:
        yield lines[:batch_size]
        lines = lines[batch_size:]


def _decode_line(raw: bytes, where: str, number: int) -> str:
    try:
        # Only newlines separate sentences: str.splitlines would also split on form feeds and
        # U+2028.
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{where} line {number} is not UTF-8 text (bad byte at position {exc.start})"
        ) from None


def main() -> None:
    """Run the CLI; every way it can fail ends in one line on stderr and a documented exit code."""
    try:
        code = app(standalone_mode=False)
    except ReportedElsewhere:  # rank 0 of a torchrun group printed it
        raise SystemExit(2) from None
    except UserError as exc:
        _fail(f"error: {exc}", 2)
    except UsageProblem as exc:  # bad or missing arguments and options
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
    except BrokenPipeError:  # `minitx translate … | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell reports it
    raise SystemExit(code if isinstance(code, int) else 0)


def _fail(message: str, exit_code: int) -> None:
    if message:
        typer.echo(message, err=True)
    raise SystemExit(exit_code)
