"""Tests of the per-peer meter: busy time and windowed rates driven by explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.transfer.progress import PeerMeter, Progress


def test_busy_time_counts_only_outstanding_periods() -> None:
    m = PeerMeter(0.0, window=10.0)
    assert m.busy_time(5.0) == 0.0
    m.set_busy(True, 1.0)
    assert m.busy
    assert m.busy_time(3.0) == 2.0
    m.set_busy(False, 4.0)
    assert m.busy_time(9.0) == 3.0
    assert m.busy_rate(9.0) == 0.0


def test_idle_time_does_not_lower_busy_rate() -> None:
    m = PeerMeter(0.0, window=100.0)
    m.set_busy(True, 0.0)
    m.record(1000, 1.0)
    m.set_busy(False, 1.0)
    assert m.busy_rate(50.0) == pytest.approx(1000.0)
    assert m.rate(50.0) == pytest.approx(1000.0 / 50.0)


def test_rate_is_windowed() -> None:
    m = PeerMeter(0.0, window=2.0)
    m.set_busy(True, 0.0)
    for t in range(1, 11):  # 100 B/s for 10 s ...
        m.record(100, float(t))
    for t in range(11, 21):  # ... then 10 B/s
        m.record(10, float(t))
    assert m.rate(20.0) == pytest.approx(10.0)
    assert m.busy_rate(20.0) == pytest.approx(10.0)
    assert m.bytes_total == 1100


def test_never_busy_has_no_busy_rate() -> None:
    m = PeerMeter(0.0, window=2.0)
    assert m.busy_rate(10.0) is None
    assert m.rate(0.0) == 0.0


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 10**6), st.booleans()), max_size=50))
def test_rates_never_negative_and_samples_bounded(events: list[tuple[float, int, bool]]) -> None:
    m = PeerMeter(0.0, window=3.0)
    now = 0.0
    for dt, nbytes, busy in events:
        now += dt
        m.set_busy(busy, now)
        m.record(nbytes, now)
        assert m.rate(now) >= 0.0
        r = m.busy_rate(now)
        assert r is None or r >= 0.0
        assert m.busy_time(now) <= now + 1e-9
    assert m.bytes_total == sum(e[1] for e in events)


def test_progress_fraction() -> None:
    assert Progress(0, 0, 0, 0, 0).fraction == 1.0
    assert Progress(25, 100, 30, 1, 4).fraction == 0.25
