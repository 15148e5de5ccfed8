"""Issue 15, pipes: ``put -`` reads standard input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2pstore.cli import app

from .fakes import FILE_ID, FakeNode

runner = CliRunner()
HEX = FILE_ID.hex()


def invoke(*args: str, stdin: bytes = b"") -> Result:
    return runner.invoke(app, list(args), input=stdin)


def test_put_dash_reads_standard_input(daemon: FakeNode, data_dir: Path) -> None:
    before = set(os.listdir(data_dir))
    data = os.urandom(3 * (1 << 20) + 17)  # several read blocks
    result = invoke("put", "-", "--name", "notes.txt", "--data-dir", str(data_dir), stdin=data)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == HEX
    assert daemon.put_contents == data
    assert daemon.files[FILE_ID].name == "notes.txt"
    assert set(os.listdir(data_dir)) == before, "the temporary copy of stdin is removed"


def test_put_dash_without_a_name_is_called_stdin(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("put", "-", "--json", "--data-dir", str(data_dir), stdin=b"hi\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file_id"] == HEX
    assert daemon.put_contents == b"hi\n"
    assert daemon.files[FILE_ID].name == "stdin"


def test_put_with_a_name_renames_a_regular_file(daemon: FakeNode, data_dir: Path) -> None:
    src = data_dir / "a.bin"
    src.write_bytes(b"abc")
    result = invoke("put", str(src), "--name", "b.bin", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert daemon.files[FILE_ID].name == "b.bin"


@pytest.mark.parametrize("name", ["", "a/b"])
def test_put_rejects_a_bad_name(name: str, daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("put", "-", "--name", name, "--data-dir", str(data_dir), stdin=b"x")
    assert result.exit_code == 2
    assert "--name" in result.output
    assert not daemon.calls


def test_put_dash_without_a_daemon_fails_before_reading(data_dir: Path) -> None:
    result = invoke("put", "-", "--data-dir", str(data_dir), stdin=b"x" * 1000)
    assert result.exit_code == 1
    assert "no p2pstore daemon is running" in result.stderr
    assert os.listdir(data_dir) == []


def test_put_several_files_prints_one_id_each(daemon: FakeNode, data_dir: Path) -> None:
    paths = []
    for name in ("a", "b", "c"):
        (data_dir / name).write_bytes(name.encode())
        paths.append(str(data_dir / name))
    result = invoke("put", *paths, "--no-disperse", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [HEX, HEX, HEX]  # the fake gives every file one ID
    assert [args[0].name for op, args in daemon.calls if op == "put"] == ["a", "b", "c"]
    assert result.stderr.count("share: p2p://") == 3
    as_json = json.loads(invoke("put", *paths, "--json", "--data-dir", str(data_dir)).stdout)
    assert [f["file_id"] for f in as_json["files"]] == [HEX, HEX, HEX]


def test_put_checks_every_file_before_storing_any(daemon: FakeNode, data_dir: Path) -> None:
    (data_dir / "a").write_bytes(b"a")
    result = invoke("put", str(data_dir / "a"), str(data_dir / "nope"), "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert "no such file" in result.stderr
    assert not [c for c in daemon.calls if c[0] == "put"]


@pytest.mark.parametrize("extra", [["--name", "x"], ["-"]])
def test_put_several_refuses_name_and_stdin(
    extra: list[str], daemon: FakeNode, data_dir: Path
) -> None:
    (data_dir / "a").write_bytes(b"a")
    (data_dir / "b").write_bytes(b"b")
    result = invoke(
        "put", str(data_dir / "a"), str(data_dir / "b"), *extra, "--data-dir", str(data_dir)
    )
    assert result.exit_code == 2
    assert not [c for c in daemon.calls if c[0] == "put"]


@pytest.mark.parametrize("command", [["get", HEX, "-o", "-"], ["cat", HEX]])
def test_get_to_stdout_writes_the_verified_file(
    command: list[str], daemon: FakeNode, data_dir: Path
) -> None:
    before = set(os.listdir(data_dir))
    result = runner.invoke(app, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"hello world\n"
    assert result.stderr == ""
    assert set(os.listdir(data_dir)) == before, "the temporary copy is removed"
    as_json = runner.invoke(app, [*command, "--json", "--data-dir", str(data_dir)])
    assert as_json.stdout_bytes == b"hello world\n"
    assert json.loads(as_json.stderr)["size"] == 12


def test_get_to_stdout_of_an_unavailable_file_writes_nothing(
    daemon: FakeNode, data_dir: Path
) -> None:
    other = "00" * 32
    before = set(os.listdir(data_dir))
    result = runner.invoke(app, ["cat", other, "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert result.stderr.startswith("error: ")
    assert set(os.listdir(data_dir)) == before
