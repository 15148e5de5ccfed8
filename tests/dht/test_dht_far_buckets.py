"""Wide far buckets and the own-ID refresh of the near buckets (sans-IO, no sockets)."""

from __future__ import annotations

import random

from p2pstore.dht.config import DhtConfig
from p2pstore.dht.contact import Contact, distance
from p2pstore.dht.messages import FindNode, Method, NodesReply, Ping, Pong, Request, Response
from p2pstore.dht.protocol import DhtNode, ObjectCodec, Send
from p2pstore.dht.routing import RoutingTable

OWN = bytes(32)


def _id(bucket: int, low: int) -> bytes:
    return ((1 << bucket) | low).to_bytes(32, "big")


def test_far_buckets_hold_their_size_and_closest_stays_exact() -> None:
    table = RoutingTable(OWN, k=3, far_bucket_sizes=(5, 4, 2))
    assert [table.capacity(i) for i in (255, 254, 253, 252)] == [5, 4, 3, 3]
    contacts = {
        b: [Contact(_id(b, low), f"10.0.{b}.{low}", 4000) for low in range(1, 8)]
        for b in (255, 254, 253)
    }
    for members in contacts.values():
        for t, c in enumerate(members):
            table.update(c, float(t))
    assert len(table.bucket(255)) == 5
    assert len(table.bucket(254)) == 4
    assert len(table.bucket(253)) == 3
    # The 6th contact of bucket 255 waits in the replacement cache; its oldest is to be PINGed.
    assert table.pending_ping(255) == contacts[255][0].node_id
    assert contacts[255][5] in table.replacements(255)
    everyone = table.contacts()
    rng = random.Random(3)
    for _ in range(50):
        target = rng.randbytes(32)
        expected = sorted(everyone, key=lambda c: distance(c.node_id, target))[:3]
        assert table.closest(target) == expected
        assert (
            table.closest(target, 8)
            == sorted(everyone, key=lambda c: distance(c.node_id, target))[:8]
        )
    # A removed contact is replaced up to the bucket's own size.
    table.remove(contacts[255][1].node_id)
    assert len(table.bucket(255)) == 5


def _answer(node: DhtNode, sends: list[Send], now: float, targets: list[bytes]) -> list[Send]:
    """Answer every request among ``sends`` as its contact would (an empty FIND_NODE reply, a
    PONG); return the requests that follow."""
    out: list[Send] = []
    for send in sends:
        request = send.payload
        assert isinstance(request, Request)
        contact = node.table.by_address(send.address)
        assert contact is not None
        if isinstance(request.body, FindNode):
            targets.append(request.body.target)
            body: NodesReply | Pong = NodesReply((), b"t" * 8)
            method = Method.FIND_NODE
        else:
            assert isinstance(request.body, Ping)
            body, method = Pong(), Method.PING
        response = Response(request.txid, contact.node_id, method, body)
        effects = node.message_received(response, send.address, 40, now)
        out.extend(e for e in effects if isinstance(e, Send) and e.txid is not None)
    return out


def test_refresh_looks_up_our_own_id_once_for_every_bucket_nearer_than_our_kth_node() -> None:
    start = -10_000.0
    node = DhtNode(
        OWN,
        ("10.9.9.9", 4000),
        rng=random.Random(1),
        now=start,
        config=DhtConfig(k=3, alpha=3),
        codec=ObjectCodec(),
        persist=False,
    )
    # One contact in each of buckets 248..253: all non-full, all stale an hour later.
    near = [Contact(_id(b, 5), f"10.1.0.{b - 240}", 4000) for b in range(248, 254)]
    for c in near:
        node.table.update(c, start)
    now = start + 3 * 3600.0
    sends = [e for e in node.tick(now) if isinstance(e, Send) and e.txid is not None]
    targets: list[bytes] = []
    for _ in range(50):
        if not sends:
            break
        sends = _answer(node, sends, now, targets)
    # Our own ID first: its k = 3 closest nodes are in buckets 248, 249, 250, so buckets 248
    # and 249 are complete and never looked up; the farthest (empty) bucket still is, and the
    # others unless a contact of theirs answered meanwhile.
    assert targets[0] == OWN
    looked_up = [node.table.bucket_index(t) for t in targets if t != OWN]
    assert 255 in looked_up
    assert 248 not in looked_up
    assert 249 not in looked_up
    for index in range(248, 256):
        assert not node.table.is_stale(index, now, 3600.0)


def test_adopt_bucket_fills_an_empty_bucket_by_the_admission_rules() -> None:
    """The simulator's bulk build: up to the bucket's capacity, never a second node at an
    address the table holds, the same table ``update`` would make for a bucket with room."""
    table = RoutingTable(OWN, k=3, far_bucket_sizes=(5,))
    taken = Contact(_id(254, 1), "10.0.0.1", 4000)
    table.update(taken, 0.0)
    members = [Contact(_id(255, low), f"10.1.0.{low}", 4000) for low in range(1, 9)]
    clash = Contact(_id(255, 99), "10.0.0.1", 4000)  # the address of a contact already held
    assert table.adopt_bucket(255, [clash, *members], -5.0) == 5
    assert table.bucket(255) == members[:5]
    assert table.bucket_last_seen(255) == [-5.0] * 5
    assert table.by_address(("10.0.0.1", 4000)) == taken
    assert len(table) == 6
    # The same as update() on a bucket with room, by the queries the node makes.
    other = RoutingTable(OWN, k=3, far_bucket_sizes=(5,))
    other.update(taken, 0.0)
    for c in members[:5]:
        other.update(c, -5.0)
    assert table.closest(bytes(31) + b"\x07", 8) == other.closest(bytes(31) + b"\x07", 8)


def test_adopt_bucket_refuses_what_update_would_not_do() -> None:
    table = RoutingTable(OWN, k=3)
    inside = Contact(_id(200, 1), "10.0.0.1", 4000)
    outside = Contact(_id(201, 1), "10.0.0.2", 4000)
    for bad in ([inside, outside], [inside, inside]):
        try:
            table.adopt_bucket(200, bad, 0.0)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted a contact outside the bucket or a duplicate")
    assert table.adopt_bucket(200, [inside], 0.0) == 1
    try:
        table.adopt_bucket(200, [Contact(_id(200, 2), "10.0.0.3", 4000)], 0.0)
    except ValueError:
        pass
    else:
        raise AssertionError("filled a bucket that is not empty")
