"""The repair core's timing: checks every jittered interval, one repairer per file at a time."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.manifest import Manifest
from p2pstore.repair import FileHealth, RepairTimer, assess, xor_distance

INTERVAL = 10.0
MANIFEST = Manifest.from_table("f", 4 * 65536, 65536, 4, 2, random.Random(1).randbytes(6 * 32))
FILE_ID = MANIFEST.file_id
NODES = sorted((bytes([i]) * 32 for i in range(1, 8)), key=lambda n: xor_distance(n, FILE_ID))


def _health(shares: int, holders: list[bytes] = NODES) -> FileHealth:
    """The one stripe reachable with ``shares`` shares, spread over ``holders``."""
    held = {node: {p} for node, p in zip(holders, range(shares), strict=False)}
    for p in range(len(holders), shares):
        held[holders[0]].add(p)
    return assess(MANIFEST, held)


def _timer(seed: int = 0) -> RepairTimer:
    return RepairTimer(INTERVAL, random.Random(seed), jitter=0.25, step_in=2.0)


def test_checks_come_every_jittered_interval() -> None:
    timer = _timer()
    timer.track(FILE_ID, 0.0)
    first = timer.next_due()
    assert first is not None
    assert 0.1 * INTERVAL <= first <= INTERVAL
    assert timer.due(first - 0.01) == []
    assert timer.due(first) == [FILE_ID]
    assert timer.due(first) == []  # not again while the check runs
    assert timer.next_due() is None
    assert timer.observed(_health(6), NODES[0], first, 1) == []
    second = timer.next_due()
    assert second is not None
    assert first + 0.75 * INTERVAL <= second <= first + 1.25 * INTERVAL
    timer.untrack(FILE_ID)
    assert timer.next_due() is None
    assert timer.due(1e9) == []


def test_the_closest_holder_repairs_at_once_and_only_below_the_threshold() -> None:
    timer = _timer()
    timer.track(FILE_ID, 0.0)
    timer.due(INTERVAL)
    assert timer.observed(_health(6), NODES[0], INTERVAL, 1) == []  # healthy
    timer.due(3 * INTERVAL)
    assert timer.observed(_health(5), NODES[0], 3 * INTERVAL, 0) == []  # above k + 0
    timer.due(5 * INTERVAL)
    assert timer.observed(_health(5), NODES[0], 5 * INTERVAL, 1) == [0]
    # a lost stripe is beyond repair: nothing to do
    timer.due(7 * INTERVAL)
    assert timer.observed(_health(3), NODES[0], 7 * INTERVAL, 1) == []


def test_a_holder_not_in_the_holders_list_counts_last() -> None:
    timer = _timer()
    timer.track(FILE_ID, 0.0)
    stranger = b"\xee" * 32
    timer.due(INTERVAL)
    ranks = len(NODES)
    assert timer.observed(_health(5), stranger, INTERVAL, 1) == []
    later = INTERVAL + ranks * 2.0 * INTERVAL
    timer.due(later)
    assert timer.observed(_health(5), stranger, later, 1) == [0]


@given(st.integers(1, 5), st.lists(st.floats(0.5, 1.5), min_size=1, max_size=30), st.integers())
def test_rank_r_steps_in_only_after_r_times_step_in_intervals(
    rank: int, gaps: list[float], seed: int
) -> None:
    """Whatever the timing of the checks, a holder of rank r repairs only once the need has
    lasted r * step_in intervals, and does once it has; a healthy check resets the wait."""
    timer = _timer(seed)
    me = NODES[rank]
    timer.track(FILE_ID, 0.0)
    now = 0.0
    since = None
    for gap in gaps:
        now += gap * INTERVAL
        timer.due(now)
        healthy = gap > 1.4  # now and then the file is found whole again
        result = timer.observed(_health(6 if healthy else 5), me, now, 1)
        if healthy:
            since = None
            assert result == []
            continue
        since = now if since is None else since
        assert (result == [0]) == (now - since >= rank * 2.0 * INTERVAL)


def test_the_holders_agree_on_one_repairer() -> None:
    """Every holder sees the same holders: at the first check that finds the need, exactly one
    (the closest) decides to repair."""
    health = _health(5)
    decisions = []
    for node in NODES[:5]:
        timer = _timer()
        timer.track(FILE_ID, 0.0)
        timer.due(INTERVAL)
        decisions.append(bool(timer.observed(health, node, INTERVAL, 1)))
    assert decisions == [True, False, False, False, False]
