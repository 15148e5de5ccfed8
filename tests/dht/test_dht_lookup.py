"""The sans-IO lookup state machine, driven over a simulated network of node IDs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.dht.contact import Contact, distance
from p2pstore.dht.lookup import CandidateState, Lookup
from p2pstore.dht.routing import RoutingTable

K = 8
ALPHA = 3


def _network(seed: int, size: int) -> dict[bytes, RoutingTable]:
    """``size`` nodes, each with a routing table that saw every other node in random order."""
    rng = random.Random(seed)
    ids = [rng.randbytes(32) for _ in range(size)]
    tables = {}
    for node_id in ids:
        table = RoutingTable(node_id, k=K)
        others = [(j, o) for j, o in enumerate(ids) if o != node_id]
        rng.shuffle(others)
        for t, (j, other) in enumerate(others):
            table.update(Contact(other, "127.0.0.1", 1000 + j), float(t))
        tables[node_id] = table
    return tables


def _run(
    tables: dict[bytes, RoutingTable],
    searcher: bytes,
    target: bytes,
    dead: set[bytes],
    rng: random.Random,
) -> tuple[Lookup, list[tuple[bytes, int, int]]]:
    """Drive a lookup to completion, answering in-flight requests in random order.

    Returns the lookup and a log of (node, round, round of the node it was learned from)."""
    lookup = Lookup(target, tables[searcher].closest(target, K), k=K, alpha=ALPHA, own_id=searcher)
    in_flight: list[Contact] = []
    learned_from: dict[bytes, int] = {}
    log = []
    steps = 0
    while True:
        for contact, round_ in lookup.next_requests():
            assert lookup.in_flight <= ALPHA
            log.append((contact.node_id, round_, learned_from.get(contact.node_id, 0)))
            in_flight.append(contact)
        if lookup.done:
            break
        assert in_flight, "not done, yet nothing in flight"
        contact = in_flight.pop(rng.randrange(len(in_flight)))
        if contact.node_id in dead:
            lookup.on_failure(contact.node_id)
        else:
            reply = tables[contact.node_id].closest(target, K)
            this_round = lookup.round_of(contact.node_id)
            assert this_round is not None
            for c in reply:
                if lookup.state_of(c.node_id) is None:
                    learned_from.setdefault(c.node_id, this_round)
            lookup.on_reply(contact.node_id, reply)
        steps += 1
        assert steps < 10_000
    return lookup, log


@given(
    seed=st.integers(0, 2**32),
    size=st.integers(1, 60),
    order_seed=st.integers(0, 2**32),
)
def test_lookup_finds_exactly_the_k_closest(seed: int, size: int, order_seed: int) -> None:
    tables = _network(seed, size)
    rng = random.Random(order_seed)
    ids = sorted(tables)
    searcher = rng.choice(ids)
    target = rng.randbytes(32)
    lookup, log = _run(tables, searcher, target, set(), rng)
    expected = sorted((i for i in ids if i != searcher), key=lambda i: distance(i, target))[:K]
    assert [c.node_id for c in lookup.result()] == expected
    # Rounds: first requests are round 1, later ones one more than the reply they came from.
    for node_id, round_, parent_round in log:
        assert round_ == parent_round + 1
        assert lookup.state_of(node_id) is not CandidateState.NEW
    assert lookup.rounds == max((r for _, r, _ in log), default=0)
    assert lookup.messages == len(log)
    assert searcher not in {n for n, _, _ in log}


@given(
    seed=st.integers(0, 2**32),
    size=st.integers(2, 60),
    order_seed=st.integers(0, 2**32),
    dead_fraction=st.floats(0.0, 0.5),
)
def test_lookup_with_dead_nodes_returns_only_live_ones(
    seed: int, size: int, order_seed: int, dead_fraction: float
) -> None:
    tables = _network(seed, size)
    rng = random.Random(order_seed)
    ids = sorted(tables)
    searcher = rng.choice(ids)
    dead = {i for i in ids if i != searcher and rng.random() < dead_fraction}
    target = rng.randbytes(32)
    lookup, log = _run(tables, searcher, target, dead, rng)
    result = [c.node_id for c in lookup.result()]
    assert not set(result) & dead
    assert result == sorted(result, key=lambda i: distance(i, target))
    assert len(set(n for n, _, _ in log)) == len(log), "nobody is asked twice"
    # Everything that answered and is closer than the last result is in the result.
    answered = [n for n, _, _ in log if n not in dead]
    if len(result) == K:
        bound = distance(result[-1], target)
        assert {n for n in answered if distance(n, target) <= bound} == set(result)
    else:
        assert set(answered) == set(result)


def test_empty_lookup_is_done_at_once() -> None:
    lookup = Lookup(bytes(32), [], k=K, alpha=ALPHA)
    assert lookup.done
    assert lookup.next_requests() == []
    assert lookup.rounds == 0
    assert lookup.result() == []


def test_replies_from_nodes_not_in_flight_are_ignored() -> None:
    a = Contact(b"\x01" * 32, "127.0.0.1", 1)
    b = Contact(b"\x02" * 32, "127.0.0.1", 2)
    lookup = Lookup(bytes(32), [a], k=K, alpha=ALPHA)
    lookup.on_reply(b.node_id, [b])  # unsolicited
    assert lookup.state_of(b.node_id) is None
    assert lookup.next_requests() == [(a, 1)]
    lookup.on_reply(a.node_id, [b])
    lookup.on_reply(a.node_id, [])  # duplicate
    assert lookup.next_requests() == [(b, 2)]
    lookup.on_failure(b.node_id)
    assert lookup.done
    assert lookup.result() == [a]
    assert lookup.rounds == 2


@pytest.mark.slow
@settings(max_examples=10)
@given(seed=st.integers(0, 2**32), order_seed=st.integers(0, 2**32))
def test_lookup_is_exact_in_a_large_simulated_network(seed: int, order_seed: int) -> None:
    tables = _network(seed, 400)
    rng = random.Random(order_seed)
    ids = sorted(tables)
    for _ in range(20):
        searcher = rng.choice(ids)
        target = rng.randbytes(32)
        lookup, _ = _run(tables, searcher, target, set(), rng)
        expected = sorted((i for i in ids if i != searcher), key=lambda i: distance(i, target))
        assert [c.node_id for c in lookup.result()] == expected[:K]


def test_probes_go_one_at_a_time_after_the_first_reply() -> None:
    """A first-record look-up: alpha requests, then ``probes`` single requests, then alpha again.

    The first probe leaves as soon as the first reply is in: the rest of the first wave does
    not hold it back (waiting for the slowest reply of a round is what makes look-ups slow on
    real links), and their replies still add candidates when they come."""
    tables = _network(7, 40)
    searcher, target = next(iter(tables)), bytes(32)
    lookup = Lookup(
        target, tables[searcher].closest(target, K), k=K, alpha=ALPHA, own_id=searcher, probes=2
    )
    first = lookup.next_requests()
    assert len(first) == ALPHA
    probes_sent: list[Contact] = []
    asked = {c.node_id for c, _ in first}
    replies = [c for c, _ in first]
    for _ in range(2):
        # One reply in (a first-wave one, then the previous probe): exactly one probe goes out,
        # to the closest candidate not yet asked, even though first-wave requests are still out.
        answered = replies.pop(0)
        lookup.on_reply(answered.node_id, tables[answered.node_id].closest(target, K))
        batch = lookup.next_requests()
        assert len(batch) == 1, "a probe is a single request"
        probe = batch[0][0]
        assert all(
            distance(probe.node_id, target) <= distance(c.node_id, target)
            for c in tables[searcher].contacts()
            if c.node_id not in asked and lookup.state_of(c.node_id) is CandidateState.NEW
        )
        assert lookup.next_requests() == [], "one probe at a time"
        asked.add(probe.node_id)
        probes_sent.append(probe)
        replies.insert(0, probe)
    assert lookup.messages == ALPHA + 2
    # Probes spent: once the last probe answers, alpha requests are in flight again.
    for contact in replies:
        lookup.on_reply(contact.node_id, tables[contact.node_id].closest(target, K))
    if not lookup.done:
        lookup.next_requests()
        assert lookup.in_flight <= ALPHA
        assert lookup.in_flight > 1 or lookup.done


def _probing_lookup(
    tables: dict[bytes, RoutingTable], searcher: bytes, target: bytes, *, probes: int, width: int
) -> Lookup:
    """A look-up from ``searcher``'s table that stops at a record: ``probes`` probes, ``width``
    at a time."""
    return Lookup(
        target,
        tables[searcher].closest(target, K),
        k=K,
        alpha=ALPHA,
        own_id=searcher,
        probes=probes,
        probe_width=width,
    )


def test_probes_go_probe_width_at_a_time() -> None:
    """With ``probe_width`` 2, the first reply sends the two closest candidates at once (a lost
    or slow probe does not cost a round), and every later reply tops the probes in flight up to
    two (first-wave requests not counted) until ``probes`` have gone."""
    tables = _network(7, 40)
    searcher, target = next(iter(tables)), bytes(32)
    lookup = _probing_lookup(tables, searcher, target, probes=3, width=2)
    first = lookup.next_requests()
    assert len(first) == ALPHA
    answered = first[0][0]
    lookup.on_reply(answered.node_id, tables[answered.node_id].closest(target, K))
    known = tables[searcher].closest(target, K) + tables[answered.node_id].closest(target, K)
    fresh = sorted(
        {c.node_id for c in known if lookup.state_of(c.node_id) is CandidateState.NEW},
        key=lambda i: distance(i, target),
    )
    pair = lookup.next_requests()
    assert [c.node_id for c, _ in pair] == fresh[:2]
    assert lookup.next_requests() == [], "two probes at a time"
    probe = pair[0][0]
    lookup.on_reply(probe.node_id, tables[probe.node_id].closest(target, K))
    assert len(lookup.next_requests()) <= 1, "the third and last probe"
    assert lookup.messages <= ALPHA + 3


def test_a_stalled_request_frees_its_slot_and_its_late_reply_counts() -> None:
    tables = _network(8, 40)
    searcher, target = next(iter(tables)), bytes(32)
    lookup = Lookup(target, tables[searcher].closest(target, K), k=K, alpha=ALPHA, own_id=searcher)
    first = lookup.next_requests()
    assert len(first) == ALPHA
    assert lookup.next_requests() == []
    slow = first[0][0]
    lookup.on_stalled(slow.node_id)
    assert lookup.in_flight == ALPHA - 1
    assert lookup.outstanding == ALPHA
    [(extra, _)] = lookup.next_requests()
    assert extra.node_id not in {c.node_id for c, _ in first}
    lookup.on_reply(slow.node_id, tables[slow.node_id].closest(target, K))
    assert lookup.state_of(slow.node_id) is CandidateState.ANSWERED
    assert lookup.in_flight == ALPHA
    assert lookup.outstanding == ALPHA


def _at(distance_: int, target: bytes, port: int) -> Contact:
    return Contact(
        (int.from_bytes(target, "big") ^ distance_).to_bytes(32, "big"), "10.0.0.1", port
    )


def test_a_closer_name_from_a_late_reply_is_probed_at_once() -> None:
    """The probe window is the probe_width closest candidates not yet answered: when a
    first-wave reply that comes after the probes names a closer node, it is asked at once,
    not once the probes in flight have answered."""
    target = bytes(32)
    wave = [_at((1 << 200) + i, target, 1000 + i) for i in range(3)]
    lookup = Lookup(target, wave, k=K, alpha=3, probes=6, probe_width=3)
    assert len(lookup.next_requests()) == 3
    named = [_at((1 << 150) + i, target, 2000 + i) for i in range(3)]
    lookup.on_reply(wave[0].node_id, named)
    probes = lookup.next_requests()
    assert [c for c, _ in probes] == named
    assert lookup.next_requests() == [], "the window is full"
    closer = _at(1 << 100, target, 3000)
    lookup.on_reply(wave[1].node_id, [closer])  # late, but it knows a closer node
    assert [c for c, _ in lookup.next_requests()] == [closer]
    assert lookup.next_requests() == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 4), probes=st.integers(1, 8))
def test_probe_window_invariant(seed: int, width: int, probes: int) -> None:
    """While probes are left, after next_requests the ``width`` closest candidates that are
    new or probes in flight (first-wave and stalled requests aside) are all in flight; no more
    than ``probes`` probes go out in all; the lookup still ends."""
    rng = random.Random(seed)
    tables = _network(seed % 5, 30)
    searcher = next(iter(tables))
    target = rng.randbytes(32)
    lookup = _probing_lookup(tables, searcher, target, probes=probes, width=width)
    first = [c for c, _ in lookup.next_requests()]
    in_flight = list(first)
    sent = 0
    wave = {c.node_id for c in first}
    stalled: set[bytes] = set()
    settled = False
    for _ in range(200):
        if lookup.done or not in_flight:
            break
        contact = in_flight.pop(rng.randrange(len(in_flight)))
        event = rng.random()
        if event < 0.15 and contact.node_id not in stalled:
            lookup.on_stalled(contact.node_id)
            stalled.add(contact.node_id)
            in_flight.append(contact)
        elif event < 0.25:
            lookup.on_failure(contact.node_id)
            settled = True
        else:
            lookup.on_reply(contact.node_id, tables[contact.node_id].closest(target, K))
            settled = True
        probing = settled and sent < probes
        batch = [c for c, _ in lookup.next_requests()]
        if not settled:
            wave.update(c.node_id for c in batch)  # before any reply: still the first wave
        if probing:
            sent += len(batch)
            assert sent <= probes
        in_flight.extend(batch)
        if probing and sent < probes:
            known = {
                c.node_id: c
                for table in tables.values()
                for c in table.contacts()
                if lookup.state_of(c.node_id) is not None
            }
            window: list[Contact] = []
            live = 0
            for c in sorted(known.values(), key=lambda c: distance(c.node_id, target)):
                state = lookup.state_of(c.node_id)
                if state is CandidateState.FAILED:
                    continue
                live += 1
                if live > K or len(window) == width:
                    break
                if state is CandidateState.NEW or (
                    state is CandidateState.IN_FLIGHT
                    and c.node_id not in wave
                    and c.node_id not in stalled
                ):
                    window.append(c)
            assert all(lookup.state_of(c.node_id) is CandidateState.IN_FLIGHT for c in window)
