"""`minitx train` and `minitx average`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from minitx.cli.app import QUIET, RUN_DIR, SETS, app, start
from minitx.errors import UserError
from minitx.run_dir import RunDir


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
    """Train a model, or resume its run.

    A run directory that already holds a checkpoint is resumed where it stopped.

    Examples:

    \b
      minitx train configs/quickstart.yaml
      minitx train configs/multi30k_de_en_raw.yaml --set data.path=../shared/data/multi30k
      minitx train configs/quickstart.yaml --set train.max_steps=500 --run-dir runs/short --fresh --yes
      minitx train configs/multi30k_de_en_raw.yaml --nproc 4     # same as torchrun --standalone --nproc_per_node 4 -m minitx train ...
    """
    from minitx.config import load_config
    from minitx.runtime import end_with_parent
    from minitx.training import distributed

    end_with_parent()  # a trial of `minitx sweep` stops with the sweep
    start(quiet)
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
    """Average kept checkpoints into `averaged`.

    The kept step_N checkpoints go into RUN_DIR/checkpoints/averaged (use it with
    --checkpoint averaged). Training keeps them with train.keep_last; train.average_last does this
    at the end of training.

    Examples:

    \b
      minitx average runs/multi30k_de_en_raw --last 5
      minitx eval runs/multi30k_de_en_raw --checkpoint averaged --beam 5
    """
    from minitx.training.average import average_snapshots

    start(quiet)
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
