"""The repair core's plan: where to fetch from, where to place, and rebuilding shares."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.repair import Placer, RepairError, rebuild_shares, source_order, xor_distance

from .helpers import coded_file

FILE_ID = bytes(range(32))
NODES = [bytes([i]) * 32 for i in range(1, 13)]


@st.composite
def placements(
    draw: st.DrawFn,
) -> tuple[list[bytes], dict[bytes, dict[int, int]], list[tuple[int, int]]]:
    candidates = draw(st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=10))
    stripes = draw(st.integers(1, 5))
    held = {
        node: {s: draw(st.integers(0, 2)) for s in range(stripes)}
        for node in candidates
        if draw(st.booleans())
    }
    shares = draw(
        st.lists(
            st.tuples(st.integers(0, stripes - 1), st.integers(0, 7)), unique=True, max_size=12
        )
    )
    return candidates, held, shares


@given(placements())
def test_every_share_is_placed_once_and_spread_when_possible(
    case: tuple[list[bytes], dict[bytes, dict[int, int]], list[tuple[int, int]]],
) -> None:
    candidates, held, shares = case
    placer = Placer(FILE_ID, candidates, held)
    plan = placer.assign(shares)
    placed = sorted(item for items in plan.values() for item in items)
    assert placed == sorted(shares)
    by_distance = sorted(candidates, key=lambda n: xor_distance(n, FILE_ID))
    for stripe in {s for s, _ in shares}:
        wanted = sum(1 for s, _ in shares if s == stripe)
        free = [n for n in by_distance if held.get(n, {}).get(stripe, 0) == 0]
        got = [n for n, items in plan.items() for s, _ in items if s == stripe]
        if len(free) >= wanted:
            # never two shares of a stripe on one node while another can take one; closest first
            assert sorted(got) == sorted(free[:wanted])
        else:
            # every free node took one before any node took a second
            assert set(free) <= set(got)
            before = {n: held.get(n, {}).get(stripe, 0) for n in candidates}
            after = {n: before[n] + got.count(n) for n in candidates}
            assert max(after.values()) - min(after.values()) <= max(
                max(before.values()) - min(before.values()), 1
            )


@given(placements(), st.data())
def test_a_failed_node_never_gets_shares_again(
    case: tuple[list[bytes], dict[bytes, dict[int, int]], list[tuple[int, int]]],
    data: st.DataObject,
) -> None:
    candidates, held, shares = case
    placer = Placer(FILE_ID, candidates, held)
    plan = placer.assign(shares)
    if not plan:
        return
    victim = data.draw(st.sampled_from(sorted(plan)))
    again = placer.fail(victim, plan[victim])
    assert victim not in again
    assert sorted(i for items in again.values() for i in items) == sorted(plan[victim]) or (
        len(candidates) == 1 and again == {}
    )
    assert victim not in placer.assign(shares)


def test_placement_prefers_the_closest_node_without_the_stripe() -> None:
    far, near, nearest = (bytes([b]) + bytes(31) for b in (0xF0, 0x10, 0x01))
    file_id = bytes(32)
    placer = Placer(file_id, [far, near, nearest], {nearest: {0: 1}})
    assert placer.assign([(0, 4), (1, 4)]) == {near: [(0, 4)], nearest: [(1, 4)]}


@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 4))
def test_sources_put_local_shares_first_then_data_then_parity(seed: int, k: int, m: int) -> None:
    rng = random.Random(seed)
    me = NODES[0]
    shares = {
        j: rng.sample(NODES[:5], rng.randint(1, 3)) for j in range(k + m) if rng.random() < 0.8
    }
    order = source_order(shares, k, me, {}, rng)
    assert sorted(j for j, _ in order) == sorted(shares)
    keys = [(me not in nodes, j >= k) for j, nodes in order]
    assert keys == sorted(keys)
    for j, nodes in order:
        assert sorted(nodes) == sorted(shares[j])
        if me in nodes:
            assert nodes[0] == me


@given(
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 6 * 65536),
    st.integers(0, 2**32),
    st.data(),
)
def test_rebuilt_shares_are_the_lost_ones(
    k: int, m: int, size: int, seed: int, data: st.DataObject
) -> None:
    manifest, chunks = coded_file(k, m, size, seed)
    stripe = data.draw(st.integers(0, len(manifest.stripes) - 1))
    ids = manifest.stripes[stripe]
    needed = manifest.data_chunk_count(stripe)
    kept = data.draw(st.sets(st.integers(0, len(ids) - 1), min_size=needed, max_size=needed))
    lost = [j for j in range(len(ids)) if j not in kept]
    good = {j: chunks[ids[j]] for j in kept}
    rebuilt = rebuild_shares(manifest, stripe, good, lost)
    assert rebuilt == {j: chunks[ids[j]] for j in lost}
    # a share that is not genuine cannot slip through: the rebuilt ones would not match
    if lost:
        victim = data.draw(st.sampled_from(sorted(kept)))
        bad = dict(good)
        bad[victim] = bytes([good[victim][0] ^ 1]) + good[victim][1:]
        with pytest.raises(RepairError):
            rebuild_shares(manifest, stripe, bad, lost)


def test_copies_go_only_to_nodes_without_a_share_of_the_stripe() -> None:
    a, b, c = NODES[:3]
    placer = Placer(FILE_ID, [a, b, c], {a: {0: 2}, b: {0: 1}, c: {}})
    assert placer.assign([(0, 1), (0, 2)], free_only=True) == {c: [(0, 1)]}
