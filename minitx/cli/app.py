"""The Typer application and the options several commands share, declared once."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import typer

from minitx import __version__
from minitx.config import DecodeConfig
from minitx.progress import show_status
from minitx.run_dir import CHECKPOINT_CHOICES

app = typer.Typer(
    help=(
        "Train and evaluate small Transformers, for translation or text classification, from one "
        "YAML file.\n\n"
        "\b\n"
        "  minitx train configs/quickstart.yaml\n"
        "  minitx eval runs/quickstart --split test\n"
        '  minitx translate runs/quickstart "three hundred forty two"\n'
        '  minitx predict runs/sst2 "a gorgeous , witty , seductive movie ."\n\n'
        "Each command's --help shows its options and examples; docs/ has the guide."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain Click help: paragraphs rewrapped to the terminal, examples kept as written (`\b`),
    # and no markup, which would eat `[export]` in "pip install 'minitx[export]'".
    rich_markup_mode=None,
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


def decode_option(name: str) -> Any:
    """The command-line option of the decode option `name`, from its declaration in DecodeConfig:
    flag, bounds and help. Its default, None, keeps the run's decode setting."""
    (declared,) = [option for option in dataclasses.fields(DecodeConfig) if option.name == name]
    metadata, flag = declared.metadata, "--" + name.replace("_", "-")
    if typing.get_type_hints(DecodeConfig)[name] is bool:  # --no-sample undoes a run's sample
        flag = f"{flag}/--no-{flag[2:]}"
    meaning = metadata["help"]
    return typer.Option(
        None,
        metadata.get("flag", flag),
        min=metadata.get("min"),
        max=metadata.get("max"),
        help=f"{meaning[:1].upper()}{meaning[1:]}; default: the run's decode.{name}.",
        rich_help_panel="Decoding",
    )


BEAM = decode_option("beam_size")


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
