"""The shared token-bucket upload limiter, on a mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import ConfigError
from p2pstore.ratelimit import RateLimiter


async def test_burst_is_immediate_then_rate_holds(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(bytes_per_second=1000, burst=500)
    start = trio.current_time()
    await limiter.acquire(500)
    assert trio.current_time() == start
    await limiter.acquire(1000)
    assert trio.current_time() - start == pytest.approx(0.5)  # waited for a full bucket (500 B)
    await limiter.acquire(1000)  # the bucket was 500 B in debt: 1000 B to refill to 500 B
    assert trio.current_time() - start == pytest.approx(1.5)
    assert limiter.granted_bytes == 2500


async def test_shared_by_many_tasks_bounds_throughput(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(bytes_per_second=10_000, burst=2_000)
    start = trio.current_time()

    async def uploader() -> None:
        for _ in range(10):
            await limiter.acquire(1_000)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(uploader)
    elapsed = trio.current_time() - start
    # 50 kB at 10 kB/s with a 2 kB head start: no faster than the bucket allows
    assert elapsed >= (50_000 - 2_000) / 10_000 - 1e-6
    assert elapsed <= 50_000 / 10_000 + 0.1
    assert limiter.granted_bytes == 50_000


@given(st.lists(st.integers(0, 5_000), min_size=1, max_size=20))
def test_granted_bytes_never_exceed_the_bucket(sizes: list[int]) -> None:
    async def main() -> None:
        limiter = RateLimiter(bytes_per_second=1_000, burst=1_500)
        start = trio.current_time()
        for n in sizes:
            before = limiter.granted_bytes
            await limiter.acquire(n)
            # everything granted before this last grant fits burst + rate * elapsed
            assert before <= 1_500 + 1_000 * (trio.current_time() - start) + 1e-6

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_cancelled_acquire_takes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(bytes_per_second=100, burst=100)
    await limiter.acquire(100)
    with trio.move_on_after(0.1):
        await limiter.acquire(100)
    assert limiter.granted_bytes == 100


def test_invalid_settings_refused() -> None:
    with pytest.raises(ConfigError):
        RateLimiter(0, 10)
    with pytest.raises(ConfigError):
        RateLimiter(10, 0)
