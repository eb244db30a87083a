"""Every --help reads cleanly: a one-line summary per command, examples kept as written, and no
text lost to markup (such as the extra's name in pip install 'minitx[export]')."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from minitx.cli.app import app

COMMANDS = [command.name or command.callback.__name__ for command in app.registered_commands]


def _help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "minitx", *args, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_command_list_shows_each_summary_whole():
    listed = _help().split("Commands:")[1]
    assert sorted(re.findall(r"^  (\w+) ", listed, flags=re.M)) == sorted(COMMANDS)
    assert "..." not in listed  # a summary cut short by the terminal width


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_shows_an_example_and_loses_no_text(command):
    text = _help(command)
    assert "Example" in text
    example = text.split("Example", 1)[1]
    assert f"minitx {command} " in example or "minitx" in example
    if "pip install" in text:  # markup would have eaten the extra's name, "[export]"
        assert re.search(r"'minitx\[\w+\]'", text), text
