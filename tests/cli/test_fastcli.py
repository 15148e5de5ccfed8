"""Issue 14: the console script's fast path (:mod:`p2pstore.fastcli`) answers ``status``, ``ls``,
``peers``, ``transfers`` and ``--version`` exactly as the full Typer CLI does (same stdout, stderr
and exit status), hands everything else to it, and imports neither Typer, Pydantic nor Rich for
a plain ``status``."""

from __future__ import annotations

import json
import re
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

from .fakes import FILE_ID, OTHER_ID, FakeFileInfo, FakeNode, daemon_in_thread, short_tmp_dir

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
    assert set(FAST_COMMANDS) == {"status", "ls", "peers", "transfers", "get", "cat", "put"}


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


# get and cat (issue 14: their start was typer's ~0.25 s). {O}: a fresh output path per run,
# {W}: a fresh empty directory, {M}: a directory that does not exist, {X}: an unknown file,
# {L}: a share link with a peer hint, {P}: a prefix of FILE_ID (local only when busy).
FAST_TRANSFER_LINES = [
    "get {H} -o {O} --data-dir {D}",
    "--data-dir {D} get {H} --output {O}",
    "get {H} --output={O} --data-dir {D} -q",
    "--json get {H} -o {O} --data-dir {D}",
    "get {H} -o {W} --data-dir {D}",
    "get {H} -o {W}/ --data-dir {D}",
    "get {H} -o {M}/x --data-dir {D}",
    "get {H} -o {M}/ --data-dir {D}",
    "get {X} -o {O} --data-dir {D}",
    "--json get {X} -o {O} --data-dir {D}",
    "get zz --data-dir {D}",
    "--json get zz --data-dir {D}",
    "get p2p://nonsense --data-dir {D}",
    "get ab --data-dir {D}",
    "get {P} -o {O} --data-dir {D}",
    "get {L} -o {O} --data-dir {D}",
    "get {H} -o {O} --data-dir {N}",
    "--json get {H} -o {O} --data-dir {N}",
    "get {H} -o - --data-dir {D}",
    "--json get {H} -o - --data-dir {D}",
    "cat {H} --data-dir {D}",
    "--json cat {H} --data-dir {D}",
    "cat {L} --data-dir {D}",
    "-q cat {X} --data-dir {D}",
    "cat {H} --data-dir {N}",
    # put: {F} and {G} are files in the run's directory
    "put {F} --no-disperse --data-dir {D}",
    "--json put {F} --no-disperse --data-dir {D}",
    "-q put {F} --no-disperse --data-dir {D}",
    "put {F} --name other.txt --no-disperse --data-dir {D}",
    "put {F} --name=other.txt --data-dir {D}",
    "put {F} --name=a/b --data-dir {D}",
    "--json put {F} --name=a/b --data-dir {D}",
    "put {F} {G} --name x --data-dir {D}",
    "put {F} - --data-dir {D}",
    "put {F} {G} --no-disperse --data-dir {D}",
    "--json put {F} {G} --no-disperse --data-dir {D}",
    "put {M}/nope --data-dir {D}",
    "put {F} --data-dir {N}",
    "--json put {F} --data-dir {N}",
]

TRANSFER_FALLBACK_LINES = [
    "get --data-dir {D}",  # missing argument: typer's usage error
    "cat",
    "get {H} {H}",
    "cat {H} -o x",
    "-o x get {H}",
    "get {H} -o",
    "get {H} -o -x",
    "get {H} -ox",
    "get -- {H}",
    "get {H} --bogus",
    "get {H} -v",
    "get --help",
    "put",
    "put --data-dir {D}",
    "put x -o y",
    "put x --name",
    "put x --name -y",
    "put x --output=y",
    "--no-disperse put x",
    "get {H} --name x",
    "put x -v",
]


def _normal(text: str, run_dir: Path) -> str:
    """Output with what differs between two runs (their directory, a wall-clock time) fixed."""
    text = text.replace(str(run_dir), "{R}")
    return re.sub(r'"started_at": [0-9.e+-]+', '"started_at": T', text)


def _transfer_argv(line: str, values: dict[str, str], run_dir: Path) -> list[str]:
    fresh = run_dir / "w"
    fresh.mkdir()
    (run_dir / "doc.txt").write_bytes(b"hello")
    (run_dir / "two.txt").write_bytes(b"hello again")
    files = {"F": str(run_dir / "doc.txt"), "G": str(run_dir / "two.txt")}
    values = {**values, **files, "O": str(run_dir / "out.bin"), "W": str(fresh)}
    return [word.format(**values) for word in line.split()]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
@pytest.mark.parametrize("line", FAST_TRANSFER_LINES)
def test_get_and_cat_on_the_fast_path_do_what_the_full_cli_does(
    line: str,
    busy: bool,
    daemon: FakeNode,
    data_dir: Path,
    no_daemon_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from p2pstore.links import ShareLink

    if busy:
        _busy_node(daemon)
    values = {
        "D": str(data_dir),
        "N": str(no_daemon_dir),
        "H": FILE_ID.hex(),
        "X": OTHER_ID.hex(),
        "M": str(tmp_path / "missing"),
        "L": str(ShareLink(FILE_ID, "hello.txt", ("127.0.0.1", 4242))),
        "P": FILE_ID.hex()[:8],
    }
    outcomes = []
    for name, runner in (("fast", "fast"), ("typer", "typer")):
        run_dir = tmp_path / name
        run_dir.mkdir()
        monkeypatch.chdir(run_dir)
        argv = _transfer_argv(line, values, run_dir)
        if runner == "fast":
            code, out, err = _fast(argv, capsys)
        else:
            code, out, err = _typer(argv)
        written = sorted(
            (str(p.relative_to(run_dir)), p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()
        )
        outcomes.append((code, _normal(out, run_dir), _normal(err, run_dir), written))
    assert outcomes[0] == outcomes[1]
    assert any(outcomes[0][1:])  # the comparison is of something
    if "{L}" in line:  # both passed the link's peer hint to the daemon
        assert daemon.peer_hints
        assert set(daemon.peer_hints) == {("127.0.0.1", 4242)}


@pytest.mark.parametrize("line", TRANSFER_FALLBACK_LINES)
def test_what_get_and_cat_do_not_fully_understand_goes_to_the_full_cli(
    line: str, data_dir: Path
) -> None:
    argv = [w.format(D=str(data_dir), H=FILE_ID.hex()) for w in line.split()]
    assert parse_fast(argv) is None


def test_parse_fast_reads_get_as_the_full_cli_does() -> None:
    assert parse_fast(["get", "abcd", "-o", "a", "--output=b", "-q"]) == FastInvocation(
        "get", None, False, True, "abcd", "b"
    )
    assert parse_fast(["--json", "cat", "abcd", "--data-dir", "x"]) == FastInvocation(
        "cat", Path("x"), True, False, "abcd"
    )
    assert parse_fast(["get", "abcd", "-o", "-"]) == FastInvocation(
        "get", None, False, False, "abcd", "-"
    )


def test_parse_fast_reads_put_as_the_full_cli_does() -> None:
    assert parse_fast(["put", "a", "-", "--no-disperse", "--name=n", "-q"]) == FastInvocation(
        "put", None, False, True, None, "n", ("a", "-"), True
    )


def test_get_imports_no_typer_pydantic_or_rich(tmp_path: Path) -> None:
    out = tmp_path / "got.txt"
    with short_tmp_dir() as data_dir, daemon_in_thread(FakeNode(), data_dir):
        lines, report = _script("--data-dir", str(data_dir), "get", FILE_ID.hex(), "-o", str(out))
        assert report == {"code": 0, "slow": []}
        assert lines[0].startswith(f"saved {out} (12 B in 0.50 s")
        lines, report = _script("--data-dir", str(data_dir), "cat", FILE_ID.hex())
        assert report == {"code": 0, "slow": []}
    assert out.read_bytes() == b"hello world\n"
    assert lines[0] == "hello world"
