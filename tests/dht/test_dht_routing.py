"""The routing table: a hypothesis state machine over updates, pings, failures and removals."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2pstore.dht.contact import Contact, distance
from p2pstore.dht.routing import RoutingTable

OWN = bytes(32)
K = 3
CACHE = 2


def _id(bucket: int, low: int) -> bytes:
    """An ID in bucket ``bucket`` (255, 254 or 253) of OWN, varied by ``low``."""
    return ((1 << bucket) | low).to_bytes(32, "big")


POOL = [_id(b, low) for b in (255, 254, 253) for low in range(1, 9)]
PORTS = {node_id: 1000 + i for i, node_id in enumerate(POOL)}


class RoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.table = RoutingTable(OWN, k=K, replacement_cache_size=CACHE, max_failures=2)
        self.pending: set[bytes] = set()

    @initialize()
    def start(self) -> None:
        assert len(self.table) == 0

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(node_id=st.sampled_from(POOL), port_shift=st.sampled_from([0, 0, 0, 50000]))
    def update(self, node_id: bytes, port_shift: int) -> None:
        contact = Contact(node_id, "127.0.0.1", PORTS[node_id] + port_shift)
        index = self.table.bucket_index(node_id)
        before = self.table.bucket(index)
        was_in = node_id in self.table
        pending_before = self.table.pending_ping(index)
        to_ping = self.table.update(contact, self._tick())
        after = self.table.bucket(index)
        if was_in or len(before) < K:
            assert to_ping is None
            assert after[-1] == contact, "an updated contact is the most recently seen"
        else:
            assert node_id not in self.table
            assert self.table.replacements(index)[-1] == contact
            assert after == before, "a full bucket is not changed before the ping"
            if pending_before is None:
                assert to_ping == before[0], "the least recently seen contact is pinged"
                self.pending.add(to_ping.node_id)
            else:
                assert to_ping is None

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), alive=st.booleans())
    def ping_result(self, data: st.DataObject, alive: bool) -> None:
        node_id = data.draw(st.sampled_from(sorted(self.pending)))
        self.pending.discard(node_id)
        index = self.table.bucket_index(node_id)
        replacements = self.table.replacements(index)
        present = node_id in self.table
        self.table.ping_result(node_id, alive, self._tick())
        assert self.table.pending_ping(index) is None
        if not present:
            return
        if alive:
            assert self.table.bucket(index)[-1].node_id == node_id
        else:
            assert node_id not in self.table
            if replacements:
                assert replacements[-1].node_id in self.table, "freshest replacement promoted"

    @rule(node_id=st.sampled_from(POOL))
    def mark_failed(self, node_id: bytes) -> None:
        present = node_id in self.table
        index = self.table.bucket_index(node_id)
        had_replacements = bool(self.table.replacements(index))
        failures = self.table.failures(node_id)
        self.table.mark_failed(node_id)
        if present:
            if had_replacements or failures + 1 >= 2:
                assert node_id not in self.table
            else:
                assert self.table.failures(node_id) == failures + 1
        if node_id not in self.table:
            self.pending.discard(node_id)

    @rule(node_id=st.sampled_from(POOL))
    def remove(self, node_id: bytes) -> None:
        self.table.remove(node_id)
        assert node_id not in self.table
        self.pending.discard(node_id)

    @rule(goal=st.sampled_from(POOL), count=st.integers(1, 30))
    def closest(self, goal: bytes, count: int) -> None:
        result = self.table.closest(goal, count)
        everyone = sorted(self.table.contacts(), key=lambda c: distance(c.node_id, goal))
        assert result == everyone[:count]

    @invariant()
    def buckets_are_bounded_ordered_and_placed(self) -> None:
        total = 0
        addresses = set()
        for index in range(256):
            contacts = self.table.bucket(index)
            total += len(contacts)
            assert len(contacts) <= K
            assert len(self.table.replacements(index)) <= CACHE
            seen = self.table.bucket_last_seen(index)
            assert seen == sorted(seen), "least recently seen first"
            for c in contacts:
                assert c.node_id != OWN
                assert self.table.bucket_index(c.node_id) == index
                assert self.table.get(c.node_id) == c
                assert self.table.by_address(c.address) == c
                addresses.add(c.address)
            pending = self.table.pending_ping(index)
            assert pending is None or pending in {c.node_id for c in contacts}
        assert total == len(self.table) == len(addresses)
        assert OWN not in self.table


TestRoutingMachine = RoutingMachine.TestCase


def test_own_id_is_never_stored() -> None:
    table = RoutingTable(OWN, k=K)
    assert table.update(Contact(OWN, "127.0.0.1", 1), 1.0) is None
    assert len(table) == 0


def test_address_taken_over_by_another_node_replaces_it() -> None:
    table = RoutingTable(OWN, k=K)
    table.update(Contact(POOL[0], "127.0.0.1", 5), 1.0)
    table.update(Contact(POOL[9], "127.0.0.1", 5), 2.0)
    assert POOL[0] not in table
    assert table.by_address(("127.0.0.1", 5)) == Contact(POOL[9], "127.0.0.1", 5)


def test_refresh_lists_stale_buckets_and_random_ids_fall_in_them() -> None:
    table = RoutingTable(OWN, k=K, now=0.0)
    table.update(Contact(_id(250, 3), "127.0.0.1", 7), 100.0)
    assert table.buckets_to_refresh(50.0, 60.0) == []
    stale = table.buckets_to_refresh(200.0, 60.0)
    assert stale == list(range(250, 256))
    table.touch(251, 200.0)
    assert 251 not in table.buckets_to_refresh(200.0, 60.0)
    for index in (0, 17, 250, 255):
        assert table.bucket_index(table.random_id_in_bucket(index)) == index
