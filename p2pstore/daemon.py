"""``p2pstore daemon``: one node and its control socket in the foreground until SIGINT/SIGTERM.

Start-up order: take the data directory's lock (one daemon per directory), open the node (binds
its ports, bootstraps), bind the control socket, then report readiness. A signal cancels
everything: the control server stops accepting, running operations are cancelled, and the node
shuts down cleanly (transfers cancelled, routing table saved) before :func:`run_daemon` returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .config import DaemonSettings, auto_quota, format_host_port
from .control import ControlledNode, DaemonAlreadyRunningError, serve_control
from .datadir import prepare_data_dir
from .errors import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE_NAME = "daemon.lock"
"""Lock file in the data directory; a daemon holds an exclusive ``flock`` on it while it runs."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that make the daemon shut down cleanly."""

OpenNode = Callable[..., AbstractAsyncContextManager[Any]]
"""``open_node(data_dir, **overrides)``: the node factory (``p2pstore.node.open_node``)."""


@dataclass(frozen=True)
class ReadyInfo:
    """What the daemon reports once it is listening."""

    node_id: bytes
    udp: tuple[str, int]
    tcp: tuple[str, int]
    control_socket: Path
    http: tuple[str, int] | None = None

    def as_json(self) -> dict[str, str]:
        """The ``--json`` form: ``node_id`` hex and ``udp``/``tcp`` (and ``http`` when it is on)
        as ``HOST:PORT`` strings."""
        out = {
            "node_id": self.node_id.hex(),
            "udp": format_host_port(*self.udp),
            "tcp": format_host_port(*self.tcp),
        }
        if self.http is not None:
            out["http"] = format_host_port(*self.http)
        return out

    def as_text(self) -> str:
        """The one human line printed once the daemon is listening."""
        j = self.as_json()
        line = f"p2pstore node {j['node_id']} listening: udp {j['udp']} tcp {j['tcp']}"
        return line + (f" http http://{j['http']}/" if "http" in j else "")


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive daemon lock of ``data_dir`` (created 0700 if missing) for the block.

    Raises :class:`DaemonAlreadyRunningError` if another process holds it,
    :class:`~p2pstore.datadir.UnsafeDataDirError` if another user could control the directory
    (see :mod:`p2pstore.datadir`), :class:`ConfigError` if it cannot be created or the lock file
    opened.
    """
    prepare_data_dir(data_dir)  # refused (UnsafeDataDirError) if another user could control it
    try:
        fd = os.open(
            data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {data_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonAlreadyRunningError(
                f"a p2pstore daemon is already running for {data_dir}"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _default_open_node() -> OpenNode:
    from .node import open_node  # imported late: the CLI's other commands never need it

    return open_node


async def _watch_signals(
    signals: AsyncIterator[int], scope: trio.CancelScope, received: list[int]
) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        received.append(signum)
        scope.cancel()
        return


def _set_auto_quota(node: Any, data_dir: Path) -> None:
    """No quota set: let pushed shares fill at most half the free space (see auto_quota)."""
    store = getattr(node, "store", None)
    if store is None or not hasattr(store, "set_quota"):
        return
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        log.warning("cannot measure the free space of %s: %s; no quota", data_dir, exc)
        return
    quota = auto_quota(store.stored_bytes, free)
    store.set_quota(quota)
    log.info("quota for shares pushed by other nodes: %d bytes (half the free space)", quota)


async def _serve(
    data_dir: Path,
    settings: DaemonSettings,
    on_ready: Callable[[ReadyInfo], None],
    open_node: OpenNode,
    settings_report: Mapping[str, Any] | None = None,
) -> None:
    async with open_node(data_dir, **settings.node_overrides()) as node:
        if settings.quota is None:
            _set_auto_quota(node, data_dir)
        controlled: ControlledNode = node
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                serve_control, controlled, data_dir, settings_report=settings_report
            )
            socket_path = await nursery.start(serve)
            http = None
            if settings.http is not None:
                from .http import serve_node_http  # only daemons with --http need it

                http = await nursery.start(serve_node_http, node, *settings.http)
            info = ReadyInfo(
                node_id=bytes(node.node_id),
                udp=(str(node.udp_address[0]), int(node.udp_address[1])),
                tcp=(str(node.tcp_address[0]), int(node.tcp_address[1])),
                control_socket=socket_path,
                http=http,
            )
            log.info("node %s ready (control socket %s)", info.node_id.hex(), socket_path)
            on_ready(info)
            await trio.sleep_forever()


async def run_daemon(
    data_dir: Path,
    settings: DaemonSettings,
    on_ready: Callable[[ReadyInfo], None],
    *,
    open_node: OpenNode | None = None,
    settings_report: Mapping[str, Any] | None = None,
) -> int | None:
    """Run a node for ``data_dir`` until SIGINT or SIGTERM; return the signal number.

    ``settings_report``: what ``p2pstore config`` shows of this daemon (the control ``config``
    operation: its settings and where each came from).

    ``on_ready`` is called once, when the node and its control socket are listening. Must run in
    the main thread (signal handling). Start-up failures raise (possibly inside an
    ``ExceptionGroup``, as Trio nurseries do): ``P2PStoreError`` subclasses with one-line
    messages for port in use, unreachable bootstrap, a daemon already running, an unusable data
    directory. Returns ``None`` only if the node stopped by itself, which a healthy node never does.
    """
    factory = open_node if open_node is not None else _default_open_node()
    received: list[int] = []
    log.info("starting a node for %s", data_dir)
    with data_dir_lock(data_dir), trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, nursery.cancel_scope, received)
            await _serve(data_dir, settings, on_ready, factory, settings_report)
            nursery.cancel_scope.cancel()
    log.info("daemon stopped")
    return received[0] if received else None
