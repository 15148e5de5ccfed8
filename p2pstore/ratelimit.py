"""A shared asynchronous token bucket, used to cap the bytes a node uploads per second."""

from __future__ import annotations

import trio

from .errors import ConfigError


class RateLimiter:
    """Token bucket: ``bytes_per_second`` sustained, up to ``burst`` bytes at once after idling.

    One limiter may be shared by any number of tasks (e.g. every connection of a server); they are
    served first come, first served. A request bigger than ``burst`` is allowed once the bucket is
    full and leaves it in debt, so large chunks are still sent and the long-run rate still holds:
    over any interval of length T starting from a full bucket, at most ``burst + rate * T`` bytes
    are granted before the last grant (the last grant may overdraw by at most its own size).
    ``granted_bytes`` counts every byte granted so far.
    """

    def __init__(self, bytes_per_second: float, burst: int) -> None:
        if not bytes_per_second > 0:
            raise ConfigError("bytes_per_second must be positive")
        if burst < 1:
            raise ConfigError("burst must be at least 1 byte")
        self.bytes_per_second = float(bytes_per_second)
        self.burst = burst
        self.granted_bytes = 0
        self._tokens = float(burst)
        self._updated = trio.current_time()
        self._lock = trio.Lock()

    def _refill(self) -> None:
        now = trio.current_time()
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._updated) * self.bytes_per_second
        )
        self._updated = now

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` bytes may be sent, and take them from the bucket.

        Waiting tasks are served in arrival order. If cancelled while waiting, nothing is taken.
        Raises :class:`ValueError` for a negative ``n``.
        """
        if n < 0:
            raise ValueError("cannot acquire a negative number of bytes")
        async with self._lock:
            self._refill()
            need = min(n, self.burst)
            if self._tokens < need:
                await trio.sleep((need - self._tokens) / self.bytes_per_second)
                self._refill()
            self._tokens -= n
            self.granted_bytes += n
