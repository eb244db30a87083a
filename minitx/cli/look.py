"""Commands that show a run: `minitx attention`, `minitx heads`, `minitx report`, `minitx plot`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from minitx.cli.app import CHECKPOINT, QUIET, RUN_DIR, app, start
from minitx.cli.inputs import input_batches
from minitx.errors import UserError
from minitx.run_dir import RunDir


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
    """Draw attention maps, as PNG heatmaps or one HTML page.

    PNG heatmaps (a grid of heads per layer) and the raw weights as JSON, or with --html one
    interactive page (layers, heads, lines and matrix views) that opens from
    file:// with nothing loaded from the network.

    Translation runs: the sentence is translated (greedy), then encoder self-attention, decoder
    self-attention and cross-attention are drawn. Classification runs: encoder self-attention and
    the prediction.

    Examples:

    \b
      minitx attention runs/multi30k_de_en_raw "Ein Hund rennt durch den Park."
      minitx attention runs/multi30k_de_en_raw "Ein Hund rennt durch den Park." --html
      minitx attention runs/quickstart --input numbers.txt --html --out pages/
      minitx attention runs/quickstart "three hundred forty two" --layer 1 --head 0 --out maps/
    """
    from minitx.api import load

    start(quiet)
    texts = [text] if text is not None else []
    if input_file is not None:
        if text is not None or not as_html:
            raise UserError("--input takes the place of TEXT and needs --html")
        texts = [line for batch in input_batches(None, input_file, 1000) for line in batch]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("give a non-empty text to look at")
    model = load(run_dir, checkpoint)
    run = model.run
    _check_layer_and_head(model.task.attention_layers(model.config), model.config, layer, head)
    examples = [model.attention(t) for t in texts]
    out = out or run.attention_dir
    if as_html:
        examples = [{**maps, **model.task.page_extras(model.config)} for maps in examples]
        _write_attention_page(model.config, examples, out / "attention.html", run.name)
        return
    maps = examples[0]
    if "translation" in maps:
        typer.echo(f"translation: {maps['translation']}")
    if "prediction" in maps:
        typer.echo(
            f"prediction: {maps['prediction']['label']} ({maps['prediction']['probability']})"
        )
    from minitx.views.plots import draw_attention_maps

    for path in draw_attention_maps(maps, out, run.name, layer, head):
        typer.echo(f"wrote {path}")


def _check_layer_and_head(n_layers: int, cfg, layer: int | None, head: int | None) -> None:
    if layer is not None and layer >= n_layers:
        raise UserError(f"--layer {layer}: the model has layers 0 to {n_layers - 1}")
    if head is not None and head >= cfg.model.n_heads:
        raise UserError(f"--head {head}: the model has heads 0 to {cfg.model.n_heads - 1}")


def _write_attention_page(cfg, examples: list[dict], path: Path, name: str) -> None:
    """The page, and the same numbers as JSON beside it (attention.json)."""
    from minitx.views.attention_page import page_data, write_attention_page

    data = page_data(
        examples,
        f"{name}: attention",
        cfg.model.window,
        cfg.model.dilation,
        cfg.model.attention,
        cfg.model.positions,
    )
    write_attention_page(data, path)
    path.with_suffix(".json").write_text(json.dumps(data, ensure_ascii=False) + "\n", "utf-8")
    typer.echo(f"wrote {path}")
    typer.echo(f"wrote {path.with_suffix('.json')}")


@app.command()
def heads(
    run_dir: Path = RUN_DIR,
    split: str = typer.Option(
        "validation", "--split", help="The split to measure on (a role or the data's split name)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the first N examples of the split."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write [default: RUN_DIR/heads]; with --prune, the new run directory.",
    ),
    prune: int | None = typer.Option(
        None, "--prune", min=1, help="Remove the N least important heads into a new run (--out)."
    ),
    prune_until: float | None = typer.Option(
        None,
        "--prune-until",
        min=0.0,
        help="Remove heads while the validation metric drops by at most this much (e.g. 0.5 BLEU).",
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="With --prune: only heads of this kind (encoder_self, decoder_self, cross).",
    ),
    checkpoint: str = CHECKPOINT,
    quiet: bool = QUIET,
) -> None:
    """Measure which attention heads matter; prune the least.

    For every head of every layer and kind: the change in the validation metric and loss when it
    alone is masked, its gradient-based importance (Michel et al., 2019), and statistics of its
    attention (Clark et al., 2019): entropy, mean distance, the weight on the previous, same and
    next token and on the start and end tokens. Writes heads.json, heads.csv and heads.html
    (layer × head heatmaps) and prints the heads, the least important first. Masking runs the
    split once per head: --limit keeps it short.

    With --prune N the N least important heads are removed, 10% of all heads at a time with the
    importance measured again after each round (Michel et al.), and the smaller model is written
    as a new run directory: evaluate, translate, fine-tune or export it like any run. With
    --prune-until DROP, rounds go on while the validation metric stays within DROP of the full
    model's.

    Examples:

    \b
      minitx heads runs/quickstart
      minitx heads runs/multi30k_de_en_raw --limit 300
      minitx heads runs/multi30k_de_en_raw --prune 7 --kind encoder_self --out runs/pruned
      minitx heads runs/multi30k_de_en_raw --prune-until 0.5 --limit 300 --out runs/pruned
    """
    import datasets

    from minitx.api import load
    from minitx.heads.measure import measure_heads
    from minitx.views.heads_page import heads_table, write_heads

    start(quiet)
    datasets.disable_progress_bars()
    pruning = prune is not None or prune_until is not None
    if prune is not None and prune_until is not None:
        raise UserError("give --prune N or --prune-until DROP, not both")
    if kind is not None and not pruning:
        raise UserError("--kind chooses which heads --prune removes; give --prune N")
    if pruning and out is None:
        raise UserError("--prune writes a new run directory: name it with --out")
    model = load(run_dir, checkpoint)
    if pruning:
        from minitx.heads.pruning import prune_run

        found = prune_run(model, split, limit, kind, out, count=prune, max_drop=prune_until)
        metric = next(iter(found["before"]))
        typer.echo(
            f"removed {len(found['removed'])} heads: {split} {metric} "
            f"{found['before'][metric]} → {found['after'][metric]}, loss "
            f"{found['before']['loss']} → {found['after']['loss']}"
        )
        typer.echo(f"model.pruned_heads: {found['pruned_heads']}")
        typer.echo(f"wrote {out}")
        return
    report = measure_heads(model, split, limit)
    paths = write_heads(report, out or model.run.heads_dir)
    metric = report["metric"]
    typer.echo(
        f"{report['examples']} examples of {split}; every head: {metric} "
        f"{report['baseline'][metric]}, loss {report['baseline']['loss']}"
    )
    typer.echo(heads_table(report))
    for path in paths:
        typer.echo(f"wrote {path}")


@app.command()
def report(run_dir: Path = RUN_DIR, checkpoint: str = CHECKPOINT, quiet: bool = QUIET) -> None:
    """Write RUN_DIR/report.html, one page about the run.

    What was trained, the curves, every evaluated split with its signature, the confusion matrix (classification) or the best and worst sample translations
    linked to their attention (translation). Works on a run that is still training.

    Example:

    \b
      minitx eval runs/quickstart && minitx report runs/quickstart
    """
    import datasets

    from minitx.views.report import build_report

    start(quiet)
    datasets.disable_progress_bars()
    from minitx.api import load

    run = RunDir(run_dir)
    for path in build_report(run, checkpoint, lambda: load(run.root, checkpoint)):
        typer.echo(f"wrote {path}")


@app.command()
def plot(run_dir: Path = RUN_DIR, quiet: bool = QUIET) -> None:
    """Draw the training curves as PNG.

    Training loss, learning rate and validation metrics from metrics.jsonl.

    Example:

    \b
      minitx plot runs/quickstart     # writes runs/quickstart/plots/curves.png
    """
    from minitx.metrics import read_metrics
    from minitx.views.plots import plot_curves

    start(quiet)
    run = RunDir(run_dir)
    events = read_metrics(run)
    run.plots_dir.mkdir(exist_ok=True)
    path = run.curves_file
    panels = plot_curves(events, path, run.name)
    typer.echo(f"wrote {path} ({', '.join(panels)})")
