"""End to end with real processes: ``p2pstore daemon`` x3 on 127.0.0.1, and ``p2pstore demo``.

Every subprocess has a timeout and every daemon is killed in a ``finally`` if it is still running.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fakes import short_tmp_dir

pytest.importorskip("p2pstore.node")  # these need the real node

CLI = [sys.executable, "-c", "from p2pstore.cli import main; main()"]
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0


class Daemon:
    """One ``p2pstore daemon --json`` process and the addresses it printed."""

    def __init__(
        self,
        data_dir: Path,
        bootstrap: str | None = None,
        *,
        settings: str = "",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir()
        if settings:  # p2pstore.toml
            (data_dir / "p2pstore.toml").write_text(settings)
        args = [
            *CLI, "daemon", "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
            "--json", "--data-dir", str(data_dir),
        ]  # fmt: skip
        if bootstrap:
            args += ["--bootstrap", bootstrap]
        args += extra
        self.stderr = (data_dir.parent / f"{data_dir.name}.stderr").open("wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr)
        self.info = self._read_ready_line()

    def _read_ready_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "daemon did not report readiness in time"
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                assert chunk, f"daemon exited early: {self.proc.wait(5)}"
                buffer += chunk
        info: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
        return info

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd=cwd,
        )

    def json(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        result = self.cli(*args, "--json", cwd=cwd)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def terminate(self) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def base() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d


def test_three_daemons(base: Path) -> None:
    daemons: list[Daemon] = []
    try:
        first = Daemon(base / "a")
        daemons.append(first)
        assert set(first.info) == {"node_id", "udp", "tcp"}
        assert first.info["udp"].startswith("127.0.0.1:")
        daemons += [Daemon(base / name, bootstrap=first.info["udp"]) for name in ("b", "c")]
        uploader, downloader = daemons[1], daemons[2]

        source = base / "payload.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
        put = uploader.json("put", str(source))
        assert put["size"] == source.stat().st_size
        file_id = put["file_id"]
        assert len(file_id) == 64

        out = base / "out"
        out.mkdir()
        got = downloader.json("get", file_id, cwd=out)
        assert Path(got["path"]) == out / "payload.bin"
        assert (out / "payload.bin").read_bytes() == source.read_bytes()
        explicit = downloader.cli("get", file_id, "-o", str(out / "copy.bin"))
        assert explicit.returncode == 0, explicit.stderr
        assert (out / "copy.bin").read_bytes() == source.read_bytes()
        # Issue 15: cat writes the verified file to stdout; a share link names the file.
        piped = subprocess.run(
            [*CLI, "cat", file_id, "--data-dir", str(downloader.data_dir)],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == source.read_bytes()
        assert put["link"].startswith("p2p://")
        linked = downloader.cli("get", put["link"], "-o", str(out / "linked.bin"))
        assert linked.returncode == 0, linked.stderr
        assert (out / "linked.bin").read_bytes() == source.read_bytes()

        statuses = [d.json("status") for d in daemons]
        for d, status in zip(daemons, statuses, strict=True):
            assert status["node_id"] == d.info["node_id"]
            assert status["udp"] == d.info["udp"]
            assert status["tcp"] == d.info["tcp"]
            assert status["routing_table_size"] >= 1
        assert statuses[0]["routing_table_size"] >= 2
        assert statuses[2]["files"] >= 1

        providers = downloader.json("providers", file_id)["providers"]
        provider_ids = {p["node_id"] for p in providers}
        assert uploader.info["node_id"] in provider_ids
        tcp_ports = {p["tcp_port"] for p in providers}
        assert int(uploader.info["tcp"].rsplit(":", 1)[1]) in tcp_ports

        peers = first.json("peers")["peers"]
        assert {p["node_id"] for p in peers} >= {
            uploader.info["node_id"],
            downloader.info["node_id"],
        }

        for d in daemons:
            code, seconds = d.terminate()
            assert code == 0, (d.stderr.name, Path(d.stderr.name).read_text())
            assert seconds < STOP_TIMEOUT
            assert not (d.data_dir / "control.sock").exists()
        after = first.cli("status")
        assert after.returncode == 1
        assert "p2pstore daemon" in after.stderr
        assert len(after.stderr.strip().splitlines()) == 1
    finally:
        for d in daemons:
            d.kill()


def test_daemon_refuses_a_second_instance_on_the_same_data_dir(base: Path) -> None:
    daemon = Daemon(base / "a")
    try:
        second = subprocess.run(
            [*CLI, "daemon", "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
             "--data-dir", str(daemon.data_dir)],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert "Traceback" not in second.stderr
        assert daemon.json("status")["node_id"] == daemon.info["node_id"]
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.kill()


def _demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "demo", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_small() -> None:
    result = _demo("--size", "4MiB", "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["size"] == 4 * 1024 * 1024
    assert report["uploader"] not in report["bytes_from_peers"]


@pytest.mark.slow
def test_demo_default() -> None:
    started = time.monotonic()
    result = _demo(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout
    assert "peer" in result.stdout
    assert time.monotonic() - started < 60
