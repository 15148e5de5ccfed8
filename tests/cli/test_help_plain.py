"""Issue 15: every command's help is plain: arguments by their bare names (``FILE_ID``, not
``{FILE_ID}`` or ``FILE_ID <str>``), no Typer type tags, each default said once."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from p2pstore.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]

TYPE_TAG = re.compile(r"<[a-z][a-z_\[\], |]*>")


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_command_is_checked() -> None:
    assert {"status", "get", "put", "cat", "rm", "providers", "check", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain(command: str | None) -> None:
    text = _help(*([command] if command else []))
    assert not TYPE_TAG.search(text), text
    usage = text.splitlines()[0]
    assert usage.startswith("Usage: p2pstore"), text
    assert "{" not in usage, usage
    assert "}" not in usage, usage
    flat = " ".join(text.split())
    assert not re.search(r"\[default: [^\]]*\]\.?\s*\[default:", flat), text


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("get", "Usage: p2pstore get [OPTIONS] FILE_ID"),
        ("put", "Usage: p2pstore put [OPTIONS] FILE..."),
        ("providers", "Usage: p2pstore providers [OPTIONS] KEY"),
    ],
)
def test_arguments_are_named_plainly(command: str, usage: str) -> None:
    text = _help(command)
    assert text.splitlines()[0] == usage
    name = re.escape(usage.split()[-1])
    assert re.search(rf"^  {name}  \S", text, re.MULTILINE), text  # listed, with no type tag
