"""The command line: each command loads a config or a run directory, calls the library, prints.

One module per command group registers its commands on the app (minitx/cli/app.py); `main` turns
every way a command can fail into one line on stderr and a documented exit code.
"""

from __future__ import annotations

import os
import sys

import typer

from minitx.cli.app import app
from minitx.errors import ReportedElsewhere, TrainingInterrupted, UserError

# The command modules register their commands on `app`, in the order `minitx --help` lists them.
# isort: off
from minitx.cli import train, sweep, evaluate, translate, predict, look, ship  # noqa: F401, E402
# isort: on

try:  # Typer 0.28 and later raise their own usage errors and no longer use Click
    from typer import TyperException as UsageProblem
except ImportError:  # Typer 0.12-0.27: Click's
    from click.exceptions import ClickException as UsageProblem


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
