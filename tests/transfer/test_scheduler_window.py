"""The scheduler's sequential mode (streaming reads): a moving window of stripes, lowest first."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.transfer import DownloadScheduler, SchedulerConfig, StripeComplete

from .helpers import make_stripes


def windowed(stripes: int, window: tuple[int, int], **config: int) -> DownloadScheduler:
    return DownloadScheduler(
        make_stripes([(6, 4)] * stripes),
        config=SchedulerConfig(**config),  # type: ignore[arg-type]
        rng=random.Random(1),
        window=window,
    )


def test_only_window_stripes_are_requested_lowest_first() -> None:
    sched = windowed(10, (2, 4), max_in_flight_per_peer=100)
    sched.add_peer("A", range(60), 0.0)
    sched.add_peer("B", range(60), 0.0)
    got = sched.next_requests("A", 0.0)
    stripes = [r.stripe for r in got]
    assert set(stripes) == {2, 3}
    assert stripes == sorted(stripes)  # stripe 2 before stripe 3
    assert all(r.share < 4 for r in got)  # data before parity, only k per stripe
    assert sched.next_requests("B", 0.0) == [] or all(
        r.duplicate for r in sched.next_requests("B", 0.0)
    )


def test_parallel_fan_out_within_the_window() -> None:
    sched = windowed(10, (0, 4), max_in_flight_per_peer=4)
    for peer in "ABCD":
        sched.add_peer(peer, range(60), 0.0)
    per_peer = {p: {r.stripe for r in sched.next_requests(p, 0.0)} for p in "ABCD"}
    assert all(per_peer[p] for p in "ABCD"), "every peer gets work"
    assert set().union(*per_peer.values()) <= {0, 1, 2, 3}


def test_moving_the_window_opens_new_stripes() -> None:
    sched = windowed(6, (0, 1))
    sched.add_peer("A", range(36), 0.0)
    first = sched.next_requests("A", 0.0)
    assert {r.stripe for r in first} == {0}
    for r in first:
        decisions = sched.chunk_received("A", r.index, 100, 1.0)
    assert StripeComplete(0) in decisions
    assert sched.next_requests("A", 1.0) == []  # stripe 1 is outside the window
    sched.set_window(1, 3)
    assert {r.stripe for r in sched.next_requests("A", 2.0)} == {1, 2}


def test_unreachable_outside_the_window_does_not_matter() -> None:
    sched = windowed(3, (0, 1))
    sched.add_peer("A", range(6), 0.0)  # holds stripe 0 only
    assert not sched.wants_more_peers()
    sched.set_window(0, 2)
    assert sched.wants_more_peers()


def test_window_needs_sequential_mode_and_valid_bounds() -> None:
    plain = DownloadScheduler(make_stripes([(6, 4)] * 2))
    with pytest.raises(ValueError, match="sequential"):
        plain.set_window(0, 1)
    sched = windowed(2, (0, 0))
    with pytest.raises(ValueError, match="outside"):
        sched.set_window(1, 3)
    assert sched.window == (0, 0)


@given(
    stripes=st.integers(1, 8),
    window=st.integers(1, 4),
    peers=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_a_reader_moving_the_window_completes_every_stripe_in_order(
    stripes: int, window: int, peers: int, seed: int
) -> None:
    """Driving the scheduler as the gateway does (window from the reading position) finishes
    the file, never requests outside the window, and completes the reader's stripe first."""
    rng = random.Random(seed)
    sched = windowed(stripes, (0, min(window, stripes)))
    names = [f"p{i}" for i in range(peers)]
    for name in names:
        sched.add_peer(name, range(stripes * 6), 0.0)
    position, now, completed = 0, 0.0, set()
    in_flight: list = []  # type: ignore[type-arg]
    for _ in range(10_000):
        if sched.is_complete():
            break
        lo, hi = sched.window or (0, 0)
        for name in names:
            for r in sched.next_requests(name, now):
                assert lo <= r.stripe < hi
                in_flight.append(r)
        assert in_flight, "work is always available while the window is open"
        r = in_flight.pop(rng.randrange(len(in_flight)))
        now += 0.01
        for d in sched.chunk_received(r.peer, r.index, 100, now):
            if isinstance(d, StripeComplete):
                completed.add(d.stripe)
        in_flight = [x for x in in_flight if x.index in sched.in_flight(x.peer)]
        while position in completed and position < stripes:
            position += 1
            sched.set_window(position, min(position + window, stripes))
    assert sched.is_complete()


def test_no_endgame_duplicates_before_the_tail() -> None:
    """A full window (everything in flight) is the normal state of a streaming read: no
    duplicates then; only once the window reaches the end of the read (endgame=True)."""
    sched = windowed(4, (0, 1), max_in_flight_per_peer=8)
    sched.add_peer("A", range(24), 0.0)
    sched.add_peer("B", range(24), 0.0)
    assert len(sched.next_requests("A", 0.0)) == 4  # stripe 0's four data chunks
    assert sched.next_requests("B", 0.0) == []  # nothing left in the window, and no endgame
    sched.set_window(0, 1, endgame=True)
    dups = sched.next_requests("B", 0.0)
    assert dups
    assert all(r.duplicate for r in dups)
