"""``p2pstore demo``: a whole network in one process, end to end, with nothing to set up.

It starts ``nodes`` nodes on 127.0.0.1 (free ports, one temporary data directory each, all
bootstrapped from the first), writes a random file, stores it on one node with dispersal, stops
that uploader, fetches the file on another node with a progress display, verifies its SHA-256
against the original, and reports how many bytes came from which peer and the throughput.
Every node runs in its own cancel scope, so one can be stopped while the others keep running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .config import format_size
from .control import to_plain
from .errors import ConfigError, P2PStoreError

log = logging.getLogger(__name__)

DEFAULT_NODES = 5
"""Bootstrap node, uploader, downloader and two more holders of shares."""

DEFAULT_SIZE = 32 * 1024 * 1024
"""Large enough to span several stripes and peers, small enough to finish in seconds."""

MIN_NODES = 3
"""Uploader and downloader plus at least one other node to fetch from once the uploader stops."""

MAX_NODES = 32
"""Every node is sockets and tasks in this one process; more is a load test, not a demo."""

MAX_SIZE = 4 * 1024 * 1024 * 1024
"""The demo writes the file to a temporary directory twice; 4 GiB is the sane ceiling."""

DEMO_TIMEOUT = 120.0
"""Seconds the whole demo may take (it normally needs a few); beyond that something is stuck."""

STOP_TIMEOUT = 15.0
"""Seconds to wait for the stopped uploader to finish shutting down."""

GENERATE_BATCH = 1024 * 1024
"""Bytes of random data generated and hashed per step (few, large thread hops)."""

PLAIN_PROGRESS_STEP = 0.25
"""Without a terminal, a progress line is printed at every quarter of the download."""

OpenNode = Callable[..., AbstractAsyncContextManager[Any]]


class DemoError(P2PStoreError):
    """The demo could not run to the end (a node failed to start, the transfer failed...)."""


@dataclass
class _NodeHandle:
    name: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)
    node: Any = None


@dataclass(frozen=True)
class DemoReport:
    """The outcome: which file, whether it verified, and where its bytes came from."""

    file_id: bytes
    size: int
    verified: bool
    seconds: float
    throughput: float
    uploader: str
    downloader: str
    bytes_from_peers: dict[str, int]
    resumed_chunks: int = 0

    def as_json(self) -> dict[str, Any]:
        """JSON-ready summary (the ``--json`` output of ``p2pstore demo``)."""
        return {
            "file_id": self.file_id.hex(),
            "size": self.size,
            "verified": self.verified,
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 1),
            "uploader": self.uploader,
            "downloader": self.downloader,
            "bytes_from_peers": dict(self.bytes_from_peers),
            "resumed_chunks": self.resumed_chunks,
        }


def _default_open_node() -> OpenNode:
    from .node import open_node

    return open_node


def _generate(path: Path, size: int) -> bytes:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(GENERATE_BATCH, remaining))
            digest.update(block)
            fh.write(block)
            remaining -= len(block)
    return digest.digest()


def _hash_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(GENERATE_BATCH):
            digest.update(block)
    return digest.digest()


async def _node_task(
    factory: OpenNode,
    data_dir: Path,
    overrides: dict[str, Any],
    handle: _NodeHandle,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with handle.scope:
            async with factory(data_dir, **overrides) as node:
                handle.node = node
                task_status.started(node)
                await trio.sleep_forever()
    finally:
        handle.stopped.set()


def _labels(handles: list[_NodeHandle]) -> dict[str, str]:
    names: dict[str, str] = {}
    for h in handles:
        for host, port in (h.node.tcp_address, h.node.udp_address):
            names[f"{host}:{port}"] = h.name
        names[bytes(h.node.node_id).hex()] = h.name
    return names


class _Display:
    """Progress output: a rich bar on a terminal, a few plain lines otherwise."""

    def __init__(self, console: Console, interactive: bool) -> None:
        self.console = console
        self.interactive = interactive
        self._bar: Progress | None = None
        self._task: Any = None
        self._next_step = PLAIN_PROGRESS_STEP

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def start_download(self, total: int) -> None:
        if self.interactive:
            self._bar = Progress(
                TextColumn("[bold]download"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("{task.fields[peers]} peers"),
                TimeRemainingColumn(),
                console=self.console,
                auto_refresh=False,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("download", total=total or 1, peers=0)

    def download_progress(self, update: Any) -> None:
        data = to_plain(update)
        done = int(data.get("bytes_done", 0))
        total = int(data.get("bytes_total", 0)) or 1
        peers = data.get("peers", data.get("per_peer", {}))
        count = len(peers) if isinstance(peers, (dict, list)) else 0
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, peers=count)
            self._bar.refresh()
        else:
            fraction = done / total
            if fraction >= self._next_step:
                self.say(
                    f"download: {fraction:.0%} ({format_size(done)} of"
                    f" {format_size(total)}) from {count} peers"
                )
                steps = int(fraction / PLAIN_PROGRESS_STEP) + 1
                self._next_step = steps * PLAIN_PROGRESS_STEP

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


async def run_demo(
    *,
    nodes: int = DEFAULT_NODES,
    size: int = DEFAULT_SIZE,
    console: Console | None = None,
    interactive: bool | None = None,
    workdir: Path | None = None,
    open_node: OpenNode | None = None,
) -> DemoReport:
    """Run the demo and return its report (``verified`` says whether the file came back intact).

    ``interactive`` (default: whether ``console`` is a terminal) chooses a progress bar over
    plain lines. Temporary node directories are created under ``workdir`` (default: the system
    temporary directory) and removed afterwards, whatever happens. Raises :class:`ConfigError`
    for out-of-range ``nodes``/``size``, :class:`DemoError` (or the node's ``P2PStoreError``) if
    the demo cannot finish; all nodes are stopped before it returns or raises.
    """
    if not MIN_NODES <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes must be between {MIN_NODES} and {MAX_NODES}")
    if not 1 <= size <= MAX_SIZE:
        raise ConfigError(f"--size must be between 1 byte and {format_size(MAX_SIZE)}")
    console = console or Console()
    display = _Display(console, console.is_terminal if interactive is None else interactive)
    factory = open_node if open_node is not None else _default_open_node()
    handles = [_NodeHandle(f"node{i}") for i in range(nodes)]
    uploader, downloader = handles[-1], handles[1]
    with ExitStack() as stack:
        root = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="p2pstore-demo-", dir=workdir))
        )
        try:
            with trio.fail_after(DEMO_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    report = await _run(
                        nursery, root, factory, handles, uploader, downloader, size, display
                    )
                    nursery.cancel_scope.cancel()
        except trio.TooSlowError:
            raise DemoError(f"the demo did not finish within {DEMO_TIMEOUT:.0f} s") from None
        finally:
            display.stop()
    return report


async def _run(
    nursery: trio.Nursery,
    root: Path,
    factory: OpenNode,
    handles: list[_NodeHandle],
    uploader: _NodeHandle,
    downloader: _NodeHandle,
    size: int,
    display: _Display,
) -> DemoReport:
    bootstrap: tuple[tuple[str, int], ...] = ()

    async def start(handle: _NodeHandle) -> None:
        nonlocal bootstrap
        node_dir = root / handle.name
        node_dir.mkdir()
        overrides: dict[str, Any] = {
            "host": "127.0.0.1",
            "udp_port": 0,
            "tcp_port": 0,
            "bootstrap": bootstrap,
        }
        node = await nursery.start(_node_task, factory, node_dir, overrides, handle)
        role = "" if bootstrap else " (bootstrap)"
        if not bootstrap:
            bootstrap = ((str(node.udp_address[0]), int(node.udp_address[1])),)
        role += " (uploader)" if handle is uploader else ""
        role += " (downloader)" if handle is downloader else ""
        display.say(
            f"started {handle.name}{role}: udp {node.udp_address[0]}:{node.udp_address[1]}"
            f" tcp {node.tcp_address[0]}:{node.tcp_address[1]}"
        )

    # The downloader joins only after the dispersal, so it holds none of the file and every byte
    # it gets crosses the network from the nodes that keep the shares.
    for handle in handles:
        if handle is not downloader:
            await start(handle)

    source = root / "original.bin"
    original_digest = await trio.to_thread.run_sync(_generate, source, size)
    display.say(f"generated {format_size(size)} of random data")

    last_phase = [""]

    def put_progress(update: Any) -> None:
        phase = str(getattr(update, "phase", ""))
        if phase and phase != last_phase[0]:
            last_phase[0] = phase
            display.say(f"{uploader.name}: {phase}...")

    file_id = await uploader.node.put(source, disperse=True, progress=put_progress)
    display.say(f"{uploader.name} stored and dispersed file {bytes(file_id).hex()}")

    uploader.scope.cancel()
    with trio.move_on_after(STOP_TIMEOUT):
        await uploader.stopped.wait()
    if not uploader.stopped.is_set():
        raise DemoError(f"{uploader.name} did not stop within {STOP_TIMEOUT:.0f} s")
    display.say(f"stopped {uploader.name}")
    await start(downloader)
    names = _labels([h for h in handles if h is not uploader])
    display.say(f"fetching on {downloader.name}")

    dest = root / "downloaded.bin"
    display.start_download(size)
    started = time.monotonic()
    try:
        result = await downloader.node.get(file_id, dest, progress=display.download_progress)
    finally:
        display.stop()
    seconds = float(getattr(result, "seconds", 0.0)) or (time.monotonic() - started)
    path = Path(getattr(result, "path", dest))
    verified = await trio.to_thread.run_sync(_hash_file, path) == original_digest
    from_peers = {
        names.get(str(label), str(label)): int(count)
        for label, count in dict(getattr(result, "bytes_from_peers", {})).items()
    }
    return DemoReport(
        file_id=bytes(file_id),
        size=size,
        verified=verified,
        seconds=seconds,
        throughput=size / seconds if seconds > 0 else 0.0,
        uploader=uploader.name,
        downloader=downloader.name,
        bytes_from_peers=from_peers,
        resumed_chunks=int(getattr(result, "resumed_chunks", 0) or 0),
    )


def print_report(console: Console, report: DemoReport) -> None:
    """The human summary: a table of bytes per peer, throughput and the verification verdict."""
    table = Table(title=f"{report.downloader} fetched {format_size(report.size)}")
    table.add_column("peer")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    total = sum(report.bytes_from_peers.values()) or 1
    for peer, count in sorted(report.bytes_from_peers.items(), key=lambda kv: -kv[1]):
        table.add_row(peer, f"{count:,}", f"{count / total:.0%}")
    console.print(table)
    if report.resumed_chunks:
        console.print(
            f"{report.resumed_chunks} chunks were already on {report.downloader}"
            " (it received shares during dispersal)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"throughput {format_size(report.throughput)}/s over {report.seconds:.2f} s;"
        f" file {report.file_id.hex()} "
        + ("verified: SHA-256 matches" if report.verified else "FAILED verification"),
        highlight=False,
        soft_wrap=True,
    )
