"""The repair core's health view: bitmaps, per-stripe counts, verdicts, what to repair."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.manifest import Manifest
from p2pstore.repair import (
    StripeHealth,
    Verdict,
    assess,
    default_threshold,
    missing_shares,
    ranges,
    stacked_shares,
    stripe_holdings,
    stripes_to_repair,
    xor_distance,
)

from .helpers import id_manifests

NODES = [bytes([i]) * 32 for i in range(1, 9)]


@st.composite
def holdings(draw: st.DrawFn) -> tuple[Manifest, dict[bytes, set[int]]]:
    manifest = draw(id_manifests())
    count = manifest.chunk_count
    held = {
        node: draw(st.sets(st.integers(0, max(0, count - 1)), max_size=count)) if count else set()
        for node in draw(st.lists(st.sampled_from(NODES), unique=True, max_size=6))
    }
    return manifest, held


@given(holdings())
def test_assess_counts_distinct_shares_per_stripe(
    case: tuple[Manifest, dict[bytes, set[int]]],
) -> None:
    manifest, held = case
    health = assess(manifest, held, unreachable=2)
    union = set().union(*held.values()) if held else set()
    pos = 0
    for s, ids in enumerate(manifest.stripes):
        stripe = health.stripes[s]
        assert stripe.reachable == len({p for p in range(pos, pos + len(ids)) if p in union})
        assert stripe.total == len(ids)
        assert stripe.needed == manifest.data_chunk_count(s)
        pos += len(ids)
    verdicts = [s.verdict for s in health.stripes]
    if Verdict.LOST in verdicts:
        assert health.verdict is Verdict.LOST
    elif Verdict.DEGRADED in verdicts:
        assert health.verdict is Verdict.DEGRADED
    else:
        assert health.verdict is Verdict.HEALTHY
    states = [health.in_state(v) for v in Verdict]
    assert sorted(i for state in states for i in state) == list(range(len(manifest.stripes)))
    assert set(health.holders) == {n for n, p in held.items() if p}
    distances = [xor_distance(n, manifest.file_id) for n in health.holders]
    assert distances == sorted(distances)
    assert health.unreachable == 2
    report = health.as_report()
    assert report["verdict"] == health.verdict.value
    assert report["reachable"] == [s.reachable for s in health.stripes]


@given(holdings())
def test_missing_shares_are_exactly_those_nobody_reports(
    case: tuple[Manifest, dict[bytes, set[int]]],
) -> None:
    manifest, held = case
    health = assess(manifest, held)
    everything = range(len(manifest.stripes))
    missing = missing_shares(manifest, health, everything)
    holdings_ = stripe_holdings(manifest, health)
    for s in everything:
        absent = [j for st_, j in missing if st_ == s]
        assert len(absent) == health.stripes[s].total - health.stripes[s].reachable
        assert not set(absent) & set(holdings_[s])
        for j, nodes in holdings_[s].items():
            assert all(j + sum(len(x) for x in manifest.stripes[:s]) in held[n] for n in nodes)


def test_verdicts_of_a_stripe() -> None:
    assert StripeHealth(0, 6, 4, 6).verdict is Verdict.HEALTHY
    assert StripeHealth(0, 5, 4, 6).verdict is Verdict.DEGRADED
    assert StripeHealth(0, 4, 4, 6).verdict is Verdict.DEGRADED
    assert StripeHealth(0, 3, 4, 6).verdict is Verdict.LOST
    # a short last stripe of 2 data chunks needs 2 of its 4
    assert StripeHealth(0, 2, 2, 4).verdict is Verdict.DEGRADED


def test_stripes_to_repair_by_hand_and_by_threshold() -> None:
    manifest = Manifest.from_table("f", 3 * 4 * 65536, 65536, 4, 2, random.randbytes(32 * 18))
    # stripe 0 whole, stripe 1 lacks one share, stripe 2 lacks two; share j on node j
    present = set(range(6)) | set(range(6, 11)) | set(range(12, 16))
    held = {NODES[j]: {p for p in present if p % 6 == j} for j in range(6)}
    health = assess(manifest, held)
    assert health.verdict is Verdict.DEGRADED
    assert health.fewest == 4
    assert health.margin == 0
    assert stripes_to_repair(health) == [1, 2]
    assert stripes_to_repair(health, 0) == [2]
    assert stripes_to_repair(health, default_threshold(2)) == [1, 2]
    lost = assess(manifest, {NODES[j]: {j} for j in range(6)})
    assert lost.verdict is Verdict.LOST
    assert lost.in_state(Verdict.LOST) == [1, 2]
    assert stripes_to_repair(lost) == []


def test_default_threshold_repairs_at_the_first_loss_for_small_m() -> None:
    assert [default_threshold(m) for m in range(1, 7)] == [1, 1, 2, 2, 3, 3]


def test_an_empty_file_is_healthy() -> None:
    manifest = Manifest.from_table("f", 0, 65536, 4, 2, b"")
    health = assess(manifest, {})
    assert health.verdict is Verdict.HEALTHY
    assert health.fewest is None


@given(st.sets(st.integers(0, 60)))
def test_ranges_cover_exactly_the_indices(indices: set[int]) -> None:
    runs = ranges(indices)
    assert {i for first, last in runs for i in range(first, last + 1)} == indices
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(runs))


def _brute_spread(per_holder: list[set[int]]) -> int:
    """Largest set of distinct positions with a distinct holder for each, by trying all."""
    best = 0

    def walk(h: int, used: set[int]) -> None:
        nonlocal best
        best = max(best, len(used))
        if h == len(per_holder):
            return
        walk(h + 1, used)
        for p in per_holder[h] - used:
            walk(h + 1, used | {p})

    walk(0, set())
    return best


@given(holdings())
def test_spread_is_a_maximum_matching_of_holders_to_shares(
    case: tuple[Manifest, dict[bytes, set[int]]],
) -> None:
    manifest, held = case
    health = assess(manifest, held)
    pos = 0
    for s, ids in enumerate(manifest.stripes):
        stripe = health.stripes[s]
        per_holder = [
            {p - pos for p in held[n] if pos <= p < pos + len(ids)} for n in health.holders
        ]
        per_holder = [h for h in per_holder if h][:5]  # brute force stays small
        if len(per_holder) == len(health.holders):
            assert stripe.nodes == _brute_spread(per_holder)
        assert stripe.nodes <= stripe.reachable
        assert stripe.nodes <= len(health.holders)
        # the stacked shares are exactly the reachable ones left out of the matching
        assert len(health.stacked.get(s, ())) == stripe.reachable - stripe.nodes
        pos += len(ids)


def test_a_stripe_piled_on_one_node_is_repaired_before_it_is_degraded() -> None:
    """The uploader keeps every share; three of the six other holders leave. Every share is
    still reachable (healthy), but four of them only on the uploader: one departure from lost."""
    manifest = Manifest.from_table("f", 4 * 65536, 65536, 4, 2, random.randbytes(32 * 6))
    uploader, others = NODES[0], NODES[1:4]
    held = {uploader: set(range(6)), **{n: {i} for i, n in enumerate(others)}}
    health = assess(manifest, held)
    assert health.verdict is Verdict.HEALTHY
    assert health.stripes[0].nodes == 4
    assert health.fewest_nodes == 4
    assert stripes_to_repair(health, default_threshold(2)) == [0]
    assert stripes_to_repair(health) == [0]
    stacked = {j for _, j in stacked_shares(health, [0])}
    assert len(stacked) == 2  # the uploader keeps one of 3, 4, 5 as its own in the matching
    assert stacked < {3, 4, 5}
    # with every share on its own node there is nothing to do
    spread = assess(manifest, {n: {i} for i, n in enumerate(NODES[:6])})
    assert spread.stripes[0].nodes == 6
    assert stripes_to_repair(spread, 1) == stripes_to_repair(spread) == []
