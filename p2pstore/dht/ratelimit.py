"""Per-source token-bucket rate limiting of incoming requests, with a bounded table.

Sans-IO: the caller passes ``now``. The table holds at most ``max_sources`` IPs; the least
recently seen one is forgotten to make room (it then starts again with a full bucket, which costs
an attacker nothing it could not get by waiting). A source idle long enough for its bucket to be
full again is forgotten too: it is indistinguishable from a new one, and keeping it costs memory.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """Allows each source ``rate`` events per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        self._rate = rate
        self._burst = burst
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._refill = burst / rate
        """Seconds after which an idle source's bucket is full again."""

    def allow(self, source: str, now: float) -> bool:
        """Spend one token of ``source``'s bucket; ``False`` (nothing spent) if it is empty."""
        entry = self._buckets.get(source)
        if entry is None:
            tokens = self._burst
            if len(self._buckets) >= self._max_sources:
                self._buckets.popitem(last=False)
        else:
            tokens, last = entry
            tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        buckets = self._buckets
        buckets[source] = (tokens, now)
        buckets.move_to_end(source)
        while len(buckets) > 1:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._refill:
                break
            buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
