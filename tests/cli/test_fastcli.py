"""Issue 14: the console script's fast path (:mod:`p2pstore.fastcli`) answers ``status``, ``ls``,
``peers``, ``transfers`` and ``--version`` exactly as the full Typer CLI does (same stdout, stderr
and exit status), hands everything else to it, and imports neither Typer, Pydantic nor Rich for
a plain ``status``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2pstore.cli import app
from p2pstore.config import DATA_DIR_ENV
from p2pstore.fastcli import FAST_COMMANDS, FastInvocation, parse_fast, run
from p2pstore.node import Transfer

from .fakes import FILE_ID, FakeFileInfo, FakeNode, daemon_in_thread, short_tmp_dir

ROOT = Path(__file__).resolve().parents[2]

# {D}: the data directory of a running daemon; {N}: one with no daemon.
FAST_LINES = [
    "status --data-dir {D}",
    "--data-dir {D} status",
    "--data-dir={D} status",
    "status --data-dir={D}",
    "--json status --data-dir {D}",
    "status --json --data-dir {D}",
    "--data-dir {N} status --data-dir {D}",  # after the command wins
    "--data-dir {N} --data-dir {D} status",  # the later one wins
    "-q status --data-dir {D} --quiet",
    "status --data-dir {N}",
    "--json status --data-dir {N}",
    "status --json --data-dir {N}",
    "ls --data-dir {D}",
    "--json ls --data-dir {D}",
    "ls --data-dir {N}",
    "peers --data-dir {D}",
    "peers --json --data-dir {D}",
    "transfers --data-dir {D}",
    "--json transfers --data-dir {D}",
    "transfers --data-dir {N}",
    "--version",
    "--json --version",
    "--data-dir {D} --version",
    "--version status",
    "--version put nothing-here",
]

FALLBACK_LINES = [
    "",
    "--help",
    "status --help",
    "status --version",
    "status extra",
    "status -v --data-dir {D}",
    "-v status --data-dir {D}",
    "status --log-json --data-dir {D}",
    "status --data-dir",
    "status --data-dir=",
    "--data-dir -q status",
    "status --bogus",
    "status -- --data-dir {D}",
    "stat --data-dir {D}",
    "ls {H}",
    "gc --data-dir {D}",
    "--version --bogus",
    "--version --data-dir",
]


@pytest.fixture
def no_daemon_dir() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d


def _argv(line: str, data_dir: Path, other: Path) -> list[str]:
    values = {"D": str(data_dir), "N": str(other), "H": FILE_ID.hex()}
    return [word.format(**values) for word in line.split()]


def _typer(argv: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, argv)
    return result.exit_code, result.stdout, result.stderr


def _fast(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    invocation = parse_fast(argv)
    assert invocation is not None, argv
    capsys.readouterr()
    code = run(invocation)
    out, err = capsys.readouterr()
    return code, out, err


def _busy_node(node: FakeNode) -> None:
    """Files and transfers to print (a finished transfer: its rate and ETA do not move)."""
    node.files[FILE_ID] = FakeFileInfo(FILE_ID, "movie.mkv", 30 << 20, True, 3, 3)
    started = time.time() - 1000
    done = Transfer("get", FILE_ID, "movie.mkv", 30 << 20, 30 << 20, 3, started=started)
    hidden = Transfer("put", None, ".tmp-1234", 5 << 20, 5 << 20, 0, started=started)
    node.transfers = [done, hidden]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
@pytest.mark.parametrize("line", FAST_LINES)
def test_the_fast_path_prints_what_the_full_cli_prints(
    line: str,
    busy: bool,
    daemon: FakeNode,
    data_dir: Path,
    no_daemon_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if busy:
        _busy_node(daemon)
    argv = _argv(line, data_dir, no_daemon_dir)
    fast = _fast(argv, capsys)
    assert fast == _typer(argv)
    assert fast[1] or fast[2]  # the comparison is of something


@pytest.mark.parametrize("use_env", [True, False])
def test_the_data_dir_from_the_environment(
    use_env: bool,
    daemon: FakeNode,
    data_dir: Path,
    no_daemon_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir if use_env else no_daemon_dir))
    for argv in (["status"], ["--json", "ls"]):
        fast = _fast(argv, capsys)
        assert fast == _typer(argv)
        assert fast[0] == (0 if use_env else 1)
    if not use_env:  # the hint names no --data-dir when none was given
        assert "start one with: p2pstore daemon\n" in fast[2] or '"exit_code": 1' in fast[2]


@pytest.mark.parametrize("line", FALLBACK_LINES)
def test_what_the_fast_path_does_not_fully_understand_goes_to_the_full_cli(
    line: str, data_dir: Path, no_daemon_dir: Path
) -> None:
    assert parse_fast(_argv(line, data_dir, no_daemon_dir)) is None


def test_parse_fast_reads_the_options_as_the_full_cli_does() -> None:
    assert parse_fast(["--data-dir", "a", "status", "--data-dir", "b", "--json"]) == (
        FastInvocation("status", Path("b"), True)
    )
    assert parse_fast(["--json", "peers"]) == FastInvocation("peers", None, True)
    assert parse_fast(["-q", "--version", "ls"]) == FastInvocation(None)
    assert set(FAST_COMMANDS) == {"status", "ls", "peers", "transfers"}


def test_the_console_script_is_the_fast_path() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["scripts"]["p2pstore"] == "p2pstore.fastcli:main"


SLOW = ("typer", "pydantic", "rich", "click", "trio._core", "numpy", "cryptography")

_SCRIPT = """
import json, sys
from p2pstore.fastcli import main
sys.argv = ["p2pstore", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "slow": [m for m in %r if m in sys.modules]}))
"""


def _script(*args: str) -> tuple[list[str], dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT % (SLOW,), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    report: dict[str, object] = json.loads(lines[-1])
    return lines[:-1], report


def test_status_imports_no_typer_pydantic_or_rich() -> None:
    with short_tmp_dir() as data_dir, daemon_in_thread(FakeNode(), data_dir):
        lines, report = _script("--data-dir", str(data_dir), "status")
    assert report == {"code": 0, "slow": []}
    assert lines[0] == f"node ID:        {'11' * 32}"


def test_the_script_falls_back_to_the_full_cli() -> None:
    lines, report = _script("--help")
    assert report["code"] == 0
    assert "typer" in report["slow"]  # type: ignore[operator]
    assert any(line.startswith("Usage: p2pstore") for line in lines)
