"""Fair sharing of a node's upload rate between the peers asking it, with a BUSY answer.

:class:`FairShare` is the sans-IO core: a token bucket (the node's ``upload_limit``) in front of
per-peer queues served by **start-time fair queueing** (each peer has a virtual time that advances
by ``bytes / weight`` per grant; the waiting peer with the smallest virtual time goes next). So
under contention every peer asking gets an equal share of the uplink (or ``weight`` times one:
the reciprocity bonus, see :class:`UploadGate`), whatever the number of requests it pipelines, and
a peer that asks little is served at once.

**Admission.** A request is always admitted if its peer has nothing queued (it will be served
within about ``peers x chunk / rate``); otherwise it is admitted only if its estimated wait is at
most ``busy_after`` seconds. A refused request gets a retry hint (the time until the peer's queue
will have drained enough), which the server sends as BUSY: the client asks another holder or
again later, instead of waiting on a request that would time out. So every admitted request is
served within about ``busy_after`` (plus one round of the other peers), and a client's timeout
only fires for a peer that is really stuck.

:class:`UploadGate` is the Trio layer: ``await gate.acquire(peer, size)`` returns when the bytes
may be sent or raises :class:`UploadBusy`. No task of its own: every waiter polls the core when
woken, and wakes the waiters the core grants.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import trio

from ..errors import ConfigError, P2PStoreError

#: Seconds of queueing a request may expect before the server answers BUSY instead.
DEFAULT_BUSY_AFTER = 4.0
#: Shortest and longest retry hint, in seconds.
MIN_RETRY_AFTER = 0.25
MAX_RETRY_AFTER = 30.0
#: Token shortfall (bytes) treated as none: float rounding of ``now`` must not leave a waiter a
#: hair short of its grant at the time it was told to come back.
_TOKEN_EPSILON = 1e-3


class UploadBusy(P2PStoreError):
    """The upload queue refused a request; ask again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"upload queue busy; retry after {retry_after:.2f} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class _PeerQueue:
    vtime: float
    waiting: deque[tuple[int, int]] = field(default_factory=deque)  # (ticket, size)
    queued_bytes: int = 0


class FairShare:
    """The sans-IO fair upload queue; see the module docstring. ``now`` is any monotonic clock.

    ``offer`` returns a ticket (admitted) or raises :class:`UploadBusy`; ``poll(now)`` returns the
    tickets granted now (their bytes taken from the bucket) and when to poll again (``None``: not
    until something changes); ``withdraw`` forgets a waiting ticket (its requester gave up).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        now: float,
        *,
        busy_after: float = DEFAULT_BUSY_AFTER,
        weight_of: Callable[[Hashable], float] | None = None,
    ) -> None:
        if not rate > 0:
            raise ConfigError("the upload rate must be positive")
        if burst < 1:
            raise ConfigError("the burst must be at least 1 byte")
        if not busy_after > 0:
            raise ConfigError("busy_after must be positive")
        self.rate = float(rate)
        self.burst = burst
        self.busy_after = busy_after
        self.weight_of = weight_of or (lambda _peer: 1.0)
        self.granted_bytes = 0
        self.refused = 0
        self._tokens = float(burst)
        self._updated = now
        self._vclock = 0.0
        self._queues: dict[Hashable, _PeerQueue] = {}
        self._owner: dict[int, Hashable] = {}
        self._tickets = itertools.count(1)

    # ------------------------------------------------------------------ events

    def offer(self, peer: Hashable, size: int, now: float, *, may_refuse: bool = True) -> int:
        """Queue ``size`` bytes for ``peer``; its ticket. Raises :class:`UploadBusy` (only with
        ``may_refuse``) if the peer already has bytes queued and this request would wait more
        than ``busy_after`` seconds."""
        if size < 0:
            raise ValueError("cannot queue a negative number of bytes")
        self._refill(now)
        if may_refuse:
            queue = self._queues.get(peer)
            if queue is not None and queue.waiting:
                wait = self.estimated_wait(peer, size, now)
                if wait > self.busy_after:
                    self.refused += 1
                    retry = min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, wait - self.busy_after))
                    raise UploadBusy(retry)
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = _PeerQueue(self._vclock)
        elif not queue.waiting:
            queue.vtime = max(queue.vtime, self._vclock)
        ticket = next(self._tickets)
        queue.waiting.append((ticket, size))
        queue.queued_bytes += size
        self._owner[ticket] = peer
        return ticket

    def withdraw(self, ticket: int) -> None:
        """Forget a ticket that was not granted (no effect on a granted or unknown one)."""
        peer = self._owner.pop(ticket, None)
        if peer is None:
            return
        queue = self._queues[peer]
        for i, (t, size) in enumerate(queue.waiting):
            if t == ticket:
                del queue.waiting[i]
                queue.queued_bytes -= size
                break
        self._forget_if_idle(peer, queue)

    def poll(self, now: float) -> tuple[list[int], float | None]:
        """Grant what the bucket allows now, fairest first: ``(tickets, next poll time)``."""
        self._refill(now)
        granted: list[int] = []
        while True:
            peer = self._next_peer()
            if peer is None:
                return granted, None
            queue = self._queues[peer]
            ticket, size = queue.waiting[0]
            need = min(size, self.burst)
            if need - self._tokens > _TOKEN_EPSILON:  # (a wake-up at the computed time must
                return granted, now + (need - self._tokens) / self.rate  # not fall short)
            queue.waiting.popleft()
            queue.queued_bytes -= size
            del self._owner[ticket]
            self._tokens -= size
            self.granted_bytes += size
            self._vclock = queue.vtime
            queue.vtime += size / max(self.weight_of(peer), 1e-3)
            self._forget_if_idle(peer, queue)
            granted.append(ticket)

    # ------------------------------------------------------------------ queries

    def estimated_wait(self, peer: Hashable, size: int, now: float) -> float:
        """Seconds until ``size`` more bytes of ``peer`` would be granted, if every peer kept
        its queue: its own queued bytes plus, from each other waiting peer, as many bytes as fair
        queueing serves it meanwhile (in proportion to the weights), minus the bucket's tokens."""
        self._refill(now)
        mine = size
        queue = self._queues.get(peer)
        if queue is not None:
            mine += queue.queued_bytes
        share = mine / max(self.weight_of(peer), 1e-3)
        ahead = float(mine)
        for other, q in self._queues.items():
            if other != peer and q.waiting:
                ahead += min(q.queued_bytes, share * self.weight_of(other))
        return max(0.0, (ahead - self._tokens) / self.rate)

    def queued_peers(self) -> int:
        """Peers with bytes waiting."""
        return sum(1 for q in self._queues.values() if q.waiting)

    def queued_bytes(self, peer: Hashable) -> int:
        """Bytes of ``peer`` waiting."""
        queue = self._queues.get(peer)
        return queue.queued_bytes if queue is not None else 0

    # ------------------------------------------------------------------ internals

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def _next_peer(self) -> Hashable | None:
        best: Hashable | None = None
        best_vtime = 0.0
        for peer, queue in self._queues.items():
            if queue.waiting and (best is None or queue.vtime < best_vtime):
                best, best_vtime = peer, queue.vtime
        return best

    def _forget_if_idle(self, peer: Hashable, queue: _PeerQueue) -> None:
        # An idle peer keeps no state: it comes back at the current virtual time, so a light
        # user is served at once and nobody banks credit while away.
        if not queue.waiting:
            del self._queues[peer]


class UploadGate:
    """The Trio layer of :class:`FairShare`, shared by every connection of a node's server.

    ``weight_of(peer)`` is read at every grant: the node gives peers that currently send it
    chunks of a download a larger share (reciprocity); 1.0 for everyone else.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        busy_after: float = DEFAULT_BUSY_AFTER,
        weight_of: Callable[[Hashable], float] | None = None,
    ) -> None:
        self.core = FairShare(
            rate, burst, trio.current_time(), busy_after=busy_after, weight_of=weight_of
        )
        self._events: dict[int, trio.Event] = {}
        self._timer_deadline: float | None = None

    @property
    def granted_bytes(self) -> int:
        """Bytes granted so far (= chunk bytes this node uploaded through the gate)."""
        return self.core.granted_bytes

    async def acquire(self, peer: Hashable, size: int, *, may_refuse: bool = True) -> None:
        """Wait for ``peer``'s turn and ``size`` bytes of the rate; raise :class:`UploadBusy`
        if refused (see :meth:`FairShare.offer`). Cancelled while waiting, nothing is taken."""
        ticket = self.core.offer(peer, size, trio.current_time(), may_refuse=may_refuse)
        event = self._events[ticket] = trio.Event()
        try:
            while True:
                wake = self._poll()
                if event.is_set():
                    return
                with trio.move_on_at(wake if wake is not None else float("inf")):
                    await event.wait()
                if event.is_set():
                    return
        except BaseException:
            if not event.is_set():
                self.core.withdraw(ticket)
                self._poll()  # the bytes it held back may now go to someone else
            raise
        finally:
            self._events.pop(ticket, None)

    def _poll(self) -> float | None:
        granted, wake = self.core.poll(trio.current_time())
        for ticket in granted:
            waiter = self._events.get(ticket)
            if waiter is not None:
                waiter.set()
        return wake
