"""Test doubles for the control server and the CLI: a scripted node and a daemon in a thread.

The fake node implements exactly the methods of the node contract that the control server calls;
it is for tests of the control protocol and of the CLI's printing and error handling only.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import trio
from typer.testing import CliRunner, Result

from p2pstore.cli import app
from p2pstore.control import serve_control
from p2pstore.errors import FileUnavailableError, NotDispersedError
from p2pstore.node import (
    DownloadProgress,
    GetResult,
    NodeStatus,
    PeerProgress,
    PhaseProgress,
    PutProgress,
    StreamResult,
)

FILE_ID = bytes(range(32))
OTHER_ID = bytes(32)


@dataclass(frozen=True)
class FakeFileInfo:
    file_id: bytes
    name: str
    size: int
    pinned: bool
    chunks_present: int
    chunks_total: int


class FakeContact(NamedTuple):
    node_id: bytes
    host: str
    port: int


@dataclass(frozen=True)
class FakeProvider:
    node_id: bytes
    host: str
    tcp_port: int


@dataclass(frozen=True)
class FakeVerifyReport:
    checked: int
    corrupt: list[bytes]
    missing: int


@dataclass
class FakeNode:
    """A node whose answers are fixed; ``calls`` records (method, args) in order."""

    node_id: bytes = b"\x11" * 32
    udp_address: tuple[str, int] = ("127.0.0.1", 18468)
    tcp_address: tuple[str, int] = ("127.0.0.1", 19000)
    data_dir: Path = Path("/nonexistent")
    calls: list[tuple[str, Any]] = field(default_factory=list)
    put_delay: float = 0.0
    put_forever: bool = False
    no_peers: bool = False  # put(disperse=True) stores but cannot disperse
    verify_delay: float = 0.0
    corrupt: list[bytes] = field(default_factory=list)
    put_started: trio.Event = field(default_factory=trio.Event)
    put_cancelled: trio.Event = field(default_factory=trio.Event)
    files: dict[bytes, FakeFileInfo] = field(default_factory=dict)
    transfers: list[Any] = field(default_factory=list)  # node.Transfer objects for status
    store: Any = None  # something with quota_bytes: status reports it
    put_contents: bytes = b""  # what the last put read from its path
    get_error: OSError | None = None  # get raises this (with a temp file's name, say)
    peer_hints: list[tuple[str, int] | None] = field(default_factory=list)  # one per get

    async def put(
        self,
        path: Path,
        *,
        disperse: bool = True,
        name: str | None = None,
        progress: Callable[[PutProgress], None] | None = None,
    ) -> bytes:
        self.calls.append(("put", (path, disperse)))
        self.put_started.set()
        try:
            size = path.stat().st_size
            for i in range(1, 4):
                if progress is not None:
                    progress(PutProgress("store", i, 3))
                await trio.sleep(self.put_delay)
            if self.put_forever:
                await trio.sleep_forever()
        except trio.Cancelled:
            self.put_cancelled.set()
            raise
        self.put_contents = path.read_bytes()
        self.files[FILE_ID] = FakeFileInfo(FILE_ID, name or path.name, size, False, 3, 3)
        if disperse and self.no_peers:
            raise NotDispersedError(FILE_ID, "no peer to disperse to was found")
        return FILE_ID

    async def get(
        self,
        file_id: bytes,
        dest: Path,
        *,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
    ) -> GetResult:
        self.calls.append(("get", (file_id, dest)))
        self.peer_hints.append(peer_hint)
        if file_id != FILE_ID:
            raise FileUnavailableError(f"file {file_id.hex()[:16]} has no reachable providers")
        data = b"hello world\n"
        if self.get_error is not None:
            raise self.get_error
        if progress is not None:
            progress(DownloadProgress(len(data), len(data), {"127.0.0.1:1": PeerProgress(12, 1.0)}))
        target = dest / "hello.txt" if dest.is_dir() else dest
        target.write_bytes(data)
        return GetResult(file_id, target, len(data), {"127.0.0.1:1": len(data)}, 0.5, 0, 0.1)

    async def stream_file(
        self,
        file_id: bytes,
        send: Callable[[bytes], Awaitable[None]],
        *,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
    ) -> StreamResult:
        """What ``get``'s file holds, sent in two pieces (as a streamed download would)."""
        self.calls.append(("stream_file", file_id))
        self.peer_hints.append(peer_hint)
        if file_id != FILE_ID:
            raise FileUnavailableError(f"file {file_id.hex()[:16]} has no reachable providers")
        if self.get_error is not None:
            raise self.get_error
        data = b"hello world\n"
        for piece in (data[:6], data[6:]):
            await send(piece)
            if progress is not None:
                progress(DownloadProgress(len(piece), len(data), {}))
        return StreamResult(file_id, "hello.txt", len(data), len(data), 0.5, False)

    async def find_providers(self, key: bytes) -> list[FakeProvider]:
        self.calls.append(("find_providers", key))
        if key == OTHER_ID:
            raise RuntimeError("boom: an unexpected bug")
        return [FakeProvider(b"\x22" * 32, "127.0.0.1", 19001)]

    def file_info(self, file_id: bytes) -> FakeFileInfo | None:
        self.calls.append(("file_info", file_id))
        return self.files.get(file_id)

    def list_files(self) -> list[FakeFileInfo]:
        self.calls.append(("list_files", None))
        return list(self.files.values())

    def pin(self, file_id: bytes) -> None:
        self.calls.append(("pin", file_id))

    def unpin(self, file_id: bytes) -> None:
        self.calls.append(("unpin", file_id))

    async def gc(self) -> int:
        self.calls.append(("gc", None))
        return 4096

    async def verify(
        self, *, progress: Callable[[PhaseProgress], None] | None = None
    ) -> FakeVerifyReport:
        self.calls.append(("verify", None))
        if progress is not None:
            progress(PhaseProgress("hashing", 0, 7 << 20, "bytes"))
        await trio.sleep(self.verify_delay)
        if progress is not None:
            progress(PhaseProgress("hashing", 7 << 20, 7 << 20, "bytes"))
        return FakeVerifyReport(checked=7, corrupt=list(self.corrupt), missing=0)

    def status(self) -> NodeStatus:
        self.calls.append(("status", None))
        return NodeStatus(
            self.node_id,
            self.udp_address,
            self.tcp_address,
            3,
            2,
            1234,
            len(self.files),
            list(self.transfers),
        )

    def peers(self) -> list[FakeContact]:
        self.calls.append(("peers", None))
        return [FakeContact(b"\x33" * 32, "127.0.0.1", 18469)]


@asynccontextmanager
async def fake_open_node(data_dir: Path, **overrides: Any) -> AsyncIterator[FakeNode]:
    """Stands in for ``open_node`` in daemon tests; records the overrides on the node."""
    node = FakeNode(data_dir=data_dir)
    node.calls.append(("open", overrides))
    yield node


@contextmanager
def short_tmp_dir() -> Iterator[Path]:
    """A temporary directory with a short path (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="p2pcli-", dir="/tmp") as d:
        yield Path(d)


@contextmanager
def daemon_in_thread(node: FakeNode, data_dir: Path) -> Iterator[FakeNode]:
    """Serve ``node`` on ``data_dir``'s control socket from a Trio run in a background thread.

    For CLI tests: the CLI under test calls ``trio.run`` itself in the main thread.
    """
    started = threading.Event()
    stop: list[Callable[[], None]] = []
    errors: list[BaseException] = []

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, node, data_dir)
            token = trio.lowlevel.current_trio_token()
            stop.append(lambda: token.run_sync_soon(nursery.cancel_scope.cancel))
            started.set()

    def target() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(10), "fake daemon did not start"
    if errors:
        raise errors[0]
    try:
        yield node
    finally:
        stop[0]()
        thread.join(10)
        assert not thread.is_alive()
        assert not errors, errors
        assert not os.path.exists(data_dir / "control.sock")


def invoke(*args: str) -> Result:
    """Run the CLI in-process (typer's test runner) with ``args``."""
    return CliRunner().invoke(app, list(args))
