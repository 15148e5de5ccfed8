"""Issue 15: a command-line error (unknown option, missing argument, unknown command, a bad
value) is one ``error:`` line with a pointer to the command's help, exit 2, like every other
error; under ``--json`` one JSON object (unchanged). Checked through the full CLI (CliRunner
and its entry point) and the console script's fast path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2pstore.fastcli import parse_fast, run

from .fakes import invoke

CASES = [
    (["ls", "--bogus"], "error: no such option: --bogus", "see p2pstore ls --help"),
    (["get"], "error: missing argument 'FILE_ID'", "see p2pstore get --help"),
    (["frobnicate"], "error: no such command 'frobnicate'", "see p2pstore --help"),
    (
        ["get", "zz"],
        "error: invalid value for FILE_ID: 'zz' is not an ID (expected 64 hexadecimal characters)",
        "see p2pstore get --help",
    ),
    (
        ["daemon", "--udp-port", "99999"],
        "error: invalid value for '--udp-port': 99999 is not a port (expected 0-65535)",
        "see p2pstore daemon --help",
    ),
    (["cancel", "x1"], "error: invalid value for ID:", "see p2pstore cancel --help"),
]


@pytest.mark.parametrize(("argv", "start", "hint"), CASES)
def test_a_usage_error_is_one_line_with_a_hint(argv: list[str], start: str, hint: str) -> None:
    result = invoke(*argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    assert lines[0].endswith(f"({hint})")


def test_through_the_entry_point_too() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from p2pstore.cli import main; main()", "status", "--nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: no such option: --nope (see p2pstore status --help)"
    ]


def test_under_json_it_stays_one_json_object() -> None:
    result = invoke("--json", "get", "zz")
    assert result.exit_code == 2
    error = json.loads(result.stderr)
    assert error == {
        "error": "invalid value for FILE_ID: 'zz' is not an ID (expected 64 hexadecimal"
        " characters)",
        "exit_code": 2,
    }


def test_the_fast_path_says_the_same(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    argv = ["get", "zz", "--data-dir", str(data_dir)]
    invocation = parse_fast(argv)
    assert invocation is not None
    assert run(invocation) == 2
    assert capsys.readouterr().err == invoke(*argv).stderr


def test_no_spelling_guess_that_points_elsewhere() -> None:
    result = invoke("get", "--bogus", "x")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no such option: --bogus (see p2pstore get --help)"
    ]


def test_a_parser_error_under_json_reads_as_the_text_line() -> None:
    text = invoke("get").stderr.strip()
    error = json.loads(invoke("--json", "get").stderr)
    assert error == {"error": "missing argument 'FILE_ID'", "exit_code": 2}
    assert text == f"error: {error['error']} (see p2pstore get --help)"


def test_cancel_of_a_bad_number_gives_one_hint() -> None:
    line = invoke("cancel", "abc").stderr.strip()
    assert line.count("see") == 1, line
    assert "p2pstore transfers" in line
