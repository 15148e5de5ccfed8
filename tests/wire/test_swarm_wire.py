"""Swarming on the wire: BUSY, WATCH and HAVE_UPDATE (codec bounds, server and client over
loopback) and the fair upload queue (sans-IO)."""

from __future__ import annotations

import os

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import ProtocolError
from p2pstore.identity import Identity
from p2pstore.wire import (
    Busy,
    ChunkServer,
    ConnectionPool,
    FairShare,
    HaveUpdate,
    MessageCodec,
    PeerAddress,
    PeerBusyError,
    UploadBusy,
    UploadGate,
    Watch,
    WatchHandle,
    WireConfig,
)
from p2pstore.wire import client as client_module
from p2pstore.wire.client import WatchRefusedError
from p2pstore.wire.holdings import HoldingsHub, host_key
from p2pstore.wire.messages import Have

from .fakes import FakeStore

CONFIG = WireConfig(handshake_timeout=2, idle_timeout=10, frame_timeout=5, request_timeout=5)
FILE = b"f" * 32
CID = b"c" * 32

# ---------------------------------------------------------------------- codec


def _raw(body: dict[str, object]) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def test_new_messages_roundtrip() -> None:
    codec = MessageCodec()
    for message in (
        Busy(7, CID, 1500),
        Watch(8, FILE, 9000),
        Watch(9, FILE, 0),
        HaveUpdate(8, FILE, (0, 5, 2**32 - 1)),
    ):
        assert codec.decode(codec.encode(message)) == message


@pytest.mark.parametrize(
    "body",
    [
        {"t": "BUSY", "id": 1, "cid": CID, "retry": 60_001},  # hint over a minute
        {"t": "BUSY", "id": 1, "cid": CID, "retry": -1},
        {"t": "BUSY", "id": 1, "cid": CID, "retry": True},  # booleans are not integers
        {"t": "BUSY", "id": 1, "cid": CID[:31], "retry": 5},
        {"t": "BUSY", "id": 1, "cid": CID},  # missing key
        {"t": "WATCH", "id": 1, "file": FILE, "port": 65536},
        {"t": "WATCH", "id": 1, "file": FILE, "port": 80, "extra": 1},
        {"t": "HAVE_UPDATE", "id": 1, "file": FILE, "idx": []},  # empty
        {"t": "HAVE_UPDATE", "id": 1, "file": FILE, "idx": list(range(257))},  # too many
        {"t": "HAVE_UPDATE", "id": 1, "file": FILE, "idx": [2**32]},
        {"t": "HAVE_UPDATE", "id": 1, "file": FILE, "idx": [-1]},
        {"t": "HAVE_UPDATE", "id": 1, "file": FILE, "idx": [b"x"]},
    ],
)
def test_malformed_swarm_messages_refused(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        MessageCodec().decode(_raw(body))


# ---------------------------------------------------------------------- fair share (sans-IO)


def _drain(fair: FairShare, now: float, until: float, step: float = 0.01) -> list[int]:
    out: list[int] = []
    t = now
    while t <= until:
        granted, _ = fair.poll(t)
        out.extend(granted)
        t += step
    return out


def test_fair_share_splits_the_rate_between_peers_whatever_they_pipeline() -> None:
    fair = FairShare(1000.0, 100, 0.0, busy_after=1e9)
    greedy = [fair.offer("greedy", 100, 0.0) for _ in range(40)]
    modest = [fair.offer("modest", 100, 0.0) for _ in range(5)]
    granted = _drain(fair, 0.0, 1.0)
    # In one second 1000 B/s + the 100 B burst = 11 grants; the modest peer gets half of them
    # until its 5 are done, not 5/45 of them.
    assert sum(1 for t in granted if t in modest) == 5
    assert sum(1 for t in granted if t in greedy) in (5, 6)


def test_weights_give_a_reciprocating_peer_a_larger_share() -> None:
    fair = FairShare(1000.0, 100, 0.0, busy_after=1e9, weight_of=lambda p: 2.0 if p == "a" else 1.0)
    a = {fair.offer("a", 100, 0.0) for _ in range(30)}
    for _ in range(30):
        fair.offer("b", 100, 0.0)
    granted = _drain(fair, 0.0, 2.95)
    got_a = sum(1 for t in granted if t in a)
    assert abs(got_a - 2 * (len(granted) - got_a)) <= 2


def test_busy_only_beyond_the_wait_bound_and_never_for_a_first_request() -> None:
    fair = FairShare(1000.0, 100, 0.0, busy_after=1.0)
    for peer in range(20):  # 20 peers, 2 KB queued in front of everyone
        fair.offer(peer, 100, 0.0)
    fair.offer("late", 100, 0.0)  # a first request is always admitted, however long the queue
    with pytest.raises(UploadBusy) as refused:
        fair.offer("late", 100, 0.0)  # it would wait about 2 s > 1 s
    assert 0.25 <= refused.value.retry_after <= 30
    assert fair.refused == 1
    fair.offer("late", 100, 0.0, may_refuse=False)  # a peer without `swarm` just waits


def test_withdrawn_ticket_frees_its_turn() -> None:
    fair = FairShare(1000.0, 100, 0.0, busy_after=1e9)
    first = fair.offer("a", 100, 0.0)
    second = fair.offer("b", 100, 0.0)
    fair.withdraw(second)
    granted, wake = fair.poll(0.0)
    assert granted == [first]
    assert wake is None
    assert fair.queued_peers() == 0


@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 300), st.floats(0.0, 0.5)),
        min_size=1,
        max_size=60,
    )
)
def test_grants_never_exceed_burst_plus_rate(ops: list[tuple[str, int, float]]) -> None:
    rate, burst = 1000.0, 200
    fair = FairShare(rate, burst, 0.0, busy_after=1e9)
    now = 0.0
    offered = 0
    for peer, size, dt in ops:
        now += dt
        fair.offer(peer, size, now)
        offered += size
        fair.poll(now)
    # Every grant but the last was covered by tokens: burst + rate * elapsed (+ the last grant).
    assert fair.granted_bytes <= burst + rate * now + 300
    # Eventually everything offered is granted: each poll says when to poll again.
    wake: float | None = now
    for _ in range(len(ops) + 1):
        assert wake is not None
        _, wake = fair.poll(wake)
        if wake is None:
            break
    assert fair.granted_bytes == offered
    assert wake is None


# ---------------------------------------------------------------------- over loopback


async def _serve(
    nursery: trio.Nursery, store: FakeStore, **kwargs: object
) -> tuple[ChunkServer, PeerAddress]:
    identity = Identity.generate()
    server = ChunkServer(identity, store, CONFIG, **kwargs)  # type: ignore[arg-type]
    host, port = await nursery.start(server.serve)
    return server, PeerAddress(identity.node_id, host, port)


async def test_watch_sends_the_bitmap_then_updates_as_chunks_are_stored(
    nursery: trio.Nursery,
) -> None:
    store = FakeStore()
    chunks = [os.urandom(100) for _ in range(10)]
    ids = [store.add(c) for c in chunks[:3]]
    ids += [bytes([i]) * 32 for i in range(3, 10)]  # not stored yet
    store.files[FILE] = ids
    hub = HoldingsHub()
    watchers: list[tuple[bytes, str, int, bytes]] = []
    _, address = await _serve(nursery, store, holdings=hub, on_watch=lambda *a: watchers.append(a))
    client = Identity.generate()
    async with ConnectionPool(client, CONFIG) as pool:
        conn = await pool.connect(address)
        assert conn.swarming
        with trio.fail_after(5):
            watch = await conn.watch(FILE, port=4242)
            assert watch.bitmap == bytes([0b111, 0])
            assert watchers == [(client.node_id, "127.0.0.1", 4242, FILE)]
            hub.publish(FILE, 7)
            hub.publish(FILE, 4)
            assert await watch.next_update() == (4, 7)  # batched, smallest first
            await watch.aclose()
            while hub.watchers(FILE):  # noqa: ASYNC110 - the CANCEL reaches the server
                await trio.sleep(0.01)


async def test_busy_reply_with_retry_hint_instead_of_a_long_queue(nursery: trio.Nursery) -> None:
    store = FakeStore()
    ids = [store.add(os.urandom(10_000)) for _ in range(6)]
    gate = UploadGate(20_000.0, 10_000, busy_after=0.3)
    server, address = await _serve(nursery, store, uploads=gate)
    got: list[bytes] = []
    refused: list[PeerBusyError] = []
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(address)

        async def fetch(chunk_id: bytes) -> None:
            try:
                ((_, data),) = await conn.get([chunk_id])
            except PeerBusyError as exc:
                refused.append(exc)
                return
            assert data is not None
            got.append(chunk_id)

        with trio.fail_after(5):
            async with trio.open_nursery() as requests:  # pipelined, as a download does
                for chunk_id in ids:
                    requests.start_soon(fetch, chunk_id)
    # The first chunks fit the 0.3 s bound at 20 kB/s; the rest got BUSY, none timed out.
    assert 0 < len(got) < len(ids)
    assert len(got) + len(refused) == len(ids)
    assert all(0.25 <= exc.retry_after <= 30 for exc in refused)
    assert server.busy_replies == len(refused)
    assert gate.granted_bytes == 10_000 * len(got)


async def test_update_flood_is_a_protocol_error_for_that_peer_only(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_QUEUED_UPDATES", 8)
    store = FakeStore()
    store.files[FILE] = [bytes([i]) * 32 for i in range(8)]
    hub = HoldingsHub()
    _, address = await _serve(nursery, store, holdings=hub)
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(address)
        watch = await conn.watch(FILE)
        # Nobody consumes the updates: past the bound the channel fails (closed, not the node).
        with trio.fail_after(20):
            while not conn.closed:
                for i in range(256):
                    hub.publish(FILE, i)
                await trio.sleep(0.06)
        with pytest.raises(ProtocolError):
            await _consume_forever(watch)


async def _consume_forever(watch: WatchHandle) -> None:
    while True:
        await watch.next_update()


def test_watches_of_a_file_are_capped_per_peer_and_per_host() -> None:
    """One node ID, or one host with throw-away identities, cannot take every watch of a file."""
    hub = HoldingsHub(max_subscribers=10, max_per_peer=2, max_per_host=3)
    a1 = hub.subscribe(FILE, b"a", "10.0.0.1")
    a2 = hub.subscribe(FILE, b"a", "10.0.0.1")
    assert a1 is not None
    assert a2 is not None
    assert hub.subscribe(FILE, b"a", "10.0.0.2") is None  # per peer, whatever its address
    assert hub.subscribe(b"g" * 32, b"a", "10.0.0.1") is not None  # per file
    assert hub.subscribe(FILE, b"b", "10.0.0.1") is not None
    assert hub.subscribe(FILE, b"c", "10.0.0.1") is None  # per host, whatever the identity
    assert hub.subscribe(FILE, b"c", "10.0.0.2") is not None
    a1.close()
    a1.close()  # idempotent: counts once
    assert hub.subscribe(FILE, b"c", "10.0.0.1") is not None
    assert hub.watchers(FILE) == 4
    assert host_key("2001:db8::1") == host_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert host_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert host_key("127.0.0.1") == "127.0.0.1"


async def test_a_refused_watch_leaves_the_connection_usable(nursery: trio.Nursery) -> None:
    store = FakeStore()
    ids = [store.add(os.urandom(100)) for _ in range(3)]
    store.files[FILE] = ids
    hub = HoldingsHub(max_per_peer=2)
    _, address = await _serve(nursery, store, holdings=hub)
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(address)
        with trio.fail_after(5):
            await conn.watch(FILE)
            await conn.watch(FILE)
            with pytest.raises(WatchRefusedError):
                await conn.watch(FILE)  # a third watch of one file from one peer
            assert await conn.have(FILE) == bytes([0b111])
        assert hub.watchers(FILE) == 2


async def test_a_request_id_reused_while_in_flight_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    """Reusing the ID of an open WATCH would let a connection hold more watches than allowed
    (the server counted IDs) and make replies ambiguous: a protocol error."""
    store = FakeStore()
    store.files[FILE] = [store.add(os.urandom(100))]
    hub = HoldingsHub()
    server, address = await _serve(nursery, store, holdings=hub)
    async with ConnectionPool(Identity.generate(), CONFIG) as pool:
        conn = await pool.connect(address)
        with trio.fail_after(5):
            watch = await conn.watch(FILE)
            await conn.channel.send(Have(watch._rid, FILE))
            while server.failed_connections == 0:  # noqa: ASYNC110 - the server closes it
                await trio.sleep(0.01)
            while hub.watchers(FILE):  # noqa: ASYNC110 - its watch ends with it
                await trio.sleep(0.01)
