"""Issue 15 with real daemons: ``cat`` / ``get -o -`` stream the file to stdout while it
downloads, ``| head`` ends cleanly and cancels the stream, ``cancel`` stops a transfer.

The uploader's ``--upload-limit`` makes each download last a few seconds, so that "while it
downloads" and "while it runs" are states a test can observe. Every subprocess has a timeout;
every daemon is killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fakes import short_tmp_dir
from .test_end_to_end import CLI, COMMAND_TIMEOUT, Daemon

pytest.importorskip("p2pstore.node")

SMALL_CHUNKS = 'chunk_size = "64KiB"\n'
"""Stripes of 256 KiB (k = 4): the first bytes can be sent long before the file is in."""

LIMIT = "2MiB/s"
SIZE = 8 * 1024 * 1024 + 4321
"""About 4 s at the uploader's limit: far longer than the first stripe (~0.1 s)."""

POLL = 0.1


@pytest.fixture
def pair() -> Iterator[tuple[Daemon, Daemon, Path, str]]:
    """A rate-limited uploader holding one file (not dispersed) and an empty downloader."""
    with short_tmp_dir() as base:
        daemons: list[Daemon] = []
        try:
            uploader = Daemon(base / "up", settings=SMALL_CHUNKS, extra=("--upload-limit", LIMIT))
            daemons.append(uploader)
            downloader = Daemon(base / "down", bootstrap=uploader.info["udp"])
            daemons.append(downloader)
            source = base / "payload.bin"
            source.write_bytes(os.urandom(SIZE))
            file_id = uploader.json("put", str(source), "--no-disperse")["file_id"]
            yield uploader, downloader, source, file_id
        finally:
            for d in daemons:
                d.kill()


def _transfers(daemon: Daemon) -> list[dict[str, Any]]:
    running: list[dict[str, Any]] = daemon.json("transfers")["transfers"]
    return running


def _wait_for(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _running(daemon: Daemon, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A CLI command with piped stdout/stderr, killed on the way out if still running."""
    proc = subprocess.Popen(
        [*CLI, *args, "--data-dir", str(daemon.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize("command", [["cat"], ["get", "-o", "-"], ["get", "-o", "/dev/stdout"]])
def test_stdout_gets_the_first_bytes_while_the_file_still_downloads(
    pair: tuple[Daemon, Daemon, Path, str], command: list[str]
) -> None:
    _, downloader, source, file_id = pair
    args = [command[0], file_id, *command[1:]]
    with _running(downloader, *args) as proc:
        assert proc.stdout is not None
        first = proc.stdout.read(1)
        assert first == source.read_bytes()[:1]
        # The first byte is out, and the daemon is still downloading the rest.
        running = [t for t in _transfers(downloader) if t["kind"] == "cat"]
        assert len(running) == 1, running
        assert running[0]["bytes_total"] == SIZE
        assert running[0]["bytes_done"] < SIZE
        rest = proc.stdout.read()
        _, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 0, err
    assert first + rest == source.read_bytes()
    assert err == b""


def test_head_closing_the_pipe_ends_cleanly_and_cancels_the_stream(
    pair: tuple[Daemon, Daemon, Path, str],
) -> None:
    _, downloader, source, file_id = pair
    script = (
        f"{' '.join(map(repr, CLI))} cat {file_id} --data-dir {downloader.data_dir}"
        ' | head -c 100; echo "status=${PIPESTATUS[0]}" >&2'
    )
    piped = subprocess.run(["bash", "-c", script], capture_output=True, timeout=COMMAND_TIMEOUT)
    assert piped.stdout == source.read_bytes()[:100]
    assert piped.stderr.strip().splitlines() == [b"status=0"], piped.stderr
    # The daemon noticed the client leave and stopped the download.
    _wait_for(lambda: not _transfers(downloader), "the stream to be cancelled")
    log = Path(downloader.stderr.name).read_text()
    assert "Traceback" not in log


def test_cancel_stops_a_get_which_fails_with_exit_5_and_keeps_its_chunks(
    pair: tuple[Daemon, Daemon, Path, str],
) -> None:
    _, downloader, _, file_id = pair
    target = downloader.data_dir.parent / "out.bin"
    with _running(downloader, "get", file_id, "-o", str(target)) as proc:
        running = _wait_for(
            lambda: [t for t in _transfers(downloader) if t["kind"] == "get" and t["bytes_done"]],
            "the get to start",
        )
        transfer_id = running[0]["id"]
        cancelled = downloader.json("cancel", str(transfer_id))
        assert cancelled == {
            "transfer": transfer_id,
            "kind": "get",
            "name": "out.bin",
            "cancelled": True,
        }
        _, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 5
    assert err.decode().strip() == "error: cancelled (by p2pstore cancel)"
    assert not target.exists()
    assert not _transfers(downloader)
    # Like a failed get: its verified chunks are listed as an unfinished download.
    partial = downloader.json("ls")["partial"]
    assert [p["file_id"] for p in partial] == [file_id]
    again = downloader.cli("cancel", str(transfer_id))
    assert again.returncode == 1
    assert f"no transfer {transfer_id} is running" in again.stderr


def test_cancel_of_a_cat_ends_its_stream_with_exit_5(
    pair: tuple[Daemon, Daemon, Path, str],
) -> None:
    _, downloader, source, file_id = pair
    with _running(downloader, "cat", file_id) as proc:
        assert proc.stdout is not None
        assert proc.stdout.read(1) == source.read_bytes()[:1]
        (running,) = _transfers(downloader)
        assert running["kind"] == "cat"
        downloader.json("cancel", str(running["id"]))
        out = proc.stdout.read()  # through the buffer read(1) filled; EOF once cat exits
        _, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 5
    assert b"cancelled" in err
    assert len(out) < SIZE - 1
    assert source.read_bytes()[1 : 1 + len(out)] == out, "what was written is the file's start"
    assert not _transfers(downloader)


def test_cancel_refuses_a_bad_number(pair: tuple[Daemon, Daemon, Path, str]) -> None:
    _, downloader, _, _ = pair
    bad = downloader.cli("cancel", "x1")
    assert bad.returncode == 2
    as_json = downloader.cli("cancel", "0", "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stderr)["exit_code"] == 2


def test_cancel_of_a_gateway_read_ends_the_response_early_without_a_traceback(
    pair: tuple[Daemon, Daemon, Path, str],
) -> None:
    uploader, _, source, file_id = pair
    reader = Daemon(
        uploader.data_dir.parent / "web",
        bootstrap=uploader.info["udp"],
        extra=("--http", "127.0.0.1:0"),
    )
    try:
        host, port = reader.info["http"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=COMMAND_TIMEOUT)
        conn.request("GET", f"/files/{file_id}")
        response = conn.getresponse()
        assert response.status == 200
        first = response.read(1)
        (running,) = _transfers(reader)
        assert running["kind"] == "gateway"
        reader.json("cancel", str(running["id"]))
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
        assert first + info.value.partial == source.read_bytes()[: 1 + len(info.value.partial)]
        conn.close()
        assert not _transfers(reader)
        assert "Traceback" not in Path(reader.stderr.name).read_text()
    finally:
        reader.kill()
