"""Super-seeding: a node holding a whole file offers each watcher a few chunks, not all of them.

When many downloaders WATCH a node that holds every chunk of a file (the original holder of a
flash crowd), letting each pick freely makes them fetch the same chunks from it: its uplink, the
scarcest in the swarm, then carries some chunks many times before others leave it at all. So
(as BitTorrent's super-seeding) its BITMAP to each watcher offers only a small window of chunks,
chosen so that the windows of different watchers differ: the chunks served fewest times first,
data chunks before parity (with ``k`` of ``n`` needed per stripe, other shares are as good, and
data shares need no decoding), then the ones offered to fewest watchers, then at random. Each
chunk it serves to a watcher opens that watcher's window by one more chunk (HAVE_UPDATE). The
watchers get the rest of the file from each other.

A watcher alone (nobody to diversify against) is offered the whole file at once, as a plain
seed would; those that come later get windows. Liveness: a watcher that stops asking (it got its
window elsewhere) is offered one more chunk every ``reveal_interval`` seconds, so after at most
``n x reveal_interval`` it has been offered everything. A watcher whose requests are waiting in
this node's upload queue is not idle, only waiting for its fair share: it gets no such extra
offers (under a crowd of 16 each watcher is served about one chunk every 3 s, and 1 s reveals
grew every window three times faster than it was served, so windows overlapped and the holder
sent a third of its chunks twice or more; measured in issue 12). Offers are always true (the
node holds what it offers), so a watcher never sees a false claim; it may see a stripe
unreachable for a while, which the download tolerates while its peers' holdings keep growing.

:class:`OfferPlanner` is sans-IO: fed joins, leaves, served chunks and ``now``; returns the
indices to offer to each watcher.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import P2PStoreError
from ..manifest import Manifest
from ..wire.holdings import Subscription

#: Chunks a new watcher is offered at once.
DEFAULT_WINDOW = 4
#: Seconds without a chunk served to a watcher before it is offered one more anyway.
DEFAULT_REVEAL_INTERVAL = 1.0
#: Files with more chunks are seeded plainly (each reveal scans the file's chunks).
MAX_SUPERSEED_CHUNKS = 8192


@dataclass(eq=False)
class _Watcher:
    offered: set[int] = field(default_factory=set)
    last_reveal: float = 0.0


class OfferPlanner:
    """Which chunks of one fully held file to offer to which watcher (see the module docstring).

    ``parity[i]`` is True for chunk ``i`` (manifest order) that is a parity share.
    """

    def __init__(
        self,
        parity: Sequence[bool],
        *,
        window: int = DEFAULT_WINDOW,
        reveal_interval: float = DEFAULT_REVEAL_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.n = len(parity)
        self.window = window
        self.reveal_interval = reveal_interval
        self._parity = [1 if p else 0 for p in parity]
        order = list(range(self.n))
        (rng or random.Random()).shuffle(order)
        self._tiebreak = [0] * self.n
        for rank, g in enumerate(order):
            self._tiebreak[g] = rank
        self._served = [0] * self.n
        self._offered_to = [0] * self.n
        self._watchers: dict[Hashable, _Watcher] = {}

    def join(self, watcher: Hashable, now: float) -> list[int]:
        """A new watcher: the chunks to offer it in its BITMAP (all of them if it is alone)."""
        alone = not self._watchers
        w = self._watchers[watcher] = _Watcher(last_reveal=now)
        if alone:
            return self._offer(w, range(self.n))
        return self._reveal(w, self.window, now)

    def leave(self, watcher: Hashable) -> None:
        """The watch ended."""
        w = self._watchers.pop(watcher, None)
        if w is not None:
            for g in w.offered:
                self._offered_to[g] -= 1

    def served(self, watcher: Hashable | None, index: int, now: float) -> dict[Hashable, list[int]]:
        """Chunk ``index`` was sent (to ``watcher``, or to a peer that does not watch): what to
        offer now, per watcher. The watcher served gets one more chunk."""
        out: dict[Hashable, list[int]] = {}
        if not 0 <= index < self.n:
            return out
        self._served[index] += 1
        served_to = self._watchers.get(watcher) if watcher is not None else None
        if served_to is not None:
            got = self._reveal(served_to, 1, now)
            if got:
                out[watcher] = got
        return out

    def tick(self, watcher: Hashable, now: float, *, waiting: bool = False) -> list[int]:
        """Offer one more chunk to a watcher that was offered nothing for ``reveal_interval``.

        ``waiting``: the watcher has requests queued here; it is not idle, so nothing is
        offered and its idle time starts again."""
        w = self._watchers.get(watcher)
        if w is None:
            return []
        if waiting:
            w.last_reveal = now
            return []
        if now - w.last_reveal < self.reveal_interval:
            return []
        return self._reveal(w, 1, now)

    # ------------------------------------------------------------------ internals

    def _offer(self, w: _Watcher, indices: Sequence[int] | range) -> list[int]:
        new = [g for g in indices if g not in w.offered]
        for g in new:
            w.offered.add(g)
            self._offered_to[g] += 1
        return new

    def _reveal(self, w: _Watcher, count: int, now: float) -> list[int]:
        """The ``count`` best chunks not yet offered to ``w``: least served, data first, least
        offered, random. O(n) per call (a file's chunk count; fine for the thousands of chunks a
        flash-crowd file has)."""
        best = heapq.nsmallest(
            count,
            (g for g in range(self.n) if g not in w.offered),
            key=lambda g: (
                max(self._served[g], self._offered_to[g]),
                self._parity[g],
                self._served[g],
                self._tiebreak[g],
            ),
        )
        w.last_reveal = now
        return self._offer(w, best)


class SeedStore(Protocol):
    """What super-seeding needs of the local store."""

    def has_chunks(self, chunk_ids: Sequence[bytes]) -> list[bool]: ...

    async def load_manifest(self, file_id: bytes) -> Manifest: ...


class SuperSeeder:
    """The node's super-seeding: one :class:`OfferPlanner` per fully held file being watched,
    fed by the chunk server (joins, leaves, chunks served, ticks); offers go into the watchers'
    :class:`~p2pstore.wire.holdings.Subscription` objects as HAVE_UPDATEs.

    A file is super-seeded only if this node holds every chunk of it, has no download of it
    running (``downloading(file_id)``) and it has at most ``MAX_SUPERSEED_CHUNKS`` chunks;
    otherwise :meth:`join` returns ``None`` and the watcher gets the plain bitmap.
    """

    def __init__(
        self,
        store: SeedStore,
        downloading: Callable[[bytes], bool],
        *,
        window: int = DEFAULT_WINDOW,
        reveal_interval: float = DEFAULT_REVEAL_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.downloading = downloading
        self.window = window
        self.reveal_interval = reveal_interval
        self.rng = rng or random.Random()
        self._planners: dict[bytes, OfferPlanner] = {}
        self._subs: dict[bytes, dict[Hashable, list[Subscription]]] = {}
        self._by_chunk: dict[bytes, tuple[bytes, int]] = {}

    async def join(
        self, file_id: bytes, peer: Hashable, sub: Subscription, now: float
    ) -> tuple[int, list[int]] | None:
        """``(chunk count, indices to offer)`` for a new watcher, or ``None``: seed plainly."""
        planner = self._planners.get(file_id)
        if planner is None:
            planner = await self._plan(file_id)
            if planner is None:
                return None
            planner = self._planners.setdefault(file_id, planner)
        self._subs.setdefault(file_id, {}).setdefault(peer, []).append(sub)
        return planner.n, planner.join(peer, now) if len(self._subs[file_id][peer]) == 1 else []

    def leave(self, file_id: bytes, peer: Hashable, sub: Subscription) -> None:
        """A watch ended; the file's planner goes when its last watcher does."""
        peers = self._subs.get(file_id)
        planner = self._planners.get(file_id)
        if peers is None or planner is None or sub not in peers.get(peer, []):
            return
        peers[peer].remove(sub)
        if not peers[peer]:
            del peers[peer]
            planner.leave(peer)
        if not peers:
            del self._subs[file_id]
            del self._planners[file_id]
            self._by_chunk = {c: v for c, v in self._by_chunk.items() if v[0] != file_id}

    def served(self, peer: Hashable, chunk_id: bytes, now: float) -> None:
        """This node is sending ``chunk_id`` to ``peer``."""
        where = self._by_chunk.get(chunk_id)
        if where is None:
            return
        file_id, index = where
        planner = self._planners[file_id]
        watcher = peer if peer in self._subs.get(file_id, {}) else None
        self._deliver(file_id, planner.served(watcher, index, now))

    def tick(self, file_id: bytes, peer: Hashable, now: float, *, waiting: bool = False) -> None:
        """Time passed for ``peer``'s watch: it may be offered one more chunk (not while
        ``waiting``: it has requests queued here)."""
        planner = self._planners.get(file_id)
        if planner is not None:
            self._deliver(file_id, {peer: planner.tick(peer, now, waiting=waiting)})

    def _deliver(self, file_id: bytes, offers: dict[Hashable, list[int]]) -> None:
        peers = self._subs.get(file_id, {})
        for peer, indices in offers.items():
            for sub in peers.get(peer, ()):
                for g in indices:
                    sub.add(g)

    async def _plan(self, file_id: bytes) -> OfferPlanner | None:
        if self.downloading(file_id):
            return None
        try:
            manifest = await self.store.load_manifest(file_id)
        except P2PStoreError:
            return None
        ids = manifest.chunk_ids()
        if len(ids) > MAX_SUPERSEED_CHUNKS or not all(self.store.has_chunks(ids)):
            return None
        parity = [
            j >= manifest.data_chunk_count(s)
            for s, stripe in enumerate(manifest.stripes)
            for j in range(len(stripe))
        ]
        if file_id in self._planners:  # another watcher planned it meanwhile
            return self._planners[file_id]
        for g, chunk_id in enumerate(ids):
            self._by_chunk.setdefault(chunk_id, (file_id, g))
        planner = OfferPlanner(
            parity, window=self.window, reveal_interval=self.reveal_interval, rng=self.rng
        )
        return planner
