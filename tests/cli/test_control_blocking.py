"""``control.call_blocking``: the CLI's plain-socket client gives the same results and errors as
the async ``control.call``, against the real control server and against misbehaving ones."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore import control
from p2pstore.control import ControlError, DaemonNotRunningError, encode_message
from p2pstore.wire.framing import encode_frame

from .fakes import FILE_ID, OTHER_ID, FakeNode, daemon_in_thread


@pytest.fixture
def served(data_dir: Path) -> Iterator[FakeNode]:
    with daemon_in_thread(FakeNode(), data_dir) as node:
        yield node


def test_results_and_progress_match_the_async_client(served: FakeNode, data_dir: Path) -> None:
    assert control.call_blocking(data_dir, "status")["node_id"] == "11" * 32
    served.put_delay = 0.15
    src = data_dir / "f.txt"
    src.write_bytes(b"abc")
    events: list[dict[str, Any]] = []
    put = control.call_blocking(
        data_dir, "put", {"path": str(src), "disperse": True}, on_progress=events.append
    )
    assert put == {
        "file_id": FILE_ID.hex(),
        "size": 3,
        "chunks": 3,
        "dispersed": True,
        "not_dispersed": None,
        "name": "f.txt",
    }
    assert events
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)


def test_error_replies_carry_code_and_message(served: FakeNode, data_dir: Path) -> None:
    with pytest.raises(ControlError) as info:
        control.call_blocking(data_dir, "get", {"file_id": OTHER_ID, "dest": None, "cwd": "/"})
    assert info.value.code == "unavailable"
    with pytest.raises(ControlError) as info:
        control.call_blocking(data_dir, "put", {"path": "/nonexistent/file", "disperse": True})
    assert info.value.code == "not_found"


def test_no_daemon_and_a_stale_socket_file(data_dir: Path) -> None:
    with pytest.raises(DaemonNotRunningError):
        control.call_blocking(data_dir, "status")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(data_dir / control.CONTROL_SOCKET_NAME))
    stale.close()  # the file stays, nobody listens
    with pytest.raises(DaemonNotRunningError):
        control.call_blocking(data_dir, "status")


def _fake_daemon(data_dir: Path, behave: Callable[[socket.socket], None]) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(data_dir / control.CONTROL_SOCKET_NAME))
    listener.listen(1)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)  # the request
                behave(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("behave", "code"),
    [
        (lambda c: None, "disconnected"),  # closes without a reply
        (lambda c: c.sendall(encode_frame(b"\xc1\xc1")), "protocol"),  # not msgpack
        (lambda c: c.sendall(encode_message({"type": "nonsense"})), "protocol"),
        (lambda c: c.sendall(encode_message({"type": "result", "data": {}})[:-1]), "protocol"),
        (lambda c: c.sendall(b"\xff\xff\xff\xff"), "protocol"),  # an absurd frame length
    ],
)
def test_a_misbehaving_daemon_is_a_clear_error(
    data_dir: Path, behave: Callable[[socket.socket], None], code: str
) -> None:
    thread = _fake_daemon(data_dir, behave)
    with pytest.raises(ControlError) as info:
        control.call_blocking(data_dir, "status")
    assert info.value.code == code
    thread.join(5)


def test_a_silent_daemon_times_out(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "OP_TIMEOUT", 0.3)
    thread = _fake_daemon(data_dir, lambda c: time.sleep(1.0))
    started = time.monotonic()
    with pytest.raises(ControlError) as info:
        control.call_blocking(data_dir, "status")
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 0.9
    thread.join(5)
