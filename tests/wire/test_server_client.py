"""The chunk server and the pooled client over loopback, with an in-memory store."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import trio

from p2pstore.errors import CorruptChunkError, HandshakeError, ProtocolError, QuotaExceededError
from p2pstore.identity import Identity
from p2pstore.ratelimit import RateLimiter
from p2pstore.wire import (
    ChunkServer,
    ConnectionPool,
    Error,
    ErrorCode,
    Message,
    PeerAddress,
    Put,
    WireConfig,
    initiate,
)

from .fakes import FakeStore, chunk_id_of

CONFIG = WireConfig(handshake_timeout=2, idle_timeout=10, frame_timeout=5, request_timeout=5)


class Setup:
    def __init__(self, store: FakeStore, server: ChunkServer, address: PeerAddress) -> None:
        self.store = store
        self.server = server
        self.address = address
        self.client_identity = Identity.generate()


@pytest.fixture
async def setup(nursery: trio.Nursery) -> Setup:
    store = FakeStore(quota_bytes=100_000)
    identity = Identity.generate()
    puts: list[bytes] = []
    server = ChunkServer(identity, store, CONFIG, on_put=puts.append)
    host, port = await nursery.start(server.serve)
    s = Setup(store, server, PeerAddress(identity.node_id, host, port))
    s.puts = puts  # type: ignore[attr-defined]
    return s


async def test_get_found_and_missing(setup: Setup) -> None:
    data = [os.urandom(n) for n in (10, 70_000, 300_000)]
    ids = [setup.store.add(d) for d in data]
    absent = os.urandom(32)
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        assert conn.authenticated_as_expected
        assert conn.peer_node_id == setup.address.node_id
        result = await conn.get([ids[2], absent, ids[0], ids[1], ids[0]])
    assert result == [
        (ids[2], data[2]),
        (absent, None),
        (ids[0], data[0]),
        (ids[1], data[1]),
        (ids[0], data[0]),
    ]


async def test_pipelined_gets_answered_out_of_order(setup: Setup) -> None:
    slow, fast = os.urandom(1000), os.urandom(1000)
    slow_id, fast_id = setup.store.add(slow), setup.store.add(fast)
    setup.store.delays[slow_id] = 1.0
    finished: list[bytes] = []
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)

        async def fetch(cid: bytes, expected: bytes) -> None:
            assert await conn.get([cid]) == [(cid, expected)]
            finished.append(cid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, slow_id, slow)
            await trio.sleep(0.05)  # the slow request goes first on the wire
            for _ in range(5):
                nursery.start_soon(fetch, fast_id, fast)
    assert finished[-1] == slow_id
    assert finished.count(fast_id) == 5


async def test_many_concurrent_gets_on_one_channel(setup: Setup) -> None:
    chunks = {setup.store.add(os.urandom(5000 + i)): None for i in range(40)}
    ids = list(chunks)
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        results: dict[bytes, bytes | None] = {}

        async def fetch(batch: list[bytes]) -> None:
            for cid, data in await conn.get(batch):
                results[cid] = data

        async with trio.open_nursery() as nursery:
            for i in range(0, 40, 3):
                nursery.start_soon(fetch, ids[i : i + 3])
    assert results == {cid: setup.store.chunks[cid] for cid in ids}


async def test_have_bitmap(setup: Setup) -> None:
    present = [setup.store.add(os.urandom(100)) for _ in range(3)]
    absent = [os.urandom(32) for _ in range(7)]
    order = [present[0], absent[0], absent[1], present[1], *absent[2:], present[2]]
    file_id = os.urandom(32)
    setup.store.files[file_id] = order
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        bitmap = await conn.have(file_id)
        assert await conn.have(os.urandom(32)) is None
    assert bitmap is not None
    bits = [bool(bitmap[i // 8] >> (i % 8) & 1) for i in range(len(order))]
    assert bits == [cid in present for cid in order]
    assert len(bitmap) == 2


async def test_put_accepted_then_duplicate_then_over_quota(setup: Setup) -> None:
    data = os.urandom(60_000)
    cid = chunk_id_of(data)
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        assert await conn.put(cid, data) is True
        assert await conn.put(cid, data) is False
        big = os.urandom(60_000)
        with pytest.raises(QuotaExceededError):
            await conn.put(chunk_id_of(big), big)
        # the channel survives a refusal
        assert await conn.get([cid]) == [(cid, data)]
    assert setup.store.chunks[cid] == data
    assert chunk_id_of(big) not in setup.store.chunks
    assert setup.puts == [cid, cid]  # type: ignore[attr-defined]


async def test_put_with_wrong_hash_refused_by_server(setup: Setup) -> None:
    stream = await trio.open_tcp_stream(setup.address.host, setup.address.port)
    channel = await initiate(stream, setup.client_identity, setup.address.node_id, CONFIG)
    replies: list[Message] = []

    async def collect(message: Message) -> None:
        replies.append(message)
        await channel.aclose()

    wrong_id = os.urandom(32)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run, collect)
        await channel.send(Put(5, wrong_id, b"not the bytes of that id"))
    assert len(replies) == 1
    assert isinstance(replies[0], Error)
    assert replies[0].code == ErrorCode.CORRUPT_CHUNK
    assert wrong_id not in setup.store.chunks


async def test_put_with_wrong_hash_refused_by_client_before_sending(setup: Setup) -> None:
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        with pytest.raises(ValueError, match="hash"):
            await conn.put(os.urandom(32), b"data")


class LyingStore(FakeStore):
    """Serves whatever bytes it is given under any ID (a malicious or broken peer)."""

    LIE = b"these bytes do not hash to the requested id"

    def chunk_size(self, chunk_id: bytes) -> int | None:
        return len(self.LIE)

    def read_chunk_into(
        self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]
    ) -> memoryview:
        buffer = buffer_for(len(self.LIE))
        buffer[:] = self.LIE
        return buffer


async def test_corrupt_chunk_from_peer_raises_naming_peer(nursery: trio.Nursery) -> None:
    identity = Identity.generate()
    host, port = await nursery.start(ChunkServer(identity, LyingStore(), CONFIG).serve)
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(PeerAddress(identity.node_id, host, port))
        cid = os.urandom(32)
        with pytest.raises(CorruptChunkError, match=identity.node_id.hex()[:16]) as info:
            await conn.get([cid])
        assert info.value.chunk_id == cid


async def test_request_deadline_and_late_reply_discarded(setup: Setup) -> None:
    slow = setup.store.add(os.urandom(100))
    fast = setup.store.add(os.urandom(100))
    setup.store.delays[slow] = 0.5
    config = WireConfig(request_timeout=0.1)
    async with ConnectionPool(setup.client_identity, config) as pool:
        conn = await pool.connect(setup.address)
        with pytest.raises(trio.TooSlowError):
            await conn.get([slow])
        await trio.sleep(0.6)  # the late CHUNK arrives and is dropped
        assert await conn.get([fast]) == [(fast, setup.store.chunks[fast])]
        assert not conn.closed


async def test_pool_reuses_and_shares_dials(setup: Setup) -> None:
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conns = []

        async def dial() -> None:
            conns.append(await pool.connect(setup.address))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(dial)
        assert all(c is conns[0] for c in conns)
        assert len(pool) == 1
        # an anonymous dial is a separate, unauthenticated-as-expected channel
        anon = await pool.connect(PeerAddress(None, setup.address.host, setup.address.port))
        assert anon is not conns[0]
        assert not anon.authenticated_as_expected
        assert anon.peer_node_id == setup.address.node_id
        assert len(pool) == 2
    assert conns[0].closed
    assert anon.closed


async def test_pool_is_bounded_and_evicts_idle(nursery: trio.Nursery) -> None:
    addresses = []
    for _ in range(3):
        identity = Identity.generate()
        host, port = await nursery.start(ChunkServer(identity, FakeStore(), CONFIG).serve)
        addresses.append(PeerAddress(identity.node_id, host, port))
    async with ConnectionPool(Identity.generate(), WireConfig(pool_size=2)) as pool:
        first = await pool.connect(addresses[0])
        await pool.connect(addresses[1])
        await pool.connect(addresses[2])
        assert len(pool) == 2
        assert first.closed


async def test_wrong_node_id_refused_by_pool(setup: Setup) -> None:
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        wrong = PeerAddress(os.urandom(32), setup.address.host, setup.address.port)
        with pytest.raises(HandshakeError):
            await pool.connect(wrong)
        assert len(pool) == 0


async def test_connection_limit(nursery: trio.Nursery) -> None:
    identity = Identity.generate()
    server = ChunkServer(identity, FakeStore(), WireConfig(max_connections=2))
    host, port = await nursery.start(server.serve)
    address = PeerAddress(identity.node_id, host, port)
    pools = [ConnectionPool(Identity.generate(), CONFIG) for _ in range(3)]
    async with pools[0] as p0, pools[1] as p1, pools[2] as p2:
        await p0.connect(address)
        await p1.connect(address)
        with pytest.raises(HandshakeError):
            await p2.connect(address)
        assert server.refused_connections == 1
    for _ in range(500):
        if not server.active_connections:
            break
        await trio.sleep(0.01)
    assert server.active_connections == 0


async def test_closed_channel_fails_pending_requests(setup: Setup) -> None:
    cid = setup.store.add(os.urandom(100))
    setup.store.delays[cid] = 1.0
    async with ConnectionPool(setup.client_identity, CONFIG) as pool:
        conn = await pool.connect(setup.address)
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.1)
                await conn.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(ProtocolError, match="closed"):
                await conn.get([cid])
        # a new connect replaces the closed channel
        again = await pool.connect(setup.address)
        assert again is not conn
        assert not again.closed


async def test_rate_limiter_charged_for_chunk_bytes(nursery: trio.Nursery) -> None:
    store = FakeStore()
    ids = [store.add(os.urandom(50_000)) for _ in range(6)]
    limiter = RateLimiter(bytes_per_second=10_000_000, burst=100_000)
    identity = Identity.generate()
    host, port = await nursery.start(
        ChunkServer(identity, store, CONFIG, rate_limiter=limiter).serve
    )
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(PeerAddress(identity.node_id, host, port))
        await conn.get([*ids, os.urandom(32)])
    assert limiter.granted_bytes == 6 * 50_000


async def test_cancelled_get_stops_the_server_serving_it(nursery: trio.Nursery) -> None:
    """An abandoned GET is CANCELled: the server stops working on it; the channel stays usable."""
    store = FakeStore()
    slow = store.add(b"slow" * 1000)
    fast = store.add(b"fast" * 1000)
    store.delays[slow] = 1.0
    server_id, client_id = Identity.generate(), Identity.generate()
    server = ChunkServer(server_id, store)
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with ConnectionPool(client_id) as pool:
        conn = await pool.connect(PeerAddress(server_id.node_id, host, port))
        assert "cancel" in conn.channel.peer.features
        with trio.move_on_after(0.2):
            await conn.get([slow])
        assert await conn.get([fast]) == [(fast, b"fast" * 1000)]
        await trio.sleep(1.5)
        assert slow in store.reads, "the read was under way when the GET was cancelled"
        assert conn.late_replies == 0, "the server kept serving a cancelled request"
