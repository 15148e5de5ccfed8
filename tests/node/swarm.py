"""A small test harness: real nodes on 127.0.0.1 in one process, each stoppable on its own."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2pstore.dht import DhtConfig, open_dht
from p2pstore.identity import Identity
from p2pstore.node import Node, NodeConfig, open_node
from p2pstore.transfer.download import DownloadConfig
from p2pstore.transfer.scheduler import SchedulerConfig
from p2pstore.wire.config import WireConfig
from p2pstore.wire.server import ChunkServer, ServerStore

#: Timeouts suited to loopback, so failure paths take fractions of a second, not minutes.
FAST = NodeConfig(
    host="127.0.0.1",
    udp_port=0,
    tcp_port=0,
    dht=DhtConfig(request_timeout=0.3, lookup_timeout=5.0),
    wire=WireConfig(connect_timeout=2.0, request_timeout=10.0, handshake_timeout=2.0),
    download=DownloadConfig(
        chunk_timeout=2.0,
        peer_setup_timeout=1.0,
        rediscover_interval=0.3,
        rediscover_attempts=3,
        scheduler=SchedulerConfig(slow_peer_grace=1.0),
    ),
)


def random_file(path: Path, size: int, seed: int = 0) -> bytes:
    """Write ``size`` pseudo-random bytes to ``path``; returns their SHA-256."""
    data = hashlib.shake_256(f"{seed}".encode()).digest(size) if size else b""
    path.write_bytes(data)
    return hashlib.sha256(data).digest()


def sha256_file(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


@dataclass
class Member:
    name: str
    data_dir: Path
    node: Node | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)


class Swarm:
    """Starts nodes in ``nursery``; ``stop`` cancels one node's scope and waits for its exit."""

    def __init__(self, nursery: trio.Nursery, root: Path, config: NodeConfig = FAST) -> None:
        self.nursery = nursery
        self.root = root
        self.config = config
        self.members: list[Member] = []

    @property
    def live(self) -> list[Node]:
        return [m.node for m in self.members if m.node is not None and not m.stopped.is_set()]

    def bootstrap_address(self) -> list[tuple[str, int]]:
        live = self.live
        return [live[0].udp_address] if live else []

    async def start(self, name: str | None = None, **overrides: Any) -> Node:
        name = name or f"n{len(self.members)}"
        member = Member(name, self.root / name)
        self.members.append(member)
        return await self._run(member, **overrides)

    async def restart(self, member: Member, **overrides: Any) -> Node:
        member.scope = trio.CancelScope()
        member.stopped = trio.Event()
        return await self._run(member, **overrides)

    async def _run(self, member: Member, **overrides: Any) -> Node:
        overrides.setdefault("bootstrap", self.bootstrap_address())

        async def run(task_status: trio.TaskStatus[Node]) -> None:
            try:
                with member.scope:
                    async with open_node(member.data_dir, self.config, **overrides) as node:
                        member.node = node
                        task_status.started(node)
                        await trio.sleep_forever()
            finally:
                member.stopped.set()

        node: Node = await self.nursery.start(run)
        return node

    def member(self, node: Node) -> Member:
        return next(m for m in self.members if m.node is node)

    async def stop(self, node: Node) -> None:
        member = self.member(node)
        member.scope.cancel()
        await member.stopped.wait()


async def start_rogue_peer(
    nursery: trio.Nursery,
    swarm: Swarm,
    source: ServerStore,
    announce: list[bytes],
    *,
    serve: Callable[[trio.SocketStream], Awaitable[None]] | None = None,
) -> Identity:
    """A hostile or broken peer: a real DHT node announcing ``announce`` keys, whose chunk server
    serves ``source`` (or runs ``serve`` on every raw TCP connection instead)."""
    identity = Identity.generate()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        async with open_dht(identity, "127.0.0.1", 0, config=swarm.config.dht) as dht:
            await dht.bootstrap(swarm.bootstrap_address())
            async with trio.open_nursery() as inner:
                if serve is None:
                    server = ChunkServer(identity, source, swarm.config.wire)
                    _, port = await inner.start(server.serve, "127.0.0.1", 0)
                else:
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    port = listeners[0].socket.getsockname()[1]
                    inner.start_soon(trio.serve_listeners, serve, listeners)
                for key in announce:
                    await dht.announce_provider(key, port)
                task_status.started()
                await trio.sleep_forever()

    await nursery.start(run)
    return identity


def temp_files(directory: Path) -> list[str]:
    """Names in ``directory`` that look like leftovers of an unfinished write."""
    return [n for n in os.listdir(directory) if n.startswith(".") or n.endswith((".tmp", ".part"))]
