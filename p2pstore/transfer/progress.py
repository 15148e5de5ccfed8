"""Per-peer byte and throughput accounting for the download scheduler (sans-IO).

Nothing here reads a clock: every method takes ``now`` (seconds, any monotonic origin) from the
caller, so tests drive time explicitly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

__all__ = ["PeerMeter", "PeerProgress", "Progress"]


@dataclass(frozen=True)
class PeerProgress:
    """A snapshot of one peer's contribution to a download.

    ``bytes`` counts verified chunk bytes received from the peer; ``rate`` is bytes per second of
    wall time over the scheduler's rate window; ``in_flight`` is the number of outstanding
    requests; ``active`` is false once the peer failed or was dropped.
    """

    bytes: int
    rate: float
    in_flight: int
    active: bool


@dataclass(frozen=True)
class Progress:
    """A snapshot of a whole download, for a progress callback.

    ``bytes_done`` counts the *data* bytes (file bytes, parity excluded) of stripes that are done
    (stored, or k verified chunks in hand), so it reaches ``bytes_total`` exactly when the download
    is complete and never goes backwards. ``bytes_received`` counts every verified chunk byte
    received in this download (data or parity), which moves smoothly but can exceed the file size.
    """

    bytes_done: int
    bytes_total: int
    bytes_received: int
    stripes_done: int
    stripes_total: int
    per_peer: Mapping[Hashable, PeerProgress] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``bytes_done / bytes_total`` (1.0 for an empty file)."""
        return 1.0 if self.bytes_total == 0 else self.bytes_done / self.bytes_total


class PeerMeter:
    """Counts one peer's bytes and *busy time* and derives windowed rates from them.

    Busy time is the time during which the peer had at least one request outstanding, so a peer
    that sits idle because nothing was assigned to it does not look slow. Samples older than the
    window are discarded, except the newest of them, which serves as the window's base; memory is
    bounded by the number of events inside one window.
    """

    def __init__(self, now: float, window: float) -> None:
        self.window = window
        self.bytes_total = 0
        self._busy_accum = 0.0
        self._busy_since: float | None = None
        # (time, cumulative bytes, cumulative busy seconds)
        self._samples: deque[tuple[float, int, float]] = deque([(now, 0, 0.0)])

    def busy_time(self, now: float) -> float:
        """Total seconds with at least one request outstanding, up to ``now``."""
        if self._busy_since is None:
            return self._busy_accum
        return self._busy_accum + max(0.0, now - self._busy_since)

    @property
    def busy(self) -> bool:
        """True while the peer has a request outstanding."""
        return self._busy_since is not None

    def set_busy(self, busy: bool, now: float) -> None:
        """Record that the peer started (``True``) or stopped (``False``) having requests out."""
        if busy and self._busy_since is None:
            self._busy_since = now
        elif not busy and self._busy_since is not None:
            self._busy_accum += max(0.0, now - self._busy_since)
            self._busy_since = None
        self._snapshot(now)

    def record(self, nbytes: int, now: float) -> None:
        """Count ``nbytes`` verified bytes received at ``now``."""
        self.bytes_total += nbytes
        self._snapshot(now)

    def _snapshot(self, now: float) -> None:
        samples = self._samples
        if samples and samples[-1][0] > now:
            now = samples[-1][0]  # a caller's clock going backwards must not break the window
        samples.append((now, self.bytes_total, self.busy_time(now)))
        horizon = now - self.window
        while len(samples) >= 2 and samples[1][0] <= horizon:
            samples.popleft()

    def rate(self, now: float) -> float:
        """Bytes per second of wall time over (about) the last window."""
        self._snapshot(now)
        t0, b0, _ = self._samples[0]
        t1, b1, _ = self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def busy_rate(self, now: float) -> float | None:
        """Bytes per second of busy time over (about) the last window; None if never busy in it."""
        self._snapshot(now)
        _, b0, u0 = self._samples[0]
        _, b1, u1 = self._samples[-1]
        return (b1 - b0) / (u1 - u0) if u1 > u0 else None
