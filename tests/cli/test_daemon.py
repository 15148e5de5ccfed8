"""The daemon runner in-process (with a fake node factory): readiness, signals, locking."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pstore import control
from p2pstore.config import DaemonSettings
from p2pstore.control import DaemonAlreadyRunningError
from p2pstore.daemon import ReadyInfo, data_dir_lock, run_daemon

from .fakes import fake_open_node, short_tmp_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d / "node"  # not created yet: the daemon creates it


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_runs_until_signal_and_cleans_up(data_dir: Path, signum: int) -> None:
    ready: list[ReadyInfo] = []
    is_ready = trio.Event()
    settings = DaemonSettings(host="127.0.0.1", udp_port=0, tcp_port=0, k=3)

    def on_ready(info: ReadyInfo) -> None:
        ready.append(info)
        is_ready.set()

    async def drive() -> None:
        with trio.fail_after(10):
            await is_ready.wait()
            status = await control.call(data_dir, "status")
            assert status["node_id"] == "11" * 32
            os.kill(os.getpid(), signum)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive)
        with trio.fail_after(10):
            got = await run_daemon(data_dir, settings, on_ready, open_node=fake_open_node)
    assert got == signum
    assert len(ready) == 1
    assert ready[0].as_json() == {
        "node_id": "11" * 32,
        "udp": "127.0.0.1:18468",
        "tcp": "127.0.0.1:19000",
    }
    assert "127.0.0.1:19000" in ready[0].as_text()
    assert ready[0].control_socket == data_dir / control.CONTROL_SOCKET_NAME
    assert not ready[0].control_socket.exists()
    assert oct(data_dir.stat().st_mode & 0o777) == oct(0o700)


async def test_overrides_reach_the_node_factory(data_dir: Path) -> None:
    seen: dict[str, object] = {}

    def factory(path: Path, **overrides: object) -> object:
        seen.update(overrides, path=path)
        return fake_open_node(path, **overrides)

    settings = DaemonSettings(bootstrap=(("127.0.0.1", 1),), upload_limit=5, quota=10)

    def ready(info: ReadyInfo) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with trio.fail_after(10):
        await run_daemon(data_dir, settings, ready, open_node=factory)
    assert seen == {
        "path": data_dir,
        "host": "0.0.0.0",
        "udp_port": 8468,
        "tcp_port": 9000,
        "bootstrap": (("127.0.0.1", 1),),
        "upload_limit": 5,
        "quota_bytes": 10,
    }


def test_lock_is_exclusive(data_dir: Path) -> None:
    with data_dir_lock(data_dir), pytest.raises(DaemonAlreadyRunningError), data_dir_lock(data_dir):
        pass  # pragma: no cover
    with data_dir_lock(data_dir):
        pass


async def test_second_daemon_on_the_same_directory_is_refused(data_dir: Path) -> None:
    with data_dir_lock(data_dir), pytest.raises(DaemonAlreadyRunningError):
        await run_daemon(data_dir, DaemonSettings(), lambda info: None, open_node=fake_open_node)
