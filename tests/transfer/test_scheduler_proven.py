"""Proven peers first (issue 13 item 2): a peer that has delivered a verified chunk takes copies
of chunks held only by peers that never have, so false providers that claim every chunk and
never send one cannot hold a download hostage (they were dropped only by timeouts, in waves)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import ConfigError
from p2pstore.transfer import CancelRequest, SchedulerConfig

from .helpers import CHUNK, make_sched


def test_proven_peer_takes_copies_of_chunks_stuck_at_unproven_peers() -> None:
    sched = make_sched([(3, 2), (3, 2)], endgame_duplicates=0, unproven_rescue_after=1.0)
    sched.add_peer("S", range(6), 0.0)
    stuck = {r.index for r in sched.next_requests("S", 0.0)}
    assert len(stuck) == 4  # both stripes' k shares, all at the staller
    sched.add_peer("H", range(6), 0.0)
    # H is unproven, and without endgame duplicates there is nothing for it.
    assert sched.next_requests("H", 0.5) == []
    spare = min(set(range(3)) - stuck)  # the first stripe's third share, never requested
    sched.add_peer("P", [spare], 0.0)
    assert sched.next_requests("P", 0.5) == []
    sched.chunk_received("P", spare, CHUNK, 0.6)  # unrequested, still used: P is proven
    assert sched.is_proven("P")
    assert not sched.is_proven("S")
    assert not sched.is_proven("H")
    # H, still unproven at 2.0, gets one copy to prove itself with, and no second one.
    [probe] = sched.next_requests("H", 2.0)
    assert probe.duplicate
    assert probe.index in stuck
    assert sched.next_requests("H", 2.1) == []
    # Proven P takes copies of every stuck chunk it holds, H's probe too (H is unproven).
    sched.add_peer("P", range(6), 2.0)
    copies = sched.next_requests("P", 2.0)
    assert all(r.duplicate for r in copies)
    assert {r.index for r in copies} == stuck
    # The copy arriving cancels the staller's request.
    decisions = sched.chunk_received("P", copies[0].index, CHUNK, 2.1)
    assert CancelRequest("S", copies[0].index) in decisions


def test_no_copy_before_the_wait_nor_of_a_proven_peers_request() -> None:
    sched = make_sched([(2, 2)], endgame_duplicates=0, unproven_rescue_after=1.0)
    sched.add_peer("P", [0], 0.0)
    sched.add_peer("Q", [1], 0.0)
    [a] = sched.next_requests("P", 0.0)
    sched.chunk_received("P", a.index, CHUNK, 0.1)
    [b] = sched.next_requests("Q", 0.2)  # the one chunk left, at unproven Q
    sched.add_peer("P", [1], 0.2)
    assert sched.next_requests("P", 1.1) == []  # 0.9 s old: not yet
    [copy] = sched.next_requests("P", 1.3)
    assert copy.index == b.index
    assert copy.duplicate
    # Once Q has delivered, its requests are no longer taken from it.
    sched2 = make_sched([(3, 3)], endgame_duplicates=0, unproven_rescue_after=0.0)
    sched2.add_peer("P", range(3), 0.0)
    sched2.add_peer("Q", range(3), 0.0)
    reqs = sched2.next_requests("Q", 0.0)
    sched2.chunk_received("Q", reqs[0].index, CHUNK, 0.1)
    assert sched2.next_requests("P", 5.0) == []


def test_unproven_rescue_after_is_validated() -> None:
    with pytest.raises(ConfigError):
        SchedulerConfig(unproven_rescue_after=-1.0)
    with pytest.raises(ConfigError):
        SchedulerConfig(unproven_rescue_after=math.nan)
    SchedulerConfig(unproven_rescue_after=math.inf)


@settings(max_examples=60, deadline=None)
@given(
    stallers=st.integers(1, 60),
    stripes=st.integers(1, 12),
    shape=st.sampled_from([(6, 4), (3, 2), (4, 4), (2, 1)]),
    seed=st.integers(0, 2**16),
    honest_at=st.floats(0.0, 3.0),
)
def test_one_honest_peer_finishes_whatever_the_stallers_hold(
    stallers: int, stripes: int, shape: tuple[int, int], seed: int, honest_at: float
) -> None:
    """Stallers claim every chunk and never deliver (nor time out here); one honest peer,
    added when the stallers already hold every request, delivers each request 0.1 s later. It
    finishes alone, within a few rescue waits, however many stallers hold the chunks."""
    sched = make_sched([shape] * stripes, seed=seed, unproven_rescue_after=1.0)
    n = shape[0] * stripes
    names = [f"S{i}" for i in range(stallers)]
    for name in names:
        sched.add_peer(name, range(n), 0.0)
        sched.next_requests(name, 0.0)
    sched.add_peer("H", range(n), honest_at)
    pending: list[tuple[float, int]] = []
    now = honest_at
    while not sched.is_complete():
        assert now < honest_at + 30.0, "the honest peer never got the stuck chunks"
        for name in names:
            sched.next_requests(name, now)
        pending += [(now + 0.1, r.index) for r in sched.next_requests("H", now)]
        now += 0.05
        due = [index for at, index in pending if at <= now]
        pending = [(at, index) for at, index in pending if at > now]
        for index in due:
            sched.chunk_received("H", index, CHUNK, now)
    # The first delivery (an endgame copy) comes at once; then one rescue wait, and a tail.
    assert now <= honest_at + 1.0 + 0.1 * (n + 4)
