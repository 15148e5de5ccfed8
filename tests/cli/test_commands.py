"""The CLI's argument handling, output and every user-error message (Typer's CliRunner).

Commands that need a daemon run against a fake node served on a real control socket from a
background thread; daemon start-up errors use the real node.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2pstore.cli import app
from p2pstore.config import CONFIG_FILE_NAME, DATA_DIR_ENV
from p2pstore.links import encode_id

from .fakes import FILE_ID, OTHER_ID, FakeNode

runner = CliRunner()
HEX = FILE_ID.hex()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""


# ----------------------------------------------------------------------------- no daemon

NEEDS_DAEMON = [
    ["status"],
    ["ls"],
    ["peers"],
    ["gc"],
    ["verify"],
    ["providers", HEX],
    ["pin", HEX],
    ["unpin", HEX],
    ["get", HEX],
]


@pytest.mark.parametrize("args", NEEDS_DAEMON)
def test_no_daemon_running(args: list[str], data_dir: Path) -> None:
    result = invoke(*args, "--data-dir", str(data_dir))
    assert_one_line_error(
        result, 1, "no p2pstore daemon is running", f"p2pstore daemon --data-dir {data_dir}"
    )


def test_no_daemon_for_put(data_dir: Path) -> None:
    src = data_dir / "f"
    src.write_bytes(b"x")
    result = invoke("put", str(src), "--data-dir", str(data_dir))
    assert_one_line_error(result, 1, "p2pstore daemon")


def test_no_daemon_with_data_dir_from_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    result = invoke("status")
    assert_one_line_error(result, 1, str(data_dir), "start one with: p2pstore daemon")


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "args",
    [
        ["get", "xyz"],
        ["pin", "0" * 65],
        ["get", "g" * 64],
        ["pin", "xyz"],
        ["unpin", ""],
        ["providers", "00" * 33],
    ],
)
def test_bad_ids_are_usage_errors(args: list[str], data_dir: Path) -> None:
    result = invoke(*args, "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "64 hexadecimal" in " ".join(result.output.split())


@pytest.mark.parametrize("what", ["missing", "fifo"])
def test_put_of_a_missing_file_is_a_usage_error(what: str, data_dir: Path) -> None:
    target = data_dir / "nope"
    if what == "fifo":  # a directory is stored as one (put DIR); a FIFO is neither
        os.mkfifo(target)
    result = invoke("put", str(target), "--data-dir", str(data_dir))
    assert_one_line_error(result, 2, str(target))


def test_get_into_a_missing_directory_is_a_usage_error(data_dir: Path) -> None:
    result = invoke("get", HEX, "-o", str(data_dir / "a" / "b"), "--data-dir", str(data_dir))
    assert_one_line_error(result, 2, "no such directory")


@pytest.mark.parametrize(
    "bootstrap", ["localhost", "host:", ":8468", "host:0", "host:99999", "host:port", "[::1"]
)
def test_bad_bootstrap_syntax(bootstrap: str, data_dir: Path) -> None:
    result = invoke("daemon", "--bootstrap", bootstrap, "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--bootstrap" in result.output
    assert not (data_dir / "identity.key").exists()


@pytest.mark.parametrize("rate", ["fast", "5XB/s", "-1MB/s", "5MB/h"])
def test_bad_upload_limit(rate: str, data_dir: Path) -> None:
    result = invoke("daemon", "--upload-limit", rate, "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert "--upload-limit" in result.output
    assert "invalid rate" in result.output


@pytest.mark.parametrize("size", ["big", "12QQ", "1.5B", "-4MiB"])
def test_bad_demo_size(size: str) -> None:
    result = invoke("demo", "--size", size)
    assert result.exit_code == 2
    assert "--size" in result.output


@pytest.mark.parametrize("nodes", ["2", "100"])
def test_bad_demo_node_count(nodes: str) -> None:
    result = invoke("demo", "--nodes", nodes, "--size", "1KiB")
    assert result.exit_code == 2
    assert "--nodes" in result.output


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_bad_port(port: str, data_dir: Path) -> None:
    result = invoke("daemon", "--udp-port", port, "--data-dir", str(data_dir))
    assert result.exit_code == 2


def test_bad_settings_file_is_a_usage_error(data_dir: Path) -> None:
    (data_dir / CONFIG_FILE_NAME).write_text("udp_port = 'eighty'\n")
    result = invoke("daemon", "--data-dir", str(data_dir))
    assert_one_line_error(result, 2, CONFIG_FILE_NAME, "udp_port")


@pytest.mark.parametrize(
    "command",
    ["daemon", "put", "get", "ls", "status", "peers", "providers", "pin", "unpin", "gc", "verify",
     "demo", "rm", "transfers", "config", "cat", "cancel"],
)  # fmt: skip
def test_every_command_has_help_and_data_dir(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "--data-dir" in result.output
    if command not in ("daemon",):
        assert "--json" in result.output


# ----------------------------------------------------------------------------- with a daemon


def test_status(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("status", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "11" * 32 in result.stdout
    assert "127.0.0.1:18468" in result.stdout
    assert "contacts:       3 in the DHT routing table" in result.stdout
    as_json = json.loads(invoke("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert as_json["routing_table_size"] == 3
    assert as_json["tcp"] == "127.0.0.1:19000"


def test_status_json_calls_open_connections_connections(daemon: FakeNode, data_dir: Path) -> None:
    """Issue 15: "peers" in `status --json` was the open connections while `peers` lists the
    DHT contacts; the text says "connections", so does the JSON now."""
    text = invoke("status", "--data-dir", str(data_dir)).stdout
    as_json = json.loads(invoke("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert "peers" not in as_json
    assert f"connections:    {as_json['connections']} open to other nodes" in text
    assert as_json["connections"] == daemon.status().peers


def test_put_sends_the_absolute_path(
    daemon: FakeNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "doc.txt").write_bytes(b"hello")
    monkeypatch.chdir(data_dir)
    result = invoke("put", "doc.txt", "--no-disperse", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == HEX
    assert daemon.calls[0] == ("put", (data_dir / "doc.txt", False))
    result = invoke("put", "doc.txt", "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout) == {
        "file_id": HEX,
        "size": 5,
        "chunks": 3,
        "dispersed": True,
        "not_dispersed": None,
        "link": f"p2p://{encode_id(FILE_ID)}?name=doc.txt&peer=127.0.0.1:19000",
    }
    puts = [args for op, args in daemon.calls if op == "put"]
    assert puts[-1] == (data_dir / "doc.txt", True)


def test_put_that_could_not_disperse_fails_and_says_stored_locally_only(
    daemon: FakeNode, data_dir: Path
) -> None:
    """Issue 13 item 3: a put asked to disperse exited 0 with the file on this node only."""
    daemon.no_peers = True
    (data_dir / "doc.txt").write_bytes(b"hello")
    result = invoke("put", str(data_dir / "doc.txt"), "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    assert result.stdout.strip() == HEX, "the file is stored: its ID is still printed"
    *_, last = result.stderr.strip().splitlines()  # after the share link: the file is here
    assert last.startswith("error: stored locally only, not dispersed: no peer")
    result = invoke("put", str(data_dir / "doc.txt"), "--json", "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["file_id"] == HEX
    assert out["dispersed"] is False
    assert out["not_dispersed"].startswith("stored locally only")
    result = invoke(
        "put", str(data_dir / "doc.txt"), "--no-disperse", "--json", "--data-dir", str(data_dir)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dispersed"] is False, "not asked, not done, no error"


def test_get_default_output_uses_the_manifest_name(
    daemon: FakeNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = data_dir / "out"
    out.mkdir()
    (data_dir / "hello.txt").write_bytes(b"hello world\n")
    monkeypatch.chdir(data_dir)
    invoke("put", "hello.txt", "--data-dir", str(data_dir))  # the fake now lists hello.txt
    monkeypatch.chdir(out)
    result = invoke("get", HEX.upper(), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert (out / "hello.txt").read_bytes() == b"hello world\n"
    assert "saved" in result.stdout
    assert "from 1 peer)" in result.stdout
    assert os.listdir(out) == ["hello.txt"]
    # a second get does not overwrite
    again = invoke("get", HEX, "--data-dir", str(data_dir))
    assert_one_line_error(again, 1, "File exists", "-o")
    assert os.listdir(out) == ["hello.txt"]


def test_get_to_a_path(daemon: FakeNode, data_dir: Path) -> None:
    target = data_dir / "x.bin"
    result = invoke("get", HEX, "-o", str(target), "--json", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(target)
    assert target.read_bytes() == b"hello world\n"


def test_get_of_an_unavailable_file_fails_with_one_line(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("get", OTHER_ID.hex(), "-o", str(data_dir / "y"), "--data-dir", str(data_dir))
    assert_one_line_error(result, 1, "no reachable providers")
    assert not (data_dir / "y").exists()


def test_internal_daemon_error_is_one_line(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("providers", OTHER_ID.hex(), "--data-dir", str(data_dir))
    assert_one_line_error(result, 1, "boom")


def test_listing_commands(daemon: FakeNode, data_dir: Path) -> None:
    peers = invoke("peers", "--data-dir", str(data_dir))
    assert peers.exit_code == 0
    assert "33" * 32 in peers.stdout
    assert "18469" in peers.stdout
    assert peers.stdout.splitlines()[0].strip() == "1 peer"  # the title: singular for one
    providers = invoke("providers", HEX, "--data-dir", str(data_dir))
    assert f"1 provider of {HEX[:16]}..." in providers.stdout
    prov = json.loads(invoke("providers", HEX, "--json", "--data-dir", str(data_dir)).stdout)
    assert prov["providers"][0]["tcp_port"] == 19001
    assert "no files" in invoke("ls", "--data-dir", str(data_dir)).stdout
    assert json.loads(invoke("ls", "--json", "--data-dir", str(data_dir)).stdout) == {"files": []}


def test_pin_unpin_gc(daemon: FakeNode, data_dir: Path) -> None:
    assert invoke("pin", HEX, "--data-dir", str(data_dir)).stdout.strip() == f"pinned {HEX}"
    assert invoke("unpin", HEX, "--data-dir", str(data_dir)).stdout.strip() == f"unpinned {HEX}"
    assert invoke("gc", "--data-dir", str(data_dir)).stdout.strip() == "freed 4.0 KiB"
    assert json.loads(invoke("gc", "--json", "--data-dir", str(data_dir)).stdout) == {
        "freed_bytes": 4096
    }
    assert ("pin", FILE_ID) in daemon.calls
    assert ("unpin", FILE_ID) in daemon.calls


def test_verify_exit_code_reflects_corruption(daemon: FakeNode, data_dir: Path) -> None:
    ok = invoke("verify", "--data-dir", str(data_dir))
    assert ok.exit_code == 0
    assert (
        ok.stdout.strip() == "checked 7 chunks: 0 corrupt, 0 missing, 0 repaired, 0 still damaged"
    )
    daemon.corrupt = [b"\x01" * 32]
    bad = invoke("verify", "--json", "--data-dir", str(data_dir))
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["corrupt"] == ["01" * 32]


# ----------------------------------------------------------------------------- daemon start-up


def test_daemon_already_running(daemon: FakeNode, data_dir: Path) -> None:
    from p2pstore.daemon import data_dir_lock

    with data_dir_lock(data_dir):
        result = invoke("daemon", "--data-dir", str(data_dir))
    assert_one_line_error(result, 1, "already running")


def test_port_in_use(data_dir: Path) -> None:
    pytest.importorskip("p2pstore.node")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        result = invoke(
            "daemon", "--host", "127.0.0.1", "--udp-port", str(port), "--tcp-port", "0",
            "--data-dir", str(data_dir),
        )  # fmt: skip
    assert_one_line_error(result, 1, "Address already in use", str(port))
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        result = invoke(
            "daemon", "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", str(port),
            "--data-dir", str(data_dir),
        )  # fmt: skip
    assert_one_line_error(result, 1, "Address already in use", f"TCP 127.0.0.1:{port}")
    assert not (data_dir / "control.sock").exists()


def test_unreachable_bootstrap(data_dir: Path) -> None:
    pytest.importorskip("p2pstore.node")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never answers
        port = silent.getsockname()[1]
        result = invoke(
            "daemon", "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
            "--bootstrap", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
        )  # fmt: skip
    assert_one_line_error(result, 1, f"127.0.0.1:{port}")
    assert not (data_dir / "control.sock").exists()


def test_log_json_lines(data_dir: Path) -> None:
    pytest.importorskip("p2pstore.node")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        result = invoke(
            "daemon", "-v", "--log-json", "--host", "127.0.0.1", "--udp-port", str(port),
            "--data-dir", str(data_dir),
        )  # fmt: skip
    assert result.exit_code == 1
    *logs, last = result.stderr.strip().splitlines()
    assert last.startswith("error: daemon: cannot listen on UDP")
    assert logs
    assert json.loads(logs[0])["message"] == f"starting a node for {data_dir}"
    for line in logs:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(entry)
