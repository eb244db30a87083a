"""The Typer application and the options several commands share, declared once."""

from __future__ import annotations

import typer

from minitx import __version__
from minitx.progress import show_status
from minitx.run_dir import CHECKPOINT_CHOICES

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


def start(quiet: bool) -> None:
    """What every command sets up for this process before its work."""
    from minitx import runtime

    show_status(quiet)
    runtime.keep_freed_memory()
