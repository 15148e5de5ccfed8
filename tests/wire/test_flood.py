"""A live server keeps serving a well-behaved client while many connections misbehave."""

from __future__ import annotations

import os
import random

import trio

from p2pstore.identity import Identity
from p2pstore.wire import ChunkServer, ConnectionPool, PeerAddress, WireConfig

from .fakes import FakeStore

SERVER_CONFIG = WireConfig(
    handshake_timeout=0.5, idle_timeout=2, frame_timeout=0.5, max_connections=256
)
CLIENT_CONFIG = WireConfig(request_timeout=5, connect_timeout=5)
ATTACK_CONCURRENCY = 100
"""Attackers open at once (keeps file descriptors well under the usual 1024 limit)."""


async def _attacker(kind: str, host: str, port: int, rng: random.Random) -> None:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return
    try:
        with trio.move_on_after(3):
            if kind == "garbage":
                await stream.send_all(rng.randbytes(rng.randrange(1, 3000)))
                await stream.receive_some(1024)
            elif kind == "stall":
                await stream.send_all(
                    b"\x00\x00\x00\x50\x81"
                )  # a HELLO's first bytes, then nothing
                while await stream.receive_some(1024):
                    pass  # wait for the server to hang up
            elif kind == "oversized":
                await stream.send_all(b"\xff\xff\xff\xff")
                await stream.receive_some(1024)
            # "vanish": connect and close at once
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _flood(n_attackers: int) -> None:
    store = FakeStore()
    ids = [store.add(os.urandom(20_000)) for _ in range(8)]
    identity = Identity.generate()
    server = ChunkServer(identity, store, SERVER_CONFIG)
    rng = random.Random(1234)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve)
        address = PeerAddress(identity.node_id, host, port)
        async with ConnectionPool(Identity.generate(), CLIENT_CONFIG) as pool:
            conn = await pool.connect(address)
            flood_done = trio.Event()
            served = 0

            async def well_behaved() -> None:
                nonlocal served
                while not flood_done.is_set():
                    cid = ids[served % len(ids)]
                    assert await conn.get([cid]) == [(cid, store.chunks[cid])]
                    served += 1
                    await trio.sleep(0.01)

            async def flood() -> None:
                limiter = trio.CapacityLimiter(ATTACK_CONCURRENCY)
                kinds = ["garbage", "stall", "oversized", "vanish"]

                async def one(i: int) -> None:
                    async with limiter:
                        await _attacker(kinds[i % len(kinds)], host, port, rng)

                async with trio.open_nursery() as attackers:
                    for i in range(n_attackers):
                        attackers.start_soon(one, i)
                flood_done.set()

            with trio.fail_after(60):
                async with trio.open_nursery() as inner:
                    inner.start_soon(well_behaved)
                    inner.start_soon(flood)
            assert served > 0
            assert not conn.closed
            assert server.failed_connections >= n_attackers // 2
            # a newcomer is still welcome
            async with ConnectionPool(Identity.generate(), CLIENT_CONFIG) as pool2:
                fresh = await pool2.connect(address)
                assert await fresh.get(ids[:2]) == [(c, store.chunks[c]) for c in ids[:2]]
        for _ in range(100):
            if not server.active_connections:
                break
            await trio.sleep(0.05)
        assert server.active_connections == 0
        nursery.cancel_scope.cancel()


async def test_server_survives_1000_bad_connections() -> None:
    """About 2 s on loopback: short server timeouts make stallers cost little."""
    await _flood(1000)
