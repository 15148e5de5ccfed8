from __future__ import annotations

from typer.testing import CliRunner

from p2pstore import __version__
from p2pstore.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"p2pstore {__version__}"


def test_help_lists_the_program() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "p2pstore" in result.stdout
