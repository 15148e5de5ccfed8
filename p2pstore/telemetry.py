"""A node's event counters: plain integers bumped by one-line hooks, read by ``/metrics``.

The node, its downloads and its chunk server call these methods at the event (a chunk fetched,
a chunk served, a look-up finished...). Nothing here does I/O or depends on the metrics library:
:mod:`p2pstore.http.metrics` turns a snapshot into the Prometheus text format at scrape time.
Counters only ever grow; they start at zero when the node starts.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .wire.server import ServerStore

__all__ = ["LOOKUP_BUCKETS", "CountingServerStore", "Histogram", "Telemetry"]

LOOKUP_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the look-up latency histogram: loopback to a slow WAN."""


@dataclass
class Histogram:
    """Cumulative-bucket histogram in Prometheus' sense (``le`` upper bounds, plus +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ending with ``("+Inf", count)``."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class Telemetry:
    """Counters of one node (see the module docstring). Bytes are payload bytes of chunks."""

    chunks_fetched: int = 0
    chunk_bytes_fetched: int = 0
    chunk_verify_failures: int = 0
    chunks_served: int = 0
    chunk_bytes_served: int = 0
    chunks_pushed_to_us: int = 0
    chunk_bytes_pushed_to_us: int = 0
    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    http_bytes_sent: int = 0
    http_bytes_received: int = 0
    gc_runs: int = 0
    gc_bytes_freed: int = 0
    lookups: dict[str, Histogram] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def chunk_fetched(self, nbytes: int) -> None:
        """A download received a chunk that matched its ID."""
        self.chunks_fetched += 1
        self.chunk_bytes_fetched += nbytes

    def chunk_corrupt(self) -> None:
        """A peer sent bytes that did not hash to the chunk ID asked for."""
        self.chunk_verify_failures += 1

    def lookup_done(self, kind: str, seconds: float) -> None:
        """A DHT look-up of ``kind`` (``find_providers``, ``find_node``) took ``seconds``."""
        histogram = self.lookups.get(kind)
        if histogram is None:
            histogram = self.lookups[kind] = Histogram(LOOKUP_BUCKETS)
        histogram.observe(seconds)

    @contextlib.contextmanager
    def timed_lookup(self, kind: str) -> Iterator[None]:
        """Time the block as one look-up of ``kind`` (failed and cancelled ones count too)."""
        start = self.clock()
        try:
            yield
        finally:
            self.lookup_done(kind, self.clock() - start)

    def gc_done(self, freed: int) -> None:
        """A garbage collection ran and freed ``freed`` bytes."""
        self.gc_runs += 1
        self.gc_bytes_freed += freed


class CountingServerStore:
    """The store as the chunk server sees it, counting chunks served and pushed to this node.

    Wraps a :class:`~p2pstore.wire.server.ServerStore` (the node's
    :class:`~p2pstore.store.ChunkStore`) without changing its behaviour.
    """

    def __init__(self, store: ServerStore, telemetry: Telemetry) -> None:
        self._store = store
        self._telemetry = telemetry

    def chunk_size(self, chunk_id: bytes) -> int | None:
        return self._store.chunk_size(chunk_id)

    def read_chunk_into(
        self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]
    ) -> memoryview:
        view = self._store.read_chunk_into(chunk_id, buffer_for)
        # Runs in a worker thread; a lost increment under a race is acceptable for a counter.
        self._telemetry.chunks_served += 1
        self._telemetry.chunk_bytes_served += len(view)
        return view

    async def put_chunk(self, chunk_id: bytes, data: bytes, *, enforce_quota: bool = False) -> bool:
        stored = await self._store.put_chunk(chunk_id, data, enforce_quota=enforce_quota)
        self._telemetry.chunks_pushed_to_us += 1
        self._telemetry.chunk_bytes_pushed_to_us += len(data)
        return stored

    async def have_bitmap(self, file_id: bytes) -> bytes | None:
        return await self._store.have_bitmap(file_id)
