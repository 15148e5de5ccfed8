"""The scheduler's swarming rules (busy peers, false claims, sparing seeds, sole providers never
dropped) and the super-seeding offer planner, all sans-IO."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.transfer import CancelRequest, DropPeer
from p2pstore.transfer.superseed import OfferPlanner

from .helpers import make_sched


def indices(requests: list) -> list[int]:  # type: ignore[type-arg]
    return [r.index for r in requests]


def test_busy_peer_rests_and_its_chunk_goes_elsewhere() -> None:
    sched = make_sched([(2, 1)], max_in_flight_per_peer=1, request_strikes_before_drop=1)
    sched.add_peer("A", {0, 1}, 0.0)
    sched.add_peer("B", {0, 1}, 0.0)
    (first,) = sched.next_requests("A", 0.0)
    assert sched.request_busy("A", first.index, 2.0, 0.5) == []  # no strike, no drop
    assert sched.busy_until("A") == 2.5
    assert sched.next_requests("A", 1.0) == []  # resting
    (other,) = sched.next_requests("B", 1.0)
    assert other.index == first.index  # re-queued for the other holder
    assert not sched.is_dropped("A")
    assert sched.next_requests("A", 2.5) != [] or sched.in_flight("B")


def test_busy_hints_are_floored_and_backed_off_until_a_delivery() -> None:
    """A 0 ms hint is no licence to spin: the rest is at least 0.25 s and doubles with each
    consecutive BUSY (up to the cap); a delivery resets it."""
    sched = make_sched([(4, 4)], max_in_flight_per_peer=1, max_busy_backoff=1.0)
    sched.add_peer("A", range(4), 0.0)
    rests = []
    now = 0.0
    for _ in range(4):
        (request,) = sched.next_requests("A", now)
        assert sched.request_busy("A", request.index, 0.0, now) == []
        rests.append(sched.busy_until("A") - now)
        now = sched.busy_until("A")
    assert rests == [0.25, 0.5, 1.0, 1.0]
    (request,) = sched.next_requests("A", now)
    sched.chunk_received("A", request.index, 100, now)
    (request,) = sched.next_requests("A", now)
    sched.request_busy("A", request.index, 0.0, now)
    assert sched.busy_until("A") == now + 0.25  # reset by the delivery
    (request,) = sched.next_requests("A", now + 0.25)
    sched.request_busy("A", request.index, 3.0, now + 0.25)
    assert sched.busy_until("A") == now + 3.25  # a longer hint is honoured


def test_a_sole_holder_that_only_answers_busy_is_dropped_after_the_give_up_time() -> None:
    """The only holder of a stripe is never dropped for being slow, but one that defers chunks
    for ``busy_give_up`` seconds without delivering any does not serve: dropped (the download
    can then fail cleanly instead of hanging). A holder that delivers now and then is kept."""
    sched = make_sched([(2, 2)], max_in_flight_per_peer=1, busy_give_up=10.0)
    sched.add_peer("liar", {0, 1}, 0.0)
    now = 0.0
    decisions: list[object] = []
    while not decisions:
        (request,) = sched.next_requests("liar", now)
        decisions = sched.request_busy("liar", request.index, 0.0, now)
        now = max(now, sched.busy_until("liar"))
    assert decisions == [DropPeer("liar", "busy")]
    assert 10.0 <= now < 20.0
    assert sched.is_dropped("liar")

    slow = make_sched([(20, 20)], max_in_flight_per_peer=1, busy_give_up=10.0)
    slow.add_peer("slow", range(20), 0.0)
    now = 0.0
    for step in range(40):  # BUSY three times, then a delivery: ~4 s between deliveries
        requests = slow.next_requests("slow", now)
        if not requests:
            break
        if step % 4 == 3:
            slow.chunk_received("slow", requests[0].index, 100, now)
        else:
            assert slow.request_busy("slow", requests[0].index, 0.0, now) == []
        now = max(now, slow.busy_until("slow"))
    assert now > 15.0  # longer than busy_give_up, with deliveries between
    assert not slow.is_dropped("slow")


def test_a_peer_lying_about_its_chunks_loses_only_its_own_standing() -> None:
    sched = make_sched([(8, 8)], false_claims_before_drop=3)
    sched.add_peer("liar", range(8), 0.0)
    sched.add_peer("honest", range(8), 0.0)
    decisions: list[object] = []
    for request in sched.next_requests("liar", 1.0)[:3]:
        decisions = list(sched.chunk_missing("liar", request.index, 1.0))
    assert decisions == [DropPeer("liar", "false claims")]
    assert sched.is_dropped("liar")
    assert sched.add_peer("liar", range(8), 2.0) is False  # no second chance in this download
    assert not sched.is_dropped("honest")
    assert sched.unreachable_stripes() == {}  # the honest peer still covers the file


def test_have_update_makes_an_unreachable_stripe_reachable() -> None:
    sched = make_sched([(3, 2), (3, 2)])
    sched.add_peer("A", {0}, 0.0)
    assert set(sched.unreachable_stripes()) == {0, 1}
    sched.add_peer("A", {1, 3, 4}, 1.0)  # an incremental update of the same peer
    assert sched.unreachable_stripes() == {}
    assert sorted(indices(sched.next_requests("A", 1.0))) == [0, 1, 3, 4]


def test_sole_provider_is_never_dropped_for_timeouts() -> None:
    sched = make_sched([(2, 2)], request_strikes_before_drop=2, max_in_flight_per_peer=2)
    sched.add_peer("only", {0, 1}, 0.0)
    for t in (1.0, 2.0, 3.0):
        for request in sched.next_requests("only", t):
            assert sched.request_timed_out("only", request.index, t) == []
    assert not sched.is_dropped("only")  # slow at worst
    sched.add_peer("other", {0, 1}, 4.0)
    dropped = []
    for request in sched.next_requests("only", 4.0):
        dropped += sched.request_timed_out("only", request.index, 4.0)
    assert dropped == [DropPeer("only", "timeouts")]  # now someone else holds its chunks


def test_fair_share_peers_are_not_judged_slow() -> None:
    sched = make_sched([(30, 30)], slow_peer_grace=1.0, max_in_flight_per_peer=1)
    sched.add_peer("fast", range(30), 0.0)
    sched.add_peer("fair", range(30), 0.0, fair_share=True)
    now = 0.0
    for _ in range(10):
        (f,) = sched.next_requests("fast", now)
        sched.next_requests("fair", now)
        now += 0.3
        sched.chunk_received("fast", f.index, 1_000_000, now)
        assert sched.check_slow_peers(now) == []
    assert not sched.is_dropped("fair")


def test_seed_is_spared_for_chunks_another_downloader_can_give() -> None:
    sched = make_sched([(4, 4), (4, 4)], spare_seeds=True, max_in_flight_per_peer=8)
    sched.add_peer("seed", range(8), 0.0)
    sched.add_peer("leecher", {0, 1}, 0.0)  # another downloader with two chunks
    assert sorted(indices(sched.next_requests("seed", 0.0))) == [2, 3, 4, 5, 6, 7]
    assert sorted(indices(sched.next_requests("leecher", 0.0))) == [0, 1]
    # Once the leecher is busy the seed is asked after all.
    sched2 = make_sched([(4, 4)], spare_seeds=True)
    sched2.add_peer("seed", range(4), 0.0)
    sched2.add_peer("leecher", {0}, 0.0)
    (first,) = sched2.next_requests("leecher", 0.0)
    sched2.request_busy("leecher", first.index, 5.0, 0.0)
    assert sorted(indices(sched2.next_requests("seed", 0.0))) == [0, 1, 2, 3]


def test_two_seeds_do_not_spare_each_other() -> None:
    sched = make_sched([(2, 2)], spare_seeds=True)
    sched.add_peer("s1", {0, 1}, 0.0)
    sched.add_peer("s2", {0, 1}, 0.0)
    assert sorted(indices(sched.next_requests("s1", 0.0))) == [0, 1]


# ---------------------------------------------------------------------- super-seeding


def test_lone_watcher_is_offered_everything() -> None:
    planner = OfferPlanner([False] * 6, window=2, rng=random.Random(0))
    assert sorted(planner.join("a", 0.0)) == list(range(6))


def test_watchers_get_distinct_windows_data_first_and_one_more_per_chunk_served() -> None:
    parity = [False, False, False, False, True, True] * 4  # 4 stripes of 4 + 2
    planner = OfferPlanner(parity, window=4, rng=random.Random(1))
    planner.join("first", 0.0)  # alone: everything
    windows = [set(planner.join(name, 0.0)) for name in ("b", "c", "d", "e")]
    assert all(len(w) == 4 for w in windows)
    assert len(set().union(*windows)) == 16  # the four windows do not overlap
    assert not any(parity[g] for w in windows for g in w)  # data before parity
    g = next(iter(windows[0]))
    more = planner.served("b", g, 0.1)
    assert list(more) == ["b"]
    assert len(more["b"]) == 1
    assert more["b"][0] not in windows[0]


@given(st.integers(1, 40), st.integers(2, 6), st.integers(0, 2**16))
def test_every_chunk_is_eventually_offered_to_an_idle_watcher(
    n: int, crowd: int, seed: int
) -> None:
    planner = OfferPlanner([False] * n, window=2, reveal_interval=1.0, rng=random.Random(seed))
    offered: dict[str, set[int]] = {}
    for i in range(crowd):
        offered[f"w{i}"] = set(planner.join(f"w{i}", 0.0))
    for second in range(1, n + 1):
        for name in offered:
            offered[name] |= set(planner.tick(name, float(second)))
    assert all(w == set(range(n)) for w in offered.values())


def test_a_watcher_waiting_in_the_upload_queue_is_not_idle() -> None:
    """Reveals on idle time are for watchers that stopped asking; one whose requests wait here
    only waits for its share, and extra offers would overlap other watchers' windows."""
    planner = OfferPlanner([False] * 12, window=2, reveal_interval=1.0, rng=random.Random(3))
    planner.join("first", 0.0)
    planner.join("w", 0.0)
    assert planner.tick("w", 1.5, waiting=True) == []
    assert planner.tick("w", 2.0) == []  # its idle time started again at 1.5
    assert len(planner.tick("w", 2.6)) == 1


def test_idle_fair_share_peer_may_take_a_share_beyond_k() -> None:
    """Stripe 0 needs 2 shares; both are requested from a busy peer. An idle swarm peer holding
    a third share is asked for it anyway: the first 2 to arrive complete the stripe."""
    sched = make_sched(
        [(3, 2)], idle_peer_stripe_slack=1, max_in_flight_fair_share=2, endgame_duplicates=0
    )
    sched.add_peer("busy", {0, 1}, 0.0, fair_share=True)
    assert sorted(indices(sched.next_requests("busy", 0.0))) == [0, 1]
    sched.add_peer("idle", {2}, 0.0, fair_share=True)
    assert indices(sched.next_requests("idle", 0.0)) == [2]
    sched.add_peer("plain", {2}, 0.0)  # a peer that is not fair-sharing gets no surplus
    assert sched.next_requests("plain", 0.0) == []
    decisions = sched.chunk_received("idle", 2, 100, 1.0) + sched.chunk_received(
        "busy", 0, 100, 1.0
    )
    assert CancelRequest("busy", 1) in decisions  # the surplus is withdrawn
    assert sched.is_complete()


def test_refresh_interval_backs_off_while_nothing_new_is_found() -> None:
    from p2pstore.transfer.download import DownloadConfig, next_refresh_interval

    cfg = DownloadConfig(refresh_interval=3.0, max_refresh_interval=60.0)
    waits = [1.0]
    for found in [False, False, False, False, True, False, False, False, False, False]:
        waits.append(next_refresh_interval(waits[-1], found, cfg))
    assert waits == [1.0, 2.0, 3.0, 6.0, 12.0, 3.0, 6.0, 12.0, 24.0, 48.0, 60.0]
    assert next_refresh_interval(1.0, True, cfg) == 2.0  # the quick start is kept
