"""The sans-IO scheduler of the parallel multi-peer download.

:class:`DownloadScheduler` decides which chunk to ask which peer for, and reacts to what happened
(chunk received, corrupt, missing, timed out, peer failed, peer slow). It never touches a socket
or a clock: the caller passes ``now`` (seconds from any monotonic origin, e.g.
``trio.current_time()``) on every event and acts on the returned :class:`ChunkRequest` and
decision objects. The Trio layer that drives it is one worker per peer::

    requests = sched.next_requests(peer, now)      # send these (up to the in-flight bound)
    ...
    decisions = sched.chunk_received(peer, index, len(data), now)   # after verifying the chunk
    # CancelRequest(peer, index): abandon that request; DropPeer(peer): cancel that worker;
    # StripeComplete(s): stripe s can be rebuilt from sched.stripe_ready(s).
    # After any event, idle workers should call next_requests again (work may have been re-queued).

Chunk indices are *global*: chunk ``j`` of stripe ``s`` has index ``offset(s) + j`` (manifest
order); within a stripe the first ``k`` chunks are data, the rest parity.

Priority order (what :meth:`DownloadScheduler.next_requests` picks first), most important first:

1. **Not timed out from this peer**: a chunk whose request to this peer already timed out is
   offered to this peer only when it has nothing else to do (other peers get it first).
2. **Stripes already started** (a chunk stored, received or requested) before new stripes, so the
   number of partly fetched stripes stays bounded (about the total in-flight requests / k).
3. **Rarest first**: fewest holders among the peers still in the download.
4. **Data before parity**: a data chunk needs no decoding.
5. **Random**: a permutation drawn once from the injected ``random.Random``.

Only chunks of stripes that still lack requests are offered: a stripe needs ``k`` chunks, so once
``k - (available + requested)`` reaches 0 none of its other chunks is requested (outside endgame).

**Endgame**: when no requestable chunk is left anywhere (every reachable stripe has enough chunks
available or in flight), a peer with free slots gets duplicates of chunks in flight elsewhere (at
most ``endgame_duplicates`` extra copies per chunk, fewest copies and oldest request first); when a
copy arrives, the other requests for it are cancelled.

**Proven peers first**: a peer that has delivered a verified chunk in this download and has a
free slot but nothing else to ask for takes a copy of any chunk whose every request has waited
``unproven_rescue_after`` (1 s) at peers that have never delivered one (oldest first; a peer not
proven yet takes one such copy at a time), so a crowd of false providers that claim everything
and send nothing holds no chunk once an honest peer has proven itself.

**Swarming** (peers added with ``fair_share=True``: they fair-share their uplink and answer
BUSY): :meth:`DownloadScheduler.request_busy` re-queues a chunk without a strike and rests that
peer until the hint; such peers are never judged slow; at most ``max_in_flight_fair_share`` (2)
requests go to each of them (more only where BDP sizing is on, ``pipeline_floor``, and its
measured rate x round trip needs more: a long fast link; a BUSY resets it to the cap); and one
with nothing in flight may be asked for up to
``idle_peer_stripe_slack`` (2) shares of a stripe beyond ``k`` (the first ``k`` to arrive
complete it; the surplus is cancelled). A peer holding every chunk (a seed) is asked only for
chunks no other usable, non-seed peer holds (``spare_seeds``). Holdings may grow at any time
(:meth:`DownloadScheduler.add_peer` on a live peer). A peer that answers MISSING for
``false_claims_before_drop`` chunks it claimed is dropped; the only live holder of chunks some
stripe needs is never dropped for timeouts.

Complexity: ``next_requests`` pops a per-peer binary heap of integer-encoded priority keys with
lazy invalidation, so a request costs amortised O(log n); the endgame scan is O(requests in
flight). Events cost O(stripe width x peers) except ``add_peer`` (O(|have|)) and dropping a peer
(O(|have| x peers) heap pushes for the chunks that lose a holder). Measured (this machine, shared):
150k chunks x 8 peers, downloading everything through the scheduler (``pytest -s -m slow
tests/transfer/test_scheduler_bench.py``): ``add_peer`` with 90k chunks ~0.16 s, ``next_requests``
~40-55 us per request (about 20 heap operations: stale entries), ``chunk_received`` ~5-7 us.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from ..errors import ConfigError, FileUnavailableError, ProtocolError
from .progress import PeerMeter, PeerProgress, Progress

__all__ = [
    "CancelRequest",
    "ChunkRequest",
    "Decision",
    "DownloadScheduler",
    "DropPeer",
    "SchedulerConfig",
    "StripeComplete",
    "StripeSpec",
]

#: Default requests in flight per peer: 8 x 1 MiB chunks keeps a 100 Mbit/s x 100 ms pipe full.
DEFAULT_MAX_IN_FLIGHT_PER_PEER = 8
#: The smallest per-peer pipeline when it is sized to the bandwidth-delay product: one chunk
#: being sent and one queued behind it, so a peer's uplink never waits for our next request.
#: (Peers that fair-share their uplink, i.e. every peer speaking ``swarm``, are capped at
#: ``max_in_flight_fair_share`` unless their measured BDP needs more.)
DEFAULT_PIPELINE_FLOOR = 2
#: Round trip assumed for a peer whose round trip was never measured (``set_round_trip``).
DEFAULT_ASSUMED_ROUND_TRIP = 0.05
#: An endgame copy is sent only if it should arrive this many times sooner than the original.
ENDGAME_GAIN = 1.25
#: A request this many times later than its peer's rate predicts counts as stalled: copy it.
ENDGAME_OVERDUE_FACTOR = 2.0
#: A peer slower than this fraction of the others' median rate is dropped (BitTorrent "snubbed").
DEFAULT_SLOW_PEER_RATIO = 0.125
#: Busy seconds before a peer's rate is judged: before that, slow start and handshake dominate.
DEFAULT_SLOW_PEER_GRACE = 2.0
#: A median needs someone to compare with: the peer judged plus at least one other.
DEFAULT_MIN_PEERS_FOR_SLOW_CHECK = 2
#: Extra copies per chunk in endgame: one duplicate hides a single stalled peer at 2x the tail cost.
DEFAULT_ENDGAME_DUPLICATES = 1
#: Consecutive timeouts before a peer is dropped: one lost request is noise, three is a pattern.
DEFAULT_REQUEST_STRIKES_BEFORE_DROP = 3
#: Seconds over which rates are measured: long enough to span several 1 MiB chunks on a slow link.
DEFAULT_RATE_WINDOW = 5.0
#: Chunks a peer claimed (HAVE, BITMAP, HAVE_UPDATE) and then answered MISSING before it is
#: dropped: one can be an honest loss (a chunk quarantined), a few is a peer that lies.
DEFAULT_FALSE_CLAIMS_BEFORE_DROP = 4
#: Requests in flight to a peer that fair-shares its uplink (see SchedulerConfig).
DEFAULT_MAX_IN_FLIGHT_FAIR_SHARE = 2
#: Extra shares per stripe an idle fair-sharing peer may be asked for (see SchedulerConfig).
DEFAULT_IDLE_PEER_STRIPE_SLACK = 2
#: The shortest rest after a BUSY, whatever the hint (the spec's floor: a 0 ms hint is a spin).
DEFAULT_MIN_BUSY_RETRY = 0.25
#: Consecutive BUSYs (no delivery between) double the rest from the floor up to this.
DEFAULT_MAX_BUSY_BACKOFF = 8.0
#: Seconds a peer may keep deferring chunks by BUSY with no delivery before it is dropped: an
#: honest fair-sharing peer always admits a peer with nothing queued, so it never gets there.
DEFAULT_BUSY_GIVE_UP = 120.0
#: Seconds a request may wait at peers that have never delivered a verified chunk in this
#: download before a peer that has may take a copy of it (see SchedulerConfig).
DEFAULT_UNPROVEN_RESCUE_AFTER = 1.0
#: Largest file (chunks) whose idle fair-sharing peers get their heaps rebuilt (O(chunks held)).
_SLACK_REBUILD_LIMIT = 8192
#: Chunks examined and passed over per call when sparing a seed (bounds ``next_requests``).
_SPARE_SCAN_LIMIT = 64
#: Rarity values are clamped to this in the priority key so the key stays a fixed-width integer;
#: the order among chunks held by more peers than this does not matter.
_RARITY_CAP = 1 << 16
#: A peer's heap is rebuilt once stale entries make it this many times larger than its HAVE set.
_HEAP_SLACK_FACTOR = 4
#: ... plus this, so small heaps are not rebuilt all the time.
_HEAP_SLACK_MIN = 1024


@dataclass(frozen=True)
class SchedulerConfig:
    """Tunables of a download; every field is validated (``ConfigError``) on construction."""

    max_in_flight_per_peer: int = DEFAULT_MAX_IN_FLIGHT_PER_PEER
    slow_peer_ratio: float = DEFAULT_SLOW_PEER_RATIO
    slow_peer_grace: float = DEFAULT_SLOW_PEER_GRACE
    min_peers_for_slow_check: int = DEFAULT_MIN_PEERS_FOR_SLOW_CHECK
    endgame_duplicates: int = DEFAULT_ENDGAME_DUPLICATES
    request_strikes_before_drop: int = DEFAULT_REQUEST_STRIKES_BEFORE_DROP
    rate_window: float = DEFAULT_RATE_WINDOW
    false_claims_before_drop: int = DEFAULT_FALSE_CLAIMS_BEFORE_DROP
    max_in_flight_fair_share: int = DEFAULT_MAX_IN_FLIGHT_FAIR_SHARE
    """Requests in flight to a ``fair_share`` peer: it serves each of its downloaders in turn
    and answers BUSY to a deeper queue, so more would only reserve chunks (and stripe slots)
    that other peers could give sooner."""
    idle_peer_stripe_slack: int = DEFAULT_IDLE_PEER_STRIPE_SLACK
    """Shares of a stripe beyond ``k`` that a ``fair_share`` peer with nothing in flight may be
    asked for. In a crowd, a stripe's ``k`` requests often wait in the queues of busy peers while
    other peers, idle, hold other shares of it: with erasure coding any ``k`` shares complete
    the stripe, and its completion cancels the surplus (withdrawn from those queues unsent)."""
    spare_seeds: bool = True
    """Ask a peer holding every chunk (a seed) only for chunks no other usable peer holds: the
    seed's uplink is the swarm's scarcest resource, other downloaders can give the rest."""
    min_busy_retry: float = DEFAULT_MIN_BUSY_RETRY
    """Floor of the rest after a BUSY; the n-th consecutive BUSY of a peer (no delivery
    between) rests it ``min(max_busy_backoff, min_busy_retry * 2**(n-1))`` or the hint if
    longer."""
    max_busy_backoff: float = DEFAULT_MAX_BUSY_BACKOFF
    unproven_rescue_after: float = DEFAULT_UNPROVEN_RESCUE_AFTER
    """Peers that have delivered a verified chunk in this download are preferred to those that
    have not: a proven peer with a free slot and nothing else to ask for takes a copy of a
    chunk whose every request in flight is at unproven peers and is this many seconds old
    (oldest first; the first copy to arrive cancels the others); an unproven peer takes one
    such copy at a time. Fifty false providers that claim every chunk and never send one then
    hold no chunk hostage once one honest peer has delivered, and cannot keep an honest
    newcomer from delivering its first; ``math.inf`` turns it off."""
    pipeline_floor: int | None = None
    """``None``: every peer gets ``max_in_flight_per_peer`` requests (a fixed pipeline). A
    number: each peer's pipeline is sized to its bandwidth-delay product, ``1 + ceil(rate x
    round trip / chunk size)`` requests (rate: its measured busy rate; round trip: see
    :meth:`DownloadScheduler.set_round_trip`), at least ``pipeline_floor`` (also before its rate is
    known) and at most ``max_in_flight_per_peer``. A deeper pipeline than the link needs only
    queues chunks at the peer (they would be no sooner) and, with many peers, puts the whole
    file in flight at once, so endgame (duplicates) starts at the first request."""
    busy_give_up: float = DEFAULT_BUSY_GIVE_UP
    """A peer whose BUSYs have deferred chunks for this long since its last delivery (or since
    its first BUSY) is dropped (``DropPeer(peer, "busy")``), even if it is the only holder: it
    holds the chunks but does not serve them, and waiting on it would hang the download."""

    def __post_init__(self) -> None:
        if self.max_in_flight_per_peer < 1:
            raise ConfigError("max_in_flight_per_peer must be >= 1")
        if not 0.0 <= self.slow_peer_ratio < 1.0:
            raise ConfigError("slow_peer_ratio must be in [0, 1)")
        if self.slow_peer_grace < 0:
            raise ConfigError("slow_peer_grace must be >= 0")
        if self.min_peers_for_slow_check < 2:
            raise ConfigError("min_peers_for_slow_check must be >= 2")
        if self.endgame_duplicates < 0:
            raise ConfigError("endgame_duplicates must be >= 0")
        if self.request_strikes_before_drop < 1:
            raise ConfigError("request_strikes_before_drop must be >= 1")
        if self.rate_window <= 0:
            raise ConfigError("rate_window must be > 0")
        if self.max_in_flight_fair_share < 1:
            raise ConfigError("max_in_flight_fair_share must be >= 1")
        if self.idle_peer_stripe_slack < 0:
            raise ConfigError("idle_peer_stripe_slack must be >= 0")
        if self.false_claims_before_drop < 1:
            raise ConfigError("false_claims_before_drop must be >= 1")
        if not 0 < self.min_busy_retry <= self.max_busy_backoff:
            raise ConfigError("need 0 < min_busy_retry <= max_busy_backoff")
        if self.busy_give_up <= 0:
            raise ConfigError("busy_give_up must be > 0")
        if not self.unproven_rescue_after >= 0:
            raise ConfigError("unproven_rescue_after must be >= 0")
        if self.pipeline_floor is not None and not (
            1 <= self.pipeline_floor <= self.max_in_flight_per_peer
        ):
            raise ConfigError("pipeline_floor must be in [1, max_in_flight_per_peer] (or None)")


@dataclass(frozen=True)
class StripeSpec:
    """One stripe of a file: its chunk IDs (``k`` data chunks, then parity) and their sizes."""

    chunk_ids: tuple[bytes, ...]
    k: int
    chunk_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.chunk_ids)
        if len(self.chunk_sizes) != n:
            raise ConfigError("a stripe needs one size per chunk ID")
        if not 1 <= self.k <= n:
            raise ConfigError(f"stripe k={self.k} must be in [1, {n}]")
        if any(size < 0 for size in self.chunk_sizes):
            raise ConfigError("chunk sizes must be >= 0")


@dataclass(frozen=True)
class ChunkRequest:
    """Ask ``peer`` for chunk ``index`` (stripe ``stripe``, share ``share``, ``size`` bytes).

    ``duplicate`` is true for an endgame copy of a request already in flight to another peer.
    """

    peer: Hashable
    index: int
    chunk_id: bytes
    stripe: int
    share: int
    size: int
    duplicate: bool = False


@dataclass(frozen=True)
class CancelRequest:
    """Abandon the request for chunk ``index`` to ``peer``; the scheduler has forgotten it."""

    peer: Hashable
    index: int


@dataclass(frozen=True)
class StripeComplete:
    """Stripe ``stripe`` has ``k`` verified chunks; rebuild it from :meth:`stripe_ready`."""

    stripe: int


@dataclass(frozen=True)
class DropPeer:
    """Stop talking to ``peer`` for this download (cancel its worker); its requests were re-queued.

    ``reason`` is ``"corrupt"``, ``"slow"``, ``"timeouts"``, ``"false claims"`` or ``"busy"``.
    """

    peer: Hashable
    reason: str


Decision: TypeAlias = CancelRequest | StripeComplete | DropPeer
"""What an event asks the caller to do."""


@dataclass(eq=False)
class _Peer:
    name: Hashable
    have: set[int]
    meter: PeerMeter
    heap: list[int] = field(default_factory=list)
    in_flight: dict[int, float] = field(default_factory=dict)
    timed_out: set[int] = field(default_factory=set)
    strikes: int = 0
    busy_until: float = 0.0
    false_claims: int = 0
    fair_share: bool = False
    busy_streak: int = 0
    deferring_since: float | None = None  # first BUSY since its last delivery
    depth: int = 0  # its pipeline (requests in flight) when sized to the BDP; 0 = not yet
    # 1 + ceil(rate x measured round trip / chunk) from its last delivery; 0: not measured (or
    # reset by a BUSY). Lets a fair-share peer's pipeline grow past its cap (see _max_in_flight).
    bdp: int = 0
    round_trip: float = DEFAULT_ASSUMED_ROUND_TRIP
    round_trip_measured: bool = False
    last_delivery: float | None = None


class DownloadScheduler:
    """Decides, for one file, which chunk to request from which peer (see the module docstring).

    Every method is synchronous and never blocks; events about unknown or dropped peers are
    ignored (a verified chunk received from a dropped peer is still used). Indices out of range
    raise ``IndexError`` for local calls and ``ProtocolError`` for a peer's HAVE set.
    """

    def __init__(
        self,
        stripes: Sequence[StripeSpec],
        *,
        already_have: Iterable[int] = (),
        config: SchedulerConfig | None = None,
        rng: random.Random | None = None,
        window: tuple[int, int] | None = None,
    ) -> None:
        """Plan a download of ``stripes``; ``already_have`` are global indices already stored.

        ``window``: sequential mode (see :meth:`set_window`), starting with that window.
        """
        self.config = config or SchedulerConfig()
        self.stripes: tuple[StripeSpec, ...] = tuple(stripes)
        # Sequential mode (streaming reads): only stripes in [first, end) are requested, lowest
        # stripe first; None is the classic whole-file order above.
        self._window: tuple[int, int] | None = None
        self._window_endgame = False
        if window is not None:
            self._window = self._check_window(*window)
        rng = rng or random.Random()
        nstripes = len(self.stripes)
        self._offset: list[int] = []
        self._stripe_of: list[int] = []
        self._is_parity: list[int] = []
        self._size: list[int] = []
        self._ids: list[bytes] = []
        for s, spec in enumerate(self.stripes):
            self._offset.append(len(self._stripe_of))
            for j, (cid, size) in enumerate(zip(spec.chunk_ids, spec.chunk_sizes, strict=True)):
                self._stripe_of.append(s)
                self._is_parity.append(1 if j >= spec.k else 0)
                self._size.append(size)
                self._ids.append(cid)
        self._offset.append(len(self._stripe_of))
        n = self._n = len(self._stripe_of)
        self._k = [spec.k for spec in self.stripes]
        # Identical chunks (same ID) anywhere in the file arrive together.
        by_id: dict[bytes, list[int]] = {}
        for g, cid in enumerate(self._ids):
            by_id.setdefault(cid, []).append(g)
        self._twins: dict[int, list[int]] = {
            g: same for same in by_id.values() if len(same) > 1 for g in same
        }
        perm = list(range(n))
        rng.shuffle(perm)
        self._tiebreak = perm
        self._by_tiebreak = [0] * n
        for g, t in enumerate(perm):
            self._by_tiebreak[t] = g

        self._avail = bytearray(n)
        self._rarity = [0] * n
        self._in_flight: dict[int, dict[Hashable, float]] = {}
        self._avail_count = [0] * nstripes
        self._flight_count = [0] * nstripes  # distinct chunks in flight
        self._reach = [0] * nstripes  # chunks available or held by a live peer
        self._done = bytearray(nstripes)
        self._opened = bytearray(nstripes)
        self._need = [0] * nstripes  # requestable chunks the stripe still lacks requests for
        self._total_need = 0
        self._unreachable: set[int] = set()
        self._done_count = 0
        self._bytes_done = 0
        self._bytes_received = 0
        self._bytes_total = sum(sum(sp.chunk_sizes[: sp.k]) for sp in self.stripes)
        self._peers: dict[Hashable, _Peer] = {}
        self._banned: set[Hashable] = set()
        self._gone: dict[Hashable, _Peer] = {}

        for g in sorted(set(already_have)):  # in order: the data shares of a stripe come first
            if not 0 <= g < n:
                raise IndexError(f"chunk index {g} out of range [0, {n})")
            self._mark_available(g, [], 0.0)
        for s in range(nstripes):
            self._refresh(s)

    # ------------------------------------------------------------------ peers

    def add_peer(
        self, peer: Hashable, have: Iterable[int], now: float, *, fair_share: bool = False
    ) -> bool:
        """Add a provider holding the chunks ``have`` (global indices), or extend a live one's
        (a have-update: availability may grow at any time during the download).

        ``fair_share`` marks a peer that shares its uplink fairly between its downloaders and
        answers BUSY when it cannot serve soon (``swarm``): its rate is its share of a crowded
        uplink, not a fault, so :meth:`check_slow_peers` never judges it (a stalled one still
        times out). Returns False (and does nothing) for a peer dropped from this download; a
        peer that merely failed (:meth:`peer_failed`) may be added again. Raises
        ``ProtocolError`` if an index is out of range (a malformed HAVE from that peer).
        """
        if peer in self._banned:
            return False
        indices = set(have)
        n = self._n
        for g in indices:
            if not (isinstance(g, int) and 0 <= g < n):
                raise ProtocolError(f"HAVE names chunk {g!r}, outside [0, {n})")
        state = self._peers.get(peer)
        if state is None:
            old = self._gone.pop(peer, None)  # a failed peer back: keep its byte count
            meter = old.meter if old is not None else PeerMeter(now, self.config.rate_window)
            state = _Peer(peer, set(), meter)
            self._peers[peer] = state
        state.fair_share = state.fair_share or fair_share
        indices -= state.have
        state.have |= indices
        touched: set[int] = set()
        for g in indices:
            self._rarity[g] += 1
            if self._rarity[g] == 1 and not self._avail[g]:
                s = self._stripe_of[g]
                self._reach[s] += 1
                touched.add(s)
        for s in touched:
            self._refresh(s)
        key = self._key
        state.heap.extend(key(state, g) for g in indices if self._eligible(state, g))
        heapq.heapify(state.heap)
        return True

    def peer_failed(self, peer: Hashable, now: float) -> list[Decision]:
        """The connection to ``peer`` was lost: re-queue its requests and forget its chunks.

        The peer may be added again later with :meth:`add_peer`. Returns no decisions today (the
        list is for symmetry with other events).
        """
        self._remove_peer(peer, now, ban=False)
        return []

    def check_slow_peers(self, now: float) -> list[Decision]:
        """Drop the slowest peer if it is far behind the others; call this periodically (~1 s).

        Only peers with at least ``slow_peer_grace`` seconds of busy time are judged, and only if
        there are ``min_peers_for_slow_check`` of them (``fair_share`` peers are never judged,
        nor counted). The slowest is dropped
        (``DropPeer(peer, "slow")``, requests re-queued) when its rate over the window (bytes per
        busy second) is below ``slow_peer_ratio`` times the median of the others' rates, unless it
        is the only remaining holder of a chunk some stripe needs. At most one peer per call.
        """
        cfg = self.config
        rates: dict[Hashable, float] = {}
        for name, p in self._peers.items():
            if p.fair_share or p.meter.busy_time(now) < cfg.slow_peer_grace:
                continue
            rate = p.meter.busy_rate(now)
            if rate is not None:
                rates[name] = rate
        if len(rates) < cfg.min_peers_for_slow_check:
            return []
        slowest = min(rates, key=rates.__getitem__)
        median = statistics.median(r for name, r in rates.items() if name != slowest)
        if median <= 0 or rates[slowest] >= cfg.slow_peer_ratio * median:
            return []
        if self._is_sole_provider(self._peers[slowest]):
            return []
        return self._remove_peer(slowest, now, ban=True, reason="slow")

    # ------------------------------------------------------------------ requests

    def next_requests(self, peer: Hashable, now: float) -> list[ChunkRequest]:
        """Requests to send to ``peer`` now, filling it up to ``max_in_flight_per_peer``.

        Each returned request is recorded as in flight until an event about it (received,
        corrupt, missing, timed out), a :class:`CancelRequest`, or the peer's removal. Returns
        ``[]`` for unknown or dropped peers and when nothing useful is left for this peer;
        includes endgame duplicates (``duplicate=True``) when appropriate.
        """
        p = self._peers.get(peer)
        if p is None or now < p.busy_until:
            return []
        room = self._max_in_flight(p) - len(p.in_flight)
        out: list[ChunkRequest] = []
        if room <= 0:
            return out
        if len(p.heap) > _HEAP_SLACK_FACTOR * len(p.have) + _HEAP_SLACK_MIN:
            self._rebuild_heap(p)
        heap = p.heap
        n = self._n
        spare = self.config.spare_seeds and len(p.have) == n and len(self._peers) > 1
        spared: list[int] = []
        while heap and len(out) < room:
            entry = heapq.heappop(heap)
            g = self._by_tiebreak[entry % n]
            if not self._eligible(p, g):
                continue  # re-pushed by whatever makes it eligible again
            current = self._key(p, g)
            if current > entry:
                heapq.heappush(heap, current)  # its priority dropped since it was pushed
                continue
            if current < entry:
                continue  # a fresher, higher-priority entry was pushed when the key decreased
            if spare and self._rarity[g] > 1 and self._other_source(p, g, now):
                spared.append(entry)  # another downloader can give it: keep the seed's bytes
                if len(spared) >= _SPARE_SCAN_LIMIT:
                    break
                continue
            out.append(self._assign(p, g, now, duplicate=False))
        for entry in spared:
            heapq.heappush(heap, entry)
        if len(out) < room:
            out.extend(self._rescue(p, room - len(out), now))
        if (
            len(out) < room
            and self._total_need == 0
            and self._done_count < len(self.stripes)
            and (self._window is None or self._window_endgame)
        ):
            out.extend(self._endgame(p, room - len(out), now))
        return out

    def request_busy(
        self, peer: Hashable, index: int, retry_after: float, now: float
    ) -> list[Decision]:
        """``peer`` answered BUSY for ``index``: it is alive but cannot serve soon.

        The request is re-queued (other holders get it first), no strike is counted (nor
        cleared: a BUSY is no delivery), and the peer is given no new request before
        :meth:`busy_until`: ``now`` plus the hint, floored and backed off per consecutive BUSY
        (see :class:`SchedulerConfig`). A peer that has deferred chunks for ``busy_give_up``
        seconds without delivering any is dropped: ``[DropPeer(peer, "busy")]``.
        """
        self._check_index(index)
        p = self._peers.get(peer)
        if p is None:
            return []
        cfg = self.config
        self._release(p, index, now)
        if p.deferring_since is None:
            p.deferring_since = now
        elif now - p.deferring_since >= cfg.busy_give_up:
            return self._remove_peer(peer, now, ban=True, reason="busy")
        p.busy_streak += 1
        p.bdp = 0  # its queue for us is too deep already: back to the fair-share cap
        backoff = min(cfg.max_busy_backoff, cfg.min_busy_retry * 2.0 ** min(p.busy_streak - 1, 30))
        p.busy_until = max(p.busy_until, now + max(retry_after, backoff))
        return []

    def set_round_trip(self, peer: Hashable, seconds: float) -> None:
        """A measured round trip to ``peer`` (request to reply, e.g. its HAVE or WATCH), used
        to size its pipeline (``SchedulerConfig.pipeline_floor``); the smallest one seen counts.
        Ignored for unknown peers and for values that are not finite and >= 0."""
        p = self._peers.get(peer)
        if p is None or not 0.0 <= seconds < float("inf"):
            return
        if not p.round_trip_measured or seconds < p.round_trip:
            p.round_trip, p.round_trip_measured = seconds, True
        self._size_pipeline(p, None, 0)

    def pipeline_depth(self, peer: Hashable) -> int:
        """Requests ``peer`` may have in flight now (0 for an unknown peer)."""
        p = self._peers.get(peer)
        return self._max_in_flight(p) if p is not None else 0

    def _size_pipeline(self, p: _Peer, now: float | None, nbytes: int) -> None:
        floor = self.config.pipeline_floor
        if floor is None:
            return
        depth = max(p.depth, floor)
        if now is not None and nbytes > 0:
            rate = p.meter.busy_rate(now)
            if rate is not None and rate > 0:
                needed = 1 + math.ceil(rate * p.round_trip / nbytes)
                depth = max(floor, needed)
                p.bdp = needed if p.round_trip_measured else 0
        p.depth = min(depth, self.config.max_in_flight_per_peer)

    def busy_until(self, peer: Hashable) -> float:
        """The time before which ``peer`` gets no new request (0.0 if not busy or unknown)."""
        p = self._peers.get(peer)
        return p.busy_until if p is not None else 0.0

    def chunk_received(self, peer: Hashable, index: int, nbytes: int, now: float) -> list[Decision]:
        """``peer`` delivered chunk ``index`` and the caller verified it against its ID.

        Marks it (and any identical chunk) available, cancels other copies of that request, and
        completes its stripe at ``k`` chunks (``StripeComplete`` plus ``CancelRequest`` for the
        stripe's other requests). A late or unrequested delivery is still used if needed.
        """
        self._check_index(index)
        decisions: list[Decision] = []
        useful = not (self._avail[index] or self._done[self._stripe_of[index]])
        p = self._peers.get(peer)
        if p is not None:
            p.strikes = 0
            p.busy_streak = 0
            p.deferring_since = None
            p.meter.record(nbytes, now)
            p.last_delivery = now
            self._size_pipeline(p, now, nbytes)
            # a useful chunk is not re-queued: it becomes available right below
            self._release(p, index, now, requeue=not useful)
        if useful:
            self._bytes_received += nbytes
        self._mark_available(index, decisions, now)
        return decisions

    def chunk_corrupt(self, peer: Hashable, index: int, now: float) -> list[Decision]:
        """``peer`` sent bytes for ``index`` that do not hash to its ID: drop it for this download.

        Returns ``[DropPeer(peer, "corrupt")]`` (its requests re-queued; never assigned again).
        """
        self._check_index(index)
        return self._remove_peer(peer, now, ban=True, reason="corrupt")

    def chunk_missing(self, peer: Hashable, index: int, now: float) -> list[Decision]:
        """``peer`` says it lacks ``index`` although its HAVE said otherwise: forget that claim.

        The request is re-queued for other holders. A peer that does this
        ``false_claims_before_drop`` times is dropped (``DropPeer(peer, "false claims")``): its
        claims cost the download time, so it loses its standing (and nobody else's).
        """
        self._check_index(index)
        p = self._peers.get(peer)
        if p is None:
            return []
        self._release(p, index, now)
        if index in p.have:
            p.have.discard(index)
            self._lose_holder(index)
            self._refresh(self._stripe_of[index])
            p.false_claims += 1
            if p.false_claims >= self.config.false_claims_before_drop:
                return self._remove_peer(peer, now, ban=True, reason="false claims")
        return []

    def request_timed_out(self, peer: Hashable, index: int, now: float) -> list[Decision]:
        """The request for ``index`` to ``peer`` missed its deadline: re-queue it for another peer.

        Counts a strike; ``request_strikes_before_drop`` consecutive strikes (a received chunk
        resets the count) drop the peer (``DropPeer(peer, "timeouts")``), unless it is the only
        live holder of chunks some stripe needs: then its strikes start again (a slow download
        beats a failed one). The chunk is offered to this peer again only when it has nothing
        else to do.
        """
        self._check_index(index)
        p = self._peers.get(peer)
        if p is None or index not in p.in_flight:
            return []
        p.timed_out.add(index)
        self._release(p, index, now)
        p.strikes += 1
        if p.strikes >= self.config.request_strikes_before_drop:
            if self._is_sole_provider(p):
                p.strikes = 0
                return []
            return self._remove_peer(peer, now, ban=True, reason="timeouts")
        return []

    # ------------------------------------------------------------------ sequential mode

    def set_window(self, first: int, end: int, *, endgame: bool = False) -> None:
        """Sequential mode (streaming reads): request only stripes ``first <= s < end``.

        Within the window the lowest stripe goes first (data before parity), and the usual
        parallel fan-out and peer handling apply; stripes outside it are never requested, so a
        reader moves the window forward as it consumes stripes and a ranged read fetches only
        its stripes. Endgame duplicates are sent only with ``endgame=True``, which the reader
        passes once the window reaches the end of what it will read: before that, a window whose
        chunks are all in flight is the normal state, not a tail to hurry. Requests already in
        flight outside the new window are left to finish. Only for a scheduler constructed with
        ``window`` (the priority order differs); raises ``ValueError`` otherwise or for an
        invalid window.
        """
        if self._window is None:
            raise ValueError("set_window needs a scheduler created in sequential mode")
        old_first, old_end = self._window
        self._window = self._check_window(first, end)
        self._window_endgame = endgame
        for s in range(min(first, old_first), max(end, old_end)):
            self._refresh(s)
            if self._in_window(s) and not (old_first <= s < old_end):
                self._push_stripe(s)

    @property
    def window(self) -> tuple[int, int] | None:
        """The sequential window ``(first, end)``, or ``None`` in whole-file mode."""
        return self._window

    def _check_window(self, first: int, end: int) -> tuple[int, int]:
        if not 0 <= first <= end <= len(self.stripes):
            raise ValueError(f"window [{first}, {end}) outside [0, {len(self.stripes)}]")
        return first, end

    def _in_window(self, s: int) -> bool:
        w = self._window
        return w is None or w[0] <= s < w[1]

    # ------------------------------------------------------------------ queries

    def is_complete(self) -> bool:
        """True once every stripe is done (``k`` chunks stored or received)."""
        return self._done_count == len(self.stripes)

    def stripe_done(self, stripe: int) -> bool:
        """True once ``stripe`` has ``k`` chunks stored or received."""
        return bool(self._done[stripe])

    def wanted(self, index: int) -> bool:
        """True while chunk ``index`` is still useful: not available (stored or received) and
        its stripe not done. A late endgame copy of a chunk already received is not."""
        self._check_index(index)
        return not (self._avail[index] or self._done[self._stripe_of[index]])

    def stripe_ready(self, stripe: int) -> set[int]:
        """Share indices (0-based within the stripe) of ``stripe`` that are stored or received.

        Once the stripe is done this is frozen: exactly the ``k`` shares that completed it.
        """
        lo, hi = self._offset[stripe], self._offset[stripe + 1]
        return {g - lo for g in range(lo, hi) if self._avail[g]}

    def unreachable_stripes(self) -> dict[int, list[int]]:
        """Stripes that cannot reach ``k`` chunks with the current peers.

        Maps stripe -> global indices of its chunks that are neither available nor held by any
        live peer (fetching ``k - reachable`` of them would make the stripe reachable again).
        Empty exactly when every unfinished stripe can still complete with the current peers.
        """
        out: dict[int, list[int]] = {}
        for s in sorted(self._unreachable):
            lo, hi = self._offset[s], self._offset[s + 1]
            out[s] = [g for g in range(lo, hi) if not self._avail[g] and self._rarity[g] == 0]
        return out

    def wants_more_peers(self) -> bool:
        """True while some stripe is unreachable with the current peers."""
        return bool(self._unreachable)

    def unavailable_error(self) -> FileUnavailableError:
        """A ``FileUnavailableError`` naming the unreachable stripes and their missing chunk IDs."""
        missing = {s: [self._ids[g] for g in idx] for s, idx in self.unreachable_stripes().items()}
        parts = [
            f"stripe {s} has {self._reach[s]} of the {self._k[s]} chunks it needs"
            for s in sorted(missing)
        ]
        return FileUnavailableError("file unavailable: " + "; ".join(parts), missing)

    def in_flight(self, peer: Hashable) -> frozenset[int]:
        """Indices currently requested from ``peer``."""
        p = self._peers.get(peer)
        return frozenset(p.in_flight) if p is not None else frozenset()

    def peers(self) -> frozenset[Hashable]:
        """The live peers of this download."""
        return frozenset(self._peers)

    def is_dropped(self, peer: Hashable) -> bool:
        """True for a peer dropped (corrupt, slow, timeouts) from this download."""
        return peer in self._banned

    def idle(self, peer: Hashable) -> bool:
        """True if ``peer`` is live and has no request in flight."""
        p = self._peers.get(peer)
        return p is not None and not p.in_flight

    def chunk_id(self, index: int) -> bytes:
        """The ID of chunk ``index``."""
        return self._ids[index]

    def progress(self, now: float) -> Progress:
        """Bytes done / total, stripes done, per-peer bytes and rates (see :class:`Progress`)."""
        per_peer: dict[Hashable, PeerProgress] = {}
        for name, p in self._gone.items():
            per_peer[name] = PeerProgress(p.meter.bytes_total, 0.0, 0, active=False)
        for name, p in self._peers.items():
            per_peer[name] = PeerProgress(
                p.meter.bytes_total, p.meter.rate(now), len(p.in_flight), active=True
            )
        return Progress(
            bytes_done=self._bytes_done,
            bytes_total=self._bytes_total,
            bytes_received=self._bytes_received,
            stripes_done=self._done_count,
            stripes_total=len(self.stripes),
            per_peer=per_peer,
        )

    # ------------------------------------------------------------------ internals

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._n:
            raise IndexError(f"chunk index {index} out of range [0, {self._n})")

    def _key(self, p: _Peer, g: int) -> int:
        """Smaller is better; decodes to the chunk through ``_by_tiebreak[key % n]``."""
        s = self._stripe_of[g]
        if self._window is not None:  # sequential: the stripe nearest the reader first
            key = (1 if g in p.timed_out else 0) * len(self.stripes) + s
            return (key * 2 + self._is_parity[g]) * self._n + self._tiebreak[g]
        key = 2 if g in p.timed_out else 0
        key += 0 if self._opened[s] else 1
        rarity = self._rarity[g]
        key = key * _RARITY_CAP + (rarity if rarity < _RARITY_CAP else _RARITY_CAP - 1)
        key = key * 2 + self._is_parity[g]
        return key * self._n + self._tiebreak[g]

    def _eligible(self, p: _Peer, g: int) -> bool:
        s = self._stripe_of[g]
        return (
            not self._done[s]
            and not self._avail[g]
            and g not in self._in_flight
            and g in p.have
            and self._avail_count[s] + self._flight_count[s] < self._k[s] + self._slack(p)
            and self._in_window(s)
        )

    def _became_idle(self, p: _Peer) -> None:
        """An idle fair-sharing peer may take shares of stripes at their cap, whose entries its
        heap dropped: rebuild it (bounded: only for files of at most ``_SLACK_REBUILD_LIMIT``
        chunks; bigger files have enough stripes for the cap not to bind)."""
        if p.fair_share and self.config.idle_peer_stripe_slack and self._n <= _SLACK_REBUILD_LIMIT:
            self._rebuild_heap(p)

    def _slack(self, p: _Peer) -> int:
        """Shares beyond ``k`` of a stripe that ``p`` may be asked for: some for an idle
        fair-sharing peer (see ``SchedulerConfig.idle_peer_stripe_slack``), else none."""
        return self.config.idle_peer_stripe_slack if p.fair_share and not p.in_flight else 0

    def _needed(self, g: int) -> bool:
        """Not available, not in flight, in an unfinished stripe."""
        return not (self._avail[g] or self._done[self._stripe_of[g]] or g in self._in_flight)

    def _push(self, g: int) -> None:
        for p in self._peers.values():
            if g in p.have:
                heapq.heappush(p.heap, self._key(p, g))

    def _push_stripe(self, s: int) -> None:
        for g in range(self._offset[s], self._offset[s + 1]):
            if self._needed(g):
                self._push(g)

    def _rebuild_heap(self, p: _Peer) -> None:
        p.heap = [self._key(p, g) for g in p.have if self._eligible(p, g)]
        heapq.heapify(p.heap)

    def _open(self, s: int) -> None:
        if not self._opened[s]:
            self._opened[s] = 1
            self._push_stripe(s)  # their keys decreased: push fresh entries

    def _refresh(self, s: int) -> None:
        """Recompute stripe ``s``'s contribution to the endgame and reachability bookkeeping."""
        if self._done[s] or not self._in_window(s):
            need = 0
            self._unreachable.discard(s)
        else:
            k, avail, flight, reach = (
                self._k[s],
                self._avail_count[s],
                self._flight_count[s],
                self._reach[s],
            )
            need = max(0, min(k - avail - flight, reach - avail - flight))
            if reach < k:
                self._unreachable.add(s)
            else:
                self._unreachable.discard(s)
        self._total_need += need - self._need[s]
        self._need[s] = need

    def _assign(self, p: _Peer, g: int, now: float, *, duplicate: bool) -> ChunkRequest:
        s = self._stripe_of[g]
        holders = self._in_flight.setdefault(g, {})
        if not holders:
            self._flight_count[s] += 1
        holders[p.name] = now
        if not p.in_flight:
            p.meter.set_busy(True, now)
        p.in_flight[g] = now
        self._open(s)
        self._refresh(s)
        lo = self._offset[s]
        return ChunkRequest(p.name, g, self._ids[g], s, g - lo, self._size[g], duplicate)

    def _release(self, p: _Peer, g: int, now: float, *, requeue: bool = True) -> None:
        """Forget ``p``'s request for ``g`` if any; re-queue ``g`` if no copy is left in flight."""
        if p.in_flight.pop(g, None) is None:
            return
        if not p.in_flight:
            p.meter.set_busy(False, now)
            self._became_idle(p)
        holders = self._in_flight[g]
        del holders[p.name]
        if holders:
            return
        del self._in_flight[g]
        s = self._stripe_of[g]
        self._flight_count[s] -= 1
        self._refresh(s)
        if (
            requeue
            and not self._done[s]
            and self._avail_count[s] + self._flight_count[s]
            < self._k[s] + self.config.idle_peer_stripe_slack
        ):
            self._push_stripe(s)  # (too many pushes are harmless: checked again at pop)

    def _lose_holder(self, g: int) -> None:
        """One fewer live peer holds ``g`` (caller refreshes the stripe)."""
        self._rarity[g] -= 1
        if self._rarity[g] == 0 and not self._avail[g]:
            self._reach[self._stripe_of[g]] -= 1
        elif self._needed(g):
            self._push(g)  # rarer now: its key decreased for the remaining holders

    def _remove_peer(
        self, peer: Hashable, now: float, *, ban: bool, reason: str = ""
    ) -> list[Decision]:
        first_ban = ban and peer not in self._banned
        if ban:
            self._banned.add(peer)
        p = self._peers.get(peer)
        if p is None:
            return [DropPeer(peer, reason)] if first_ban else []
        for g in list(p.in_flight):
            self._release(p, g, now)
        del self._peers[peer]
        self._gone[peer] = p
        touched: set[int] = set()
        for g in p.have:
            self._lose_holder(g)
            touched.add(self._stripe_of[g])
        for s in touched:
            self._refresh(s)
        p.heap = []
        p.have = set()
        return [DropPeer(peer, reason)] if ban else []

    def _max_in_flight(self, p: _Peer) -> int:
        cfg = self.config
        bound = cfg.max_in_flight_per_peer
        if cfg.pipeline_floor is not None:
            bound = p.depth or cfg.pipeline_floor
        if p.fair_share:
            # Capped, unless its own delivery rate to us times its measured round trip says a
            # deeper pipeline is needed to keep its uplink busy for us (a long, fast link): in a
            # crowd that rate is its fair share of the uplink, so the cap holds there.
            return min(bound, max(cfg.max_in_flight_fair_share, p.bdp))
        return bound

    def _other_source(self, p: _Peer, g: int, now: float) -> bool:
        """Does a live peer other than ``p``, not itself a seed, not busy and with room, hold
        ``g``? (Seeds never spare chunks for each other: someone must serve them.)"""
        n = self._n
        for q in self._peers.values():
            if (
                q is not p
                and g in q.have
                and len(q.have) < n
                and now >= q.busy_until
                and len(q.in_flight) < self._max_in_flight(q)
            ):
                return True
        return False

    def is_sole_provider(self, peer: Hashable) -> bool:
        """Would dropping ``peer`` make some unfinished stripe unreachable? (False for a peer
        that is not in the download.)"""
        p = self._peers.get(peer)
        return p is not None and self._is_sole_provider(p)

    def _is_sole_provider(self, p: _Peer) -> bool:
        """Would dropping ``p`` make some unfinished stripe unreachable?"""
        loss: dict[int, int] = {}
        for g in p.have:
            if self._rarity[g] == 1 and not self._avail[g]:
                s = self._stripe_of[g]
                if not self._done[s]:
                    loss[s] = loss.get(s, 0) + 1
        return any(self._reach[s] - lost < self._k[s] for s, lost in loss.items())

    def is_proven(self, peer: Hashable) -> bool:
        """Has ``peer`` delivered a verified chunk in this download (also before a failure)?"""
        p = self._peers.get(peer) or self._gone.get(peer)
        return p is not None and p.meter.bytes_total > 0

    def _rescue(self, p: _Peer, room: int, now: float) -> list[ChunkRequest]:
        """Copies for ``p`` of chunks held only by unproven peers for at least
        ``unproven_rescue_after`` seconds, oldest first (``SchedulerConfig``): as many as ``p``
        has room for if it is proven, else one at a time (so an honest newcomer, when false
        providers hold every request, gets a chunk to prove itself with, and those providers
        no more than one copy each)."""
        if not p.meter.bytes_total:
            if any(len(self._in_flight[g]) > 1 for g in p.in_flight):
                return []
            room = 1
        cutoff = now - self.config.unproven_rescue_after
        candidates = [
            (oldest, self._tiebreak[g], g)
            for g, holders in self._in_flight.items()
            if g in p.have
            and p.name not in holders
            and g not in p.timed_out
            and (oldest := min(holders.values())) <= cutoff
            and not self._done[self._stripe_of[g]]
            and self._in_window(self._stripe_of[g])
            and not any(self._peers[q].meter.bytes_total for q in holders)
        ]
        return [
            self._assign(p, g, now, duplicate=True) for *_, g in heapq.nsmallest(room, candidates)
        ]

    def _endgame(self, p: _Peer, room: int, now: float) -> list[ChunkRequest]:
        limit = 1 + self.config.endgame_duplicates
        candidates = [
            (len(holders), min(holders.values()), self._tiebreak[g], g)
            for g, holders in self._in_flight.items()
            if g in p.have
            and p.name not in holders
            and len(holders) < limit
            and g not in p.timed_out
            and not self._done[self._stripe_of[g]]
            and self._copy_sooner(p, g, holders, now)
        ]
        return [
            self._assign(p, g, now, duplicate=True) for *_, g in heapq.nsmallest(room, candidates)
        ]

    def _eta(self, q: _Peer, g: int, now: float) -> float:
        """Seconds until ``q`` should deliver ``g`` (in flight to it), from its measured rate
        and the requests queued before ``g`` there (a peer serves them in order): ``inf`` if its
        rate is unknown or the request is overdue (``ENDGAME_OVERDUE_FACTOR`` x the prediction)."""
        last = q.last_delivery
        rate = q.meter.busy_rate(now) if last is not None else None
        if last is None or not rate:
            return float("inf")
        asked = q.in_flight[g]
        ahead = [h for h, t in q.in_flight.items() if t < asked or (t == asked and h < g)]
        work = (sum(self._size[h] for h in ahead) + self._size[g]) / rate
        since = max(min(q.in_flight.values()), last)  # the head is being sent since then
        elapsed = now - since
        if elapsed > ENDGAME_OVERDUE_FACTOR * work + q.round_trip:
            return float("inf")
        return max(0.0, work - elapsed)

    def _copy_sooner(self, p: _Peer, g: int, holders: dict[Hashable, float], now: float) -> bool:
        """Would a copy of ``g`` from ``p`` arrive clearly sooner than from every peer it is
        in flight to? (Else the copy only costs upload and CPU: at the tail of a download from
        equally fast peers, every original is at most a chunk or two away.)"""
        eta = min(self._eta(self._peers[name], g, now) for name in holders)
        if eta == float("inf"):
            return True
        rate = p.meter.busy_rate(now) if p.last_delivery is not None else None
        if not rate:
            return False  # nothing known of p: not worth a copy of a request on schedule
        queued = sum(self._size[h] for h in p.in_flight)
        mine = p.round_trip + (queued + self._size[g]) / rate
        return eta > ENDGAME_GAIN * mine

    def _mark_available(self, index: int, decisions: list[Decision], now: float) -> None:
        for g in self._twins.get(index, (index,)):
            s = self._stripe_of[g]
            if self._avail[g] or self._done[s]:
                continue  # stragglers of a done stripe are not needed, so not counted
            self._avail[g] = 1
            self._avail_count[s] += 1
            if self._rarity[g] == 0:
                self._reach[s] += 1
            self._cancel_chunk(g, decisions, now)
            if self._avail_count[s] >= self._k[s]:
                self._complete(s, decisions, now)
            else:
                self._open(s)
            self._refresh(s)

    def _cancel_chunk(self, g: int, decisions: list[Decision], now: float) -> None:
        holders = self._in_flight.pop(g, None)
        if not holders:
            return
        self._flight_count[self._stripe_of[g]] -= 1
        for name in holders:
            p = self._peers[name]
            del p.in_flight[g]
            if not p.in_flight:
                p.meter.set_busy(False, now)
                self._became_idle(p)
            decisions.append(CancelRequest(name, g))

    def _complete(self, s: int, decisions: list[Decision], now: float) -> None:
        self._done[s] = 1
        self._done_count += 1
        self._bytes_done += sum(self.stripes[s].chunk_sizes[: self._k[s]])
        decisions.append(StripeComplete(s))
        for g in range(self._offset[s], self._offset[s + 1]):
            self._cancel_chunk(g, decisions, now)
