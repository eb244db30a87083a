"""`minitx sweep`: search config values with Optuna, each trial an ordinary run."""

from __future__ import annotations

from pathlib import Path

import typer

from minitx.cli.app import QUIET, SETS, app, start
from minitx.errors import UserError


@app.command()
def sweep(
    config: Path | None = typer.Argument(None, help="YAML config file: the base of every trial."),
    space: Path | None = typer.Option(
        None, "--space", help="YAML file of config keys with ranges or choices (docs/sweeps.md)."
    ),
    trials: int = typer.Option(
        20, "--trials", min=1, help="Finished trials the study should hold."
    ),
    time_per_trial: str | None = typer.Option(
        None, "--time-per-trial", help="Each trial's train.max_time, e.g. 10m."
    ),
    study: Path | None = typer.Option(
        None, "--study", help="The study's directory [default: sweeps/<config name>]."
    ),
    jobs: int = typer.Option(
        1, "--jobs", min=1, help="Trials run at once, sharing the cores [default: 1]."
    ),
    show: Path | None = typer.Option(
        None, "--show", help="Only show this study: its table, best.yaml and report.html."
    ),
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
) -> None:
    """Search config values with Optuna; each trial is a run.

    Trials sample with TPE and are pruned by the median rule; trial K trains into STUDY/trial-K.
    The objective is the best validation value of train.early_stopping_metric. The study is kept
    in STUDY/study.db: run the same command again to go on after a stop. At the end (and with
    --show) it prints the trials, writes STUDY/best.yaml for `minitx train` and STUDY/report.html.
    Needs pip install 'minitx[sweep]' (Optuna).

    Examples:

    \b
      minitx sweep configs/quickstart.yaml --space configs/spaces/quickstart.yaml --trials 10 --time-per-trial 2m
      minitx sweep --show sweeps/quickstart
      minitx train sweeps/quickstart/best.yaml
    """
    from minitx.sweep.study import SweepRequest, run_sweep

    start(quiet)
    if show is not None:
        if config is not None or space is not None:
            raise UserError("--show takes only a study directory; leave out CONFIG and --space")
        _show(show)
        return
    if config is None or space is None:
        raise UserError("give a CONFIG and a --space (or --show STUDY_DIR)")
    study_dir = study or Path("sweeps") / config.stem
    request = SweepRequest(config, tuple(overrides), space, study_dir, trials, time_per_trial, jobs)
    run_sweep(request, say=lambda line: typer.echo(line, err=True))
    _show(study_dir)


def _show(study_dir: Path) -> None:
    from minitx.sweep.results import best_row, load_sweep, table, trial_rows, write_best_config
    from minitx.views.sweep_page import write_sweep_page

    sweep = load_sweep(study_dir)
    rows = trial_rows(sweep)
    typer.echo(table(sweep, rows))
    best = best_row(sweep, rows)
    if best is None:
        typer.echo("no finished trial yet: no best.yaml")
    else:
        path = write_best_config(sweep, best)
        typer.echo(
            f"best: trial {best.number}, validation {sweep.metric} {best.value:g}; "
            f"wrote {path} (minitx train {path})"
        )
    typer.echo(f"wrote {write_sweep_page(sweep, rows)}")
