"""The man page is generated from the CLI and is valid roff."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from p2pstore.manpage import render

COMMANDS = [
    "daemon", "put", "get", "ls", "status", "transfers", "peers", "providers", "pin", "unpin",
    "rm", "gc", "verify", "check", "config", "demo",
]  # fmt: skip


def test_every_command_and_option_is_in_the_man_page() -> None:
    page = render()
    assert page.startswith(".TH P2PSTORE 1")
    for command in COMMANDS:
        assert f".SS p2pstore {command}\n" in page
    for option in ("--data-dir DIR", "--quiet, -q", "--bootstrap HOST:PORT", "--output, -o PATH"):
        assert f"\\fB{option}\\fR" in page
    assert "\\fB--help\\fR" not in page.split(".SH COMMANDS")[1]


def test_the_module_writes_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "p2pstore.manpage"], capture_output=True, text=True, check=True
    )
    assert out.stdout == render()


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_groff_reads_it_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z"], input=render(), capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stderr == ""
