"""A node-wide byte budget for the gateway's read buffers (a byte-counting ``CapacityLimiter``).

Every stripe a gateway read holds in memory (chunks kept from the download, a stripe read back
from the store, waiting for the socket) is counted here, so concurrent reads together never hold
more than :attr:`ReadBudget.total` bytes, whatever their manifests say. Kept chunks are
opportunistic (:meth:`ReadBudget.try_take`, never waiting) and limited to half the budget, so a
read that must wait (:meth:`ReadBudget.take`) always gets its stripe once other reads' stripes
are sent: a stripe may be at most half the budget (:meth:`ReadBudget.fits`).
"""

from __future__ import annotations

import trio

DEFAULT_READ_BUDGET_BYTES = 256 << 20
"""Bytes all gateway reads of one node may buffer at once (256 MiB: 64 default 4 MiB stripes)."""


class ReadBudget:
    """Bytes buffered by gateway reads, at most :attr:`total` at any time."""

    def __init__(self, total: int = DEFAULT_READ_BUDGET_BYTES) -> None:
        if total < 2:
            raise ValueError("the read budget must be at least 2 bytes")
        self.total = total
        self.used = 0
        self.peak = 0  # the most ever in use (tests and metrics)
        self._changed = trio.Event()

    @property
    def keep_limit(self) -> int:
        """What opportunistic :meth:`try_take` may fill: half the budget."""
        return self.total // 2

    def fits(self, nbytes: int) -> bool:
        """Whether a buffer of ``nbytes`` (one stripe) can ever be taken without deadlock."""
        return nbytes <= self.total - self.keep_limit

    def _add(self, nbytes: int) -> None:
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def try_take(self, nbytes: int) -> bool:
        """Take ``nbytes`` now if in-use stays within :attr:`keep_limit`; never waits."""
        if self.used + nbytes > self.keep_limit:
            return False
        self._add(nbytes)
        return True

    async def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` fit, then take them (``nbytes`` must pass :meth:`fits`)."""
        if not self.fits(nbytes):
            raise ValueError(f"{nbytes} bytes can never fit a budget of {self.total}")
        while self.used + nbytes > self.total:
            await self._changed.wait()
        self._add(nbytes)

    def give(self, nbytes: int) -> None:
        """Return ``nbytes`` taken earlier and wake the waiters."""
        if nbytes:
            self.used -= nbytes
            assert self.used >= 0, "gave back more than was taken"
            self._changed.set()
            self._changed = trio.Event()
