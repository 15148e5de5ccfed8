"""Example tests of the download scheduler, one or more per rule of the issue."""

from __future__ import annotations

import random

import pytest

from p2pstore.errors import ConfigError, FileUnavailableError, ProtocolError
from p2pstore.transfer import (
    CancelRequest,
    DownloadScheduler,
    DropPeer,
    SchedulerConfig,
    StripeComplete,
    StripeSpec,
)

from .helpers import CHUNK, make_sched, make_stripes


def indices(reqs: list) -> list[int]:  # type: ignore[type-arg]
    return [r.index for r in reqs]


# ---------------------------------------------------------------- priority order


def test_rarest_first() -> None:
    sched = make_sched([(4, 4)])
    sched.add_peer("A", {0, 1, 2, 3}, 0.0)
    sched.add_peer("B", {0, 1}, 0.0)
    sched.add_peer("C", {0, 1, 2}, 0.0)
    got = indices(sched.next_requests("A", 0.0))
    assert got[:2] == [3, 2]  # 3 has one holder, 2 has two, 0 and 1 three
    assert sorted(got[2:]) == [0, 1]


def test_ties_broken_by_injected_rng_deterministically() -> None:
    orders = set()
    for seed in range(20):
        runs = []
        for _ in range(2):
            sched = make_sched([(6, 6)], seed=seed)
            sched.add_peer("A", range(6), 0.0)
            runs.append(tuple(indices(sched.next_requests("A", 0.0))))
        assert runs[0] == runs[1]  # same seed, same order
        orders.add(runs[0])
    assert len(orders) > 1  # different seeds break ties differently


def test_data_before_parity_and_only_k_requested() -> None:
    for seed in range(10):
        sched = make_sched([(6, 3)], seed=seed)
        sched.add_peer("A", range(6), 0.0)
        assert sorted(indices(sched.next_requests("A", 0.0))) == [0, 1, 2]


def test_rarity_beats_data_preference() -> None:
    sched = make_sched([(4, 2)])
    sched.add_peer("A", range(4), 0.0)
    sched.add_peer("B", {0, 1, 2}, 0.0)  # parity chunk 3 is the rarest
    assert indices(sched.next_requests("A", 0.0))[0] == 3


def test_started_stripes_before_rarer_chunks_of_new_stripes() -> None:
    # stripe 0 = indices 0..2 (k=2, chunk 0 stored), stripe 1 = indices 3, 4 (k=2)
    sched = make_sched([(3, 2), (2, 2)], already_have={0})
    sched.add_peer("A", {1, 2, 3, 4}, 0.0)
    sched.add_peer("B", {1, 2}, 0.0)
    got = indices(sched.next_requests("A", 0.0))
    assert got[0] == 1  # started stripe 0, data, despite 3 and 4 being rarer
    assert sorted(got[1:]) == [3, 4]


def test_finishes_opened_stripe_before_opening_another() -> None:
    sched = make_sched([(2, 2)] * 4, max_in_flight_per_peer=1)
    sched.add_peer("A", range(8), 0.0)
    order = []
    for t in range(8):
        (req,) = sched.next_requests("A", float(t))
        order.append(req.stripe)
        sched.chunk_received("A", req.index, CHUNK, float(t))
    assert order[0::2] == order[1::2]  # each stripe's two chunks back to back
    assert sched.is_complete()


# ---------------------------------------------------------------- in-flight bound


def test_in_flight_bound() -> None:
    sched = make_sched([(20, 20)])
    sched.add_peer("A", range(20), 0.0)
    first = sched.next_requests("A", 0.0)
    assert len(first) == 8
    assert sched.next_requests("A", 0.0) == []
    sched.chunk_received("A", first[0].index, CHUNK, 1.0)
    assert len(sched.next_requests("A", 1.0)) == 1
    assert len(sched.in_flight("A")) == 8


def test_configurable_bound() -> None:
    sched = make_sched([(20, 20)], max_in_flight_per_peer=3)
    sched.add_peer("A", range(20), 0.0)
    assert len(sched.next_requests("A", 0.0)) == 3


# ---------------------------------------------------------------- timeouts


def test_timed_out_request_goes_to_another_peer() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    assert sorted(indices(sched.next_requests("A", 0.0))) == [0, 1]
    sched.add_peer("B", {0, 1}, 0.0)
    assert sched.request_timed_out("A", 1, 5.0) == []
    assert 1 not in sched.in_flight("A")
    assert [r.index for r in sched.next_requests("B", 5.0) if not r.duplicate] == [1]


def test_timed_out_chunk_offered_to_same_peer_only_as_last_resort() -> None:
    sched = make_sched([(3, 3)])
    sched.add_peer("A", {0, 1, 2}, 0.0)
    sched.next_requests("A", 0.0)
    sched.request_timed_out("A", 0, 5.0)
    sched.request_timed_out("A", 1, 5.0)
    # nobody else holds 0 and 1, so A gets them back
    assert sorted(indices(sched.next_requests("A", 5.0))) == [0, 1]


def test_consecutive_timeouts_drop_the_peer() -> None:
    sched = make_sched([(4, 4)], request_strikes_before_drop=3)
    sched.add_peer("A", range(4), 0.0)
    sched.add_peer("B", range(4), 0.0)
    sched.next_requests("A", 0.0)
    assert sched.request_timed_out("A", 0, 1.0) == []
    sched.chunk_received("A", 1, CHUNK, 1.0)  # resets the count
    assert sched.request_timed_out("A", 2, 2.0) == []
    assert sched.request_timed_out("A", 3, 2.0) == []
    sched.next_requests("A", 2.0)
    assert sched.request_timed_out("A", 0, 3.0) == [DropPeer("A", "timeouts")]
    assert sched.is_dropped("A")
    assert sched.next_requests("A", 3.0) == []
    assert sorted(indices(sched.next_requests("B", 3.0))) == [0, 2, 3]


def test_unknown_timeout_is_ignored() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    assert sched.request_timed_out("A", 0, 1.0) == []  # never requested
    assert sched.request_timed_out("Z", 0, 1.0) == []


# ---------------------------------------------------------------- slow peers


def _feed(sched: DownloadScheduler, peer: str, t: float) -> None:
    """Deliver one of ``peer``'s outstanding chunks and top it up."""
    flight = sorted(sched.in_flight(peer))
    if flight:
        sched.chunk_received(peer, flight[0], CHUNK, t)
    sched.next_requests(peer, t)


def test_slow_peer_dropped_and_requeued() -> None:
    sched = make_sched([(400, 400)], slow_peer_grace=2.0)
    for p in "ABC":
        sched.add_peer(p, range(400), 0.0)
        sched.next_requests(p, 0.0)
    c_chunks = sched.in_flight("C")
    t = 0.0
    while t < 1.5:  # A and B deliver 10 chunks/s, C nothing
        t = round(t + 0.1, 3)
        _feed(sched, "A", t)
        _feed(sched, "B", t)
        assert sched.check_slow_peers(t) == []  # within the grace period
    while t < 3.0:
        t = round(t + 0.1, 3)
        _feed(sched, "A", t)
        _feed(sched, "B", t)
        decisions = sched.check_slow_peers(t)
        if decisions:
            break
    assert decisions == [DropPeer("C", "slow")]
    assert 2.0 <= t <= 2.2
    assert sched.in_flight("C") == frozenset()
    assert sched.add_peer("C", range(400), t) is False
    # C's chunks are requestable again: A and B finish the download (n = k, all needed)
    assert c_chunks
    for _ in range(400):
        t += 0.1
        _feed(sched, "A", t)
        _feed(sched, "B", t)
    assert sched.is_complete()
    assert c_chunks <= sched.stripe_ready(0)
    assert sched.progress(t).per_peer["C"].active is False


def test_peer_somewhat_slower_is_kept() -> None:
    sched = make_sched([(400, 400)], slow_peer_grace=1.0)
    for p in "AB":
        sched.add_peer(p, range(400), 0.0)
        sched.next_requests(p, 0.0)
    t = 0.0
    for step in range(60):
        t = round(t + 0.1, 3)
        _feed(sched, "A", t)
        if step % 4 == 0:  # B at a quarter of A's rate
            _feed(sched, "B", t)
        assert sched.check_slow_peers(t) == []


def test_slow_sole_provider_is_kept() -> None:
    sched = make_sched([(10, 10)], slow_peer_grace=1.0)
    sched.add_peer("A", range(9), 0.0)
    sched.add_peer("B", range(10), 0.0)  # only B holds chunk 9
    sched.next_requests("A", 0.0)
    sched.next_requests("B", 0.0)
    assert 9 in sched.in_flight("B")
    t = 0.0
    for _ in range(30):
        t = round(t + 0.1, 3)
        _feed(sched, "A", t)
        assert sched.check_slow_peers(t) == []


def test_slow_check_needs_enough_peers() -> None:
    sched = make_sched([(10, 10)], slow_peer_grace=0.0)
    sched.add_peer("A", range(10), 0.0)
    sched.next_requests("A", 0.0)
    assert sched.check_slow_peers(10.0) == []


# ---------------------------------------------------------------- endgame


def test_endgame_duplicates_and_loser_cancelled() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    sched.add_peer("B", {0, 1}, 0.0)
    assert sorted(indices(sched.next_requests("A", 0.0))) == [0, 1]
    dups = sched.next_requests("B", 1.0)
    assert sorted(indices(dups)) == [0, 1]
    assert all(r.duplicate for r in dups)
    assert sched.next_requests("B", 1.0) == []  # at most one extra copy each... and B is full
    assert sched.chunk_received("B", 0, CHUNK, 2.0) == [CancelRequest("A", 0)]
    decisions = sched.chunk_received("A", 1, CHUNK, 2.0)
    assert decisions == [CancelRequest("B", 1), StripeComplete(0)]
    assert sched.is_complete()
    assert sched.in_flight("A") == sched.in_flight("B") == frozenset()


def test_endgame_copies_capped() -> None:
    sched = make_sched([(1, 1)], endgame_duplicates=1)
    for p in "ABC":
        sched.add_peer(p, {0}, 0.0)
    assert len(sched.next_requests("A", 0.0)) == 1
    assert len(sched.next_requests("B", 0.0)) == 1
    assert sched.next_requests("C", 0.0) == []


def test_no_endgame_while_chunks_unrequested() -> None:
    sched = make_sched([(1, 1)] * 3, max_in_flight_per_peer=1)
    sched.add_peer("A", range(3), 0.0)
    sched.add_peer("B", {0}, 0.0)
    (ra,) = sched.next_requests("A", 0.0)
    assert ra.index in (1, 2)  # rarer than 0
    (rb,) = sched.next_requests("B", 0.0)
    assert rb.index == 0
    assert not rb.duplicate
    sched.chunk_received("B", 0, CHUNK, 1.0)
    # B is idle, but a chunk only A holds is still unrequested: no endgame duplicate yet
    assert sched.next_requests("B", 1.0) == []
    sched.chunk_received("A", ra.index, CHUNK, 2.0)
    (last,) = sched.next_requests("A", 2.0)
    assert not last.duplicate


def test_endgame_disabled() -> None:
    sched = make_sched([(1, 1)], endgame_duplicates=0)
    sched.add_peer("A", {0}, 0.0)
    sched.add_peer("B", {0}, 0.0)
    assert len(sched.next_requests("A", 0.0)) == 1
    assert sched.next_requests("B", 0.0) == []


def test_endgame_prefers_oldest_request() -> None:
    sched = make_sched([(3, 3)], max_in_flight_per_peer=1)
    for p in "ABC":
        sched.add_peer(p, range(3), 0.0)
    first = sched.next_requests("A", 0.0)[0].index
    second = sched.next_requests("B", 1.0)[0].index
    sched.next_requests("C", 2.0)
    sched.add_peer("D", range(3), 3.0)
    (dup,) = sched.next_requests("D", 3.0)
    assert dup.duplicate
    assert dup.index == first
    assert second != first


# ---------------------------------------------------------------- stripe completion at k


def test_stripe_done_at_k_cancels_rest_and_never_reassigns() -> None:
    sched = make_sched([(4, 2)])
    sched.add_peer("A", range(4), 0.0)
    assert sorted(indices(sched.next_requests("A", 0.0))) == [0, 1]
    sched.request_timed_out("A", 1, 1.0)
    assert indices(sched.next_requests("A", 1.0)) in ([2], [3])  # 1 is last resort for A
    extra = next(iter(sched.in_flight("A") - {0}))
    assert sched.chunk_received("A", 1, CHUNK, 1.5) == []  # late, still used
    decisions = sched.chunk_received("A", 0, CHUNK, 2.0)
    assert decisions == [StripeComplete(0), CancelRequest("A", extra)]
    assert sched.stripe_ready(0) == {0, 1}
    assert sched.is_complete()
    sched.add_peer("B", range(4), 3.0)
    assert sched.next_requests("A", 3.0) == sched.next_requests("B", 3.0) == []
    # a straggler of a finished stripe changes nothing
    assert sched.chunk_received("A", extra, CHUNK, 3.0) == []
    assert sched.stripe_ready(0) == {0, 1}


def test_stripe_rebuilt_from_parity() -> None:
    sched = make_sched([(4, 2)])
    sched.add_peer("A", {2, 3}, 0.0)  # parity only
    assert sorted(indices(sched.next_requests("A", 0.0))) == [2, 3]
    sched.chunk_received("A", 2, CHUNK, 1.0)
    assert sched.chunk_received("A", 3, CHUNK, 1.0) == [StripeComplete(0)]
    assert sched.stripe_ready(0) == {2, 3}


# ---------------------------------------------------------------- corrupt / missing


def test_corrupt_peer_dropped_and_requeued() -> None:
    sched = make_sched([(4, 4)])
    sched.add_peer("A", range(4), 0.0)
    sched.add_peer("B", range(4), 0.0)
    assert len(sched.next_requests("A", 0.0)) == 4
    assert sched.chunk_corrupt("A", 0, 1.0) == [DropPeer("A", "corrupt")]
    assert sched.next_requests("A", 1.0) == []
    assert sched.add_peer("A", range(4), 1.0) is False
    assert sorted(indices(sched.next_requests("B", 1.0))) == [0, 1, 2, 3]
    assert "A" not in sched.peers()


def test_missing_chunk_forgotten_for_that_peer() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    sched.next_requests("A", 0.0)
    assert sched.chunk_missing("A", 0, 1.0) == []
    assert sched.unreachable_stripes() == {0: [0]}
    assert sched.next_requests("A", 1.0) == []
    sched.add_peer("B", {0}, 2.0)
    assert sched.unreachable_stripes() == {}
    assert indices(sched.next_requests("B", 2.0)) == [0]


# ---------------------------------------------------------------- peers joining / failing


def test_new_peer_mid_download() -> None:
    sched = make_sched([(2, 2), (2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    assert sched.unreachable_stripes() == {1: [2, 3]}
    assert sched.wants_more_peers()
    for r in sched.next_requests("A", 0.0):
        sched.chunk_received("A", r.index, CHUNK, 1.0)
    assert not sched.is_complete()
    sched.add_peer("B", {2, 3}, 2.0)
    assert not sched.wants_more_peers()
    assert sorted(indices(sched.next_requests("B", 2.0))) == [2, 3]


def test_add_peer_extends_have() -> None:
    sched = make_sched([(3, 3)])
    sched.add_peer("A", {0}, 0.0)
    assert indices(sched.next_requests("A", 0.0)) == [0]
    assert sched.add_peer("A", {1, 2}, 1.0) is True
    assert sorted(indices(sched.next_requests("A", 1.0))) == [1, 2]


def test_peer_failed_requeues_and_may_return() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    sched.next_requests("A", 0.0)
    assert sched.peer_failed("A", 1.0) == []
    assert sched.unreachable_stripes() == {0: [0, 1]}
    assert sched.next_requests("A", 1.0) == []
    assert sched.add_peer("A", {0, 1}, 2.0) is True
    assert sorted(indices(sched.next_requests("A", 2.0))) == [0, 1]


def test_bad_have_rejected() -> None:
    sched = make_sched([(2, 2)])
    with pytest.raises(ProtocolError):
        sched.add_peer("A", {5}, 0.0)
    with pytest.raises(ProtocolError):
        sched.add_peer("A", {-1}, 0.0)


# ---------------------------------------------------------------- failure detection


def test_unreachable_stripes_and_error() -> None:
    sched = make_sched([(4, 3), (2, 1)])
    sched.add_peer("A", {0, 4}, 0.0)
    sched.add_peer("B", {1, 4}, 0.0)
    assert sched.unreachable_stripes() == {0: [2, 3]}
    err = sched.unavailable_error()
    assert isinstance(err, FileUnavailableError)
    assert err.missing == {0: [sched.chunk_id(2), sched.chunk_id(3)]}
    assert "stripe 0 has 2 of the 3" in str(err)
    sched.add_peer("C", {3}, 1.0)
    assert sched.unreachable_stripes() == {}


def test_received_chunk_keeps_stripe_reachable_after_holder_leaves() -> None:
    sched = make_sched([(2, 2)])
    sched.add_peer("A", {0, 1}, 0.0)
    sched.next_requests("A", 0.0)
    sched.chunk_received("A", 0, CHUNK, 1.0)
    sched.peer_failed("A", 2.0)
    assert sched.unreachable_stripes() == {0: [1]}


# ---------------------------------------------------------------- resume


def test_resume_with_already_have() -> None:
    sched = make_sched([(4, 2), (4, 2)], already_have={0, 3, 5})
    assert sched.stripe_done(0)
    assert not sched.stripe_done(1)
    assert sched.progress(0.0).bytes_done == 2 * CHUNK
    sched.add_peer("A", range(8), 0.0)
    got = indices(sched.next_requests("A", 0.0))
    assert got == [4]  # stripe 1 needs one more; data chunk 4 (6, 7 are parity)
    assert sched.chunk_received("A", 4, CHUNK, 1.0) == [StripeComplete(1)]
    assert sched.is_complete()


def test_resume_everything_stored() -> None:
    sched = make_sched([(3, 2)], already_have={1, 2})
    assert sched.is_complete()
    assert sched.unreachable_stripes() == {}
    sched.add_peer("A", range(3), 0.0)
    assert sched.next_requests("A", 0.0) == []


def test_identical_chunks_arrive_together() -> None:
    ids = (b"x" * 32, b"y" * 32)
    stripes = [StripeSpec(ids, 2, (CHUNK, CHUNK)), StripeSpec(ids, 2, (CHUNK, CHUNK))]
    sched = DownloadScheduler(stripes, rng=random.Random(0))
    sched.add_peer("A", range(4), 0.0)
    sched.add_peer("B", range(4), 0.0)
    assert sorted(indices(sched.next_requests("A", 0.0))) == [0, 1, 2, 3]
    b = sched.next_requests("B", 0.0)
    assert sorted(indices(b)) == [0, 1, 2, 3]
    assert all(r.duplicate for r in b)
    decisions = sched.chunk_received("A", 0, CHUNK, 1.0) + sched.chunk_received("A", 1, CHUNK, 1.0)
    assert sched.is_complete()
    assert {StripeComplete(0), StripeComplete(1)} <= set(decisions)
    assert CancelRequest("A", 2) in decisions  # its twin 0 arrived
    assert sched.in_flight("A") == sched.in_flight("B") == frozenset()


# ---------------------------------------------------------------- progress


def test_progress_accounting() -> None:
    sched = make_sched([(3, 2), (3, 2)])
    sched.add_peer("A", range(6), 0.0)
    sched.add_peer("B", range(6), 0.0)
    p0 = sched.progress(0.0)
    assert (p0.bytes_done, p0.bytes_total, p0.fraction) == (0, 4 * CHUNK, 0.0)
    ra = sched.next_requests("A", 0.0)
    for i, r in enumerate(ra):
        sched.chunk_received("A", r.index, CHUNK, 1.0 + i)
    p = sched.progress(5.0)
    assert p.bytes_received == len(ra) * CHUNK
    assert p.per_peer["A"].bytes == len(ra) * CHUNK
    assert p.per_peer["A"].rate == pytest.approx(len(ra) * CHUNK / 5.0)
    assert p.per_peer["B"].bytes == 0
    assert p.bytes_done == p.stripes_done * 2 * CHUNK
    assert sched.is_complete() == (p.fraction == 1.0)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SchedulerConfig(max_in_flight_per_peer=0)
    with pytest.raises(ConfigError):
        SchedulerConfig(slow_peer_ratio=1.5)
    with pytest.raises(ConfigError):
        SchedulerConfig(min_peers_for_slow_check=1)
    with pytest.raises(ConfigError):
        StripeSpec((b"a",), 2, (1,))
    with pytest.raises(ConfigError):
        StripeSpec((b"a", b"b"), 1, (1,))
    with pytest.raises(IndexError):
        DownloadScheduler(make_stripes([(2, 2)]), already_have={2})


def test_late_events_about_dropped_peer_are_harmless() -> None:
    sched = make_sched([(3, 3)])
    sched.add_peer("A", range(3), 0.0)
    sched.add_peer("B", range(3), 0.0)
    reqs = sched.next_requests("A", 0.0)
    assert sched.chunk_corrupt("A", reqs[0].index, 1.0) == [DropPeer("A", "corrupt")]
    assert sched.chunk_corrupt("A", reqs[1].index, 1.0) == []  # already dropped
    assert sched.chunk_missing("A", reqs[1].index, 1.0) == []
    assert sched.peer_failed("A", 1.0) == []
    # a verified chunk that was still in the pipe is used anyway
    assert sched.chunk_received("A", reqs[2].index, CHUNK, 1.0) == []
    assert sched.stripe_ready(0) == {reqs[2].index}
    assert sorted(indices(sched.next_requests("B", 1.0))) == sorted(r.index for r in reqs[:2])


def test_failed_peer_keeps_byte_count_when_back() -> None:
    sched = make_sched([(4, 4)])
    sched.add_peer("A", range(4), 0.0)
    r = sched.next_requests("A", 0.0)[0]
    sched.chunk_received("A", r.index, CHUNK, 1.0)
    sched.peer_failed("A", 2.0)
    assert sched.progress(2.0).per_peer["A"].bytes == CHUNK
    assert sched.progress(2.0).per_peer["A"].active is False
    sched.add_peer("A", range(4), 3.0)
    assert sched.progress(3.0).per_peer["A"].bytes == CHUNK
    assert sched.progress(3.0).per_peer["A"].active is True


# ---------------------------------------------------------------- pipeline sized to the BDP


def test_pipeline_starts_at_its_floor_and_grows_to_the_bandwidth_delay_product() -> None:
    sched = make_sched([(20, 20)], pipeline_floor=2, max_in_flight_per_peer=8)
    sched.add_peer("A", range(20), 0.0)
    first = sched.next_requests("A", 0.0)
    assert len(first) == 2  # rate unknown: the floor
    sched.set_round_trip("A", 3.0)
    # 100 bytes in 1 busy second: 100 B/s x 3 s round trip = 3 chunks of 100 B, plus one
    sched.chunk_received("A", first[0].index, CHUNK, 1.0)
    assert sched.pipeline_depth("A") == 4
    assert len(sched.next_requests("A", 1.0)) == 3  # 1 still in flight + 3 = 4
    sched.set_round_trip("A", 100.0)  # only the smallest round trip seen counts
    sched.chunk_received("A", first[1].index, CHUNK, 1.5)
    assert sched.pipeline_depth("A") <= 8


def test_pipeline_never_beyond_its_cap_and_fixed_without_a_floor() -> None:
    sized = make_sched([(20, 20)], pipeline_floor=2, max_in_flight_per_peer=3)
    sized.add_peer("A", range(20), 0.0)
    sized.set_round_trip("A", 1000.0)
    (r, *_) = sized.next_requests("A", 0.0)
    sized.chunk_received("A", r.index, CHUNK, 0.001)  # a fast peer far away
    assert sized.pipeline_depth("A") == 3
    fixed = make_sched([(20, 20)], max_in_flight_per_peer=5)
    fixed.add_peer("A", range(20), 0.0)
    assert len(fixed.next_requests("A", 0.0)) == 5
    with pytest.raises(ConfigError):
        SchedulerConfig(pipeline_floor=9, max_in_flight_per_peer=8)


def test_a_fair_share_peer_grows_past_its_cap_only_when_its_bdp_needs_it() -> None:
    """A swarm peer is capped at ``max_in_flight_fair_share`` (2) unless its measured delivery
    rate times its measured round trip needs a deeper pipeline (a long, fast link); a BUSY puts
    it back at the cap until its next delivery measures it again."""
    far = make_sched([(30, 30)], pipeline_floor=2, max_in_flight_per_peer=8)
    far.add_peer("A", range(30), 0.0, fair_share=True)
    assert far.pipeline_depth("A") == 2
    first = far.next_requests("A", 0.0)
    assert len(first) == 2
    far.set_round_trip("A", 3.0)
    # 100 B in its first busy second: 100 B/s x 3 s = 3 chunks in the pipe, plus one
    far.chunk_received("A", first[0].index, CHUNK, 1.0)
    assert far.pipeline_depth("A") == 4
    more = far.next_requests("A", 1.0)
    assert len(more) == 3
    assert far.request_busy("A", more[0].index, 0.5, 1.1) == []
    assert far.pipeline_depth("A") == 2  # back at the cap
    far.chunk_received("A", first[1].index, CHUNK, 2.0)
    assert far.pipeline_depth("A") > 2  # measured again

    near = make_sched([(30, 30)], pipeline_floor=2, max_in_flight_per_peer=8)
    near.add_peer("A", range(30), 0.0, fair_share=True)
    near.set_round_trip("A", 0.001)  # a LAN: 100 B/s x 1 ms is far below one chunk
    (r, *_) = near.next_requests("A", 0.0)
    near.chunk_received("A", r.index, CHUNK, 1.0)
    assert near.pipeline_depth("A") == 2

    unmeasured = make_sched([(30, 30)], pipeline_floor=2, max_in_flight_per_peer=8)
    unmeasured.add_peer("A", range(30), 0.0, fair_share=True)
    (r, *_) = unmeasured.next_requests("A", 0.0)
    unmeasured.chunk_received("A", r.index, 100 * CHUNK, 1.0)  # fast, round trip never measured
    assert unmeasured.pipeline_depth("A") == 2

    fixed = make_sched([(30, 30)], max_in_flight_per_peer=8)  # no BDP sizing: the cap
    fixed.add_peer("A", range(30), 0.0, fair_share=True)
    fixed.set_round_trip("A", 3.0)
    (r, *_) = fixed.next_requests("A", 0.0)
    fixed.chunk_received("A", r.index, CHUNK, 1.0)
    assert fixed.pipeline_depth("A") == 2


def test_endgame_copies_only_requests_that_a_copy_would_beat() -> None:
    sched = make_sched([(4, 4)], max_in_flight_per_peer=2)
    sched.add_peer("A", range(4), 0.0)
    sched.add_peer("B", range(4), 0.0)
    a = indices(sched.next_requests("A", 0.0))
    b = indices(sched.next_requests("B", 0.0))
    # both deliver one chunk a second (100 B/s): rates known, each has one request left
    sched.chunk_received("A", a[0], CHUNK, 1.0)
    sched.chunk_received("B", b[0], CHUNK, 1.0)
    # B's last chunk is due in about a second; a copy from A (behind its own) would be later
    assert sched.next_requests("A", 1.0) == []
    # B is long overdue (several times its rate's prediction): now a copy is worth it
    (dup,) = sched.next_requests("A", 9.0)
    assert dup.duplicate
    assert dup.index == b[1]


def test_wanted_until_received_or_stripe_done() -> None:
    sched = make_sched([(3, 2)])
    sched.add_peer("A", range(3), 0.0)
    assert all(sched.wanted(g) for g in range(3))
    sched.chunk_received("A", 0, CHUNK, 1.0)
    assert not sched.wanted(0)
    assert sched.wanted(2)
    sched.chunk_received("A", 1, CHUNK, 1.0)  # stripe done: its parity is no longer wanted
    assert not sched.wanted(2)
