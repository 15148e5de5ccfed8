"""The decisions of health checks and repair, with no I/O: health, sources, placement, timing.

A file's health is computed from who holds what: per stripe, the number of **distinct share
positions** that some live holder reports (a HAVE bitmap, or the node's own store). A stripe is
*healthy* with all its shares, *degraded* below that but with at least the shares needed to
rebuild it (its data-chunk count, ``k`` except maybe for the last stripe), *lost* below that.
The file takes the worst verdict of its stripes.

Repair rebuilds the missing shares of a degraded stripe from any ``k`` of the others
(:func:`rebuild_shares`: decode, re-encode, every result checked against the manifest's ID) and
places them with a :class:`Placer`: each on the live node closest to the file ID that holds no
share of that stripe, and only where no such node is left on the one holding the fewest.

:class:`RepairTimer` decides *when* a node checks each of its files (every interval, jittered)
and whether it repairs what it found: only the live holder closest to the file ID repairs at
once; the holder of rank ``r`` steps in only after the need has persisted for
``r * step_in`` intervals. Every holder sees the same holders through the DHT, so without any
extra message exactly one of them repairs a file at a time, and a dead or failing repairer is
replaced by the next.

Everything here is pure: times are passed in, randomness comes from an injected
:class:`random.Random`. The Trio layer is :mod:`p2pstore.transfer.repairer`.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .erasure import ReedSolomon
from .errors import NotEnoughSharesError, P2PStoreError
from .manifest import Manifest

__all__ = [
    "DEFAULT_JITTER",
    "DEFAULT_REPAIR_INTERVAL",
    "DEFAULT_STEP_IN",
    "FileHealth",
    "Placer",
    "RepairError",
    "RepairTimer",
    "StripeHealth",
    "Verdict",
    "assess",
    "default_threshold",
    "ranges",
    "rebuild_shares",
    "source_order",
    "stacked_shares",
    "stripes_to_repair",
    "xor_distance",
]

#: Seconds between two health checks of one file by one holder: an hour keeps the look-up and
#: HAVE traffic of a node holding thousands of files to about one file per second, and a lost
#: share is then noticed within about an hour (the file still has ``threshold`` more to lose).
DEFAULT_REPAIR_INTERVAL = 3600.0
#: Each wait is the interval times a factor drawn uniformly from ``1 +- DEFAULT_JITTER``, so the
#: holders of a file (and the files of a node) do not check in lockstep.
DEFAULT_JITTER = 0.25
#: The holder of rank r steps in after the need persisted this many intervals times r: two give
#: the holder before it a whole check (and its jitter) plus a repair's time to act first.
DEFAULT_STEP_IN = 2.0


class RepairError(P2PStoreError):
    """A repair could not rebuild what it should (a rebuilt share does not match its ID...)."""


def xor_distance(a: bytes, b: bytes) -> int:
    """Kademlia distance of two 32-byte IDs."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def default_threshold(m: int) -> int:
    """Repair a stripe once it is down to ``k + default_threshold(m)`` shares or fewer.

    ``ceil(m / 2)``: a stripe still survives at least half its parity's worth of further losses
    (and at least one) while its repair is pending, so with the default m = 2 (and m = 1 or 3)
    repair starts at the first loss; with a larger m repair waits for several losses and
    rebuilds them from one fetch of k shares, so the bytes moved per byte lost fall from about
    ``k`` to about ``2k / m + 1``.
    """
    return (m + 1) // 2


class Verdict(enum.Enum):
    """A stripe's or a file's state."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    LOST = "lost"


@dataclass(frozen=True)
class StripeHealth:
    """One stripe: distinct shares reachable, shares needed to rebuild it, shares it has in all."""

    stripe: int
    reachable: int
    needed: int
    total: int
    spread: int | None = None
    """Most distinct shares reachable with at most one per holder (the shares that survive any
    one holder's departure in the best case); ``None``: taken to be ``reachable``."""

    @property
    def nodes(self) -> int:
        """:attr:`spread`, or :attr:`reachable` when it is not known."""
        return self.reachable if self.spread is None else self.spread

    @property
    def verdict(self) -> Verdict:
        """Healthy with every share, degraded with at least ``needed``, else lost."""
        if self.reachable >= self.total:
            return Verdict.HEALTHY
        if self.reachable >= self.needed:
            return Verdict.DEGRADED
        return Verdict.LOST


@dataclass(frozen=True)
class FileHealth:
    """A file's health as seen from one node at one moment.

    ``holders`` are the live nodes that reported at least one share, closest to the file ID
    first (this node included if it holds any); ``held`` maps each of them to the chunk
    positions (in :meth:`Manifest.chunk_ids` order) it reported; ``unreachable`` counts
    providers found in the DHT that did not answer.
    """

    file_id: bytes
    k: int
    m: int
    stripes: tuple[StripeHealth, ...]
    holders: tuple[bytes, ...]
    held: Mapping[bytes, frozenset[int]] = field(repr=False)
    unreachable: int = 0
    stacked: Mapping[int, frozenset[int]] = field(default_factory=dict, repr=False)
    """Per stripe, the reachable share positions (within the stripe) that only a node holding
    another share of the stripe has: left out of the :attr:`StripeHealth.spread` matching."""

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of any stripe (an empty file is healthy)."""
        verdicts = {s.verdict for s in self.stripes}
        for worst in (Verdict.LOST, Verdict.DEGRADED):
            if worst in verdicts:
                return worst
        return Verdict.HEALTHY

    @property
    def fewest(self) -> int | None:
        """The fewest distinct shares reachable of any stripe (``None`` for an empty file)."""
        return min((s.reachable for s in self.stripes), default=None)

    @property
    def fewest_nodes(self) -> int | None:
        """The smallest :attr:`StripeHealth.spread` of any stripe (``None`` for an empty file)."""
        return min((s.nodes for s in self.stripes), default=None)

    @property
    def margin(self) -> int | None:
        """Further losses the weakest stripe survives (negative once a stripe is lost)."""
        return min((s.reachable - s.needed for s in self.stripes), default=None)

    def in_state(self, verdict: Verdict) -> list[int]:
        """Indices of the stripes with that verdict, in order."""
        return [s.stripe for s in self.stripes if s.verdict is verdict]

    def as_report(self, *, per_stripe: bool = True) -> dict[str, object]:
        """Plain data for the CLI and the control socket: the stripes in each state as
        ``[first, last]`` ranges and (``per_stripe``) each stripe's reachable shares."""
        out: dict[str, object] = {
            "file_id": self.file_id.hex(),
            "verdict": self.verdict.value,
            "k": self.k,
            "m": self.m,
            "stripes": len(self.stripes),
            "fewest": self.fewest,
            "fewest_nodes": self.fewest_nodes,
            "margin": self.margin,
            "healthy": ranges(self.in_state(Verdict.HEALTHY)),
            "degraded": ranges(self.in_state(Verdict.DEGRADED)),
            "lost": ranges(self.in_state(Verdict.LOST)),
            "holders": [h.hex() for h in self.holders],
            "unreachable_providers": self.unreachable,
        }
        if per_stripe:
            out["reachable"] = [s.reachable for s in self.stripes]
            out["spread"] = [s.nodes for s in self.stripes]
        return out


def ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as inclusive ``[first, last]`` runs: ``[0, 1, 2, 5]`` gives
    ``[[0, 2], [5, 5]]``."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _stripe_starts(manifest: Manifest) -> list[int]:
    starts, pos = [], 0
    for ids in manifest.stripes:
        starts.append(pos)
        pos += len(ids)
    return starts


def assess(
    manifest: Manifest, held: Mapping[bytes, Iterable[int]], *, unreachable: int = 0
) -> FileHealth:
    """The health of ``manifest``'s file given each live node's chunk positions (``held``).

    Positions outside the file are ignored; nodes that hold nothing are not holders.
    """
    count = manifest.chunk_count
    clean: dict[bytes, frozenset[int]] = {}
    for node, positions in held.items():
        inside = frozenset(p for p in positions if 0 <= p < count)
        if inside:
            clean[node] = inside
    union: set[int] = set().union(*clean.values()) if clean else set()
    fid = manifest.file_id
    holders = tuple(sorted(clean, key=lambda n: xor_distance(n, fid)))
    stripes = []
    stacked: dict[int, frozenset[int]] = {}
    for s, start in enumerate(_stripe_starts(manifest)):
        total = len(manifest.stripes[s])
        reachable = {p - start for p in range(start, start + total) if p in union}
        per_holder = [{p - start for p in clean[n] if start <= p < start + total} for n in holders]
        matched = _match(per_holder)
        if reachable - matched:
            stacked[s] = frozenset(reachable - matched)
        needed = manifest.data_chunk_count(s)
        stripes.append(StripeHealth(s, len(reachable), needed, total, len(matched)))
    return FileHealth(
        fid, manifest.k, manifest.m, tuple(stripes), holders, clean, unreachable, stacked
    )


def _match(per_holder: Sequence[set[int]]) -> set[int]:
    """Positions of a maximum matching of holders to the positions they hold (each holder
    matched to at most one position): Kuhn's augmenting paths, holders in the given order."""
    owner: dict[int, int] = {}

    def augment(h: int, seen: set[int]) -> bool:
        for p in sorted(per_holder[h]):
            if p in seen:
                continue
            seen.add(p)
            if p not in owner or augment(owner[p], seen):
                owner[p] = h
                return True
        return False

    for h in range(len(per_holder)):
        augment(h, set())
    return set(owner)


def stripes_to_repair(health: FileHealth, threshold: int | None = None) -> list[int]:
    """Stripes to repair: by hand (``threshold`` None) every degraded stripe and every stripe
    some of whose shares sit only on a node holding another of its shares; automatically those
    down to ``needed + threshold`` shares, or to that many on distinct nodes (a stripe whose
    shares pile up on one node, such as the uploader's full copy, is one departure from losing
    them all). Lost stripes are never listed."""
    out = []
    for s in health.stripes:
        if s.verdict is Verdict.LOST:
            continue
        if threshold is None:
            wanted = s.verdict is Verdict.DEGRADED or s.nodes < s.reachable
        else:
            wanted = (s.verdict is Verdict.DEGRADED and s.reachable <= s.needed + threshold) or (
                s.nodes < s.total and s.nodes <= s.needed + threshold
            )
        if wanted:
            out.append(s.stripe)
    return out


def stacked_shares(health: FileHealth, stripes: Iterable[int]) -> list[tuple[int, int]]:
    """``(stripe, share)`` pairs of ``stripes`` that are reachable, but only on nodes holding
    another share of the stripe: copies of them on nodes without one restore the spread."""
    return [(s, j) for s in stripes for j in sorted(health.stacked.get(s, ()))]


def stripe_holdings(manifest: Manifest, health: FileHealth) -> dict[int, dict[int, list[bytes]]]:
    """Per stripe, per share position within it, the holders reporting it (closest first)."""
    starts = _stripe_starts(manifest)
    out: dict[int, dict[int, list[bytes]]] = {s: {} for s in range(len(starts))}
    for node in health.holders:
        for p in sorted(health.held[node]):
            s = _stripe_of(starts, p)
            out[s].setdefault(p - starts[s], []).append(node)
    return out


def _stripe_of(starts: Sequence[int], position: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= position:
            lo = mid
        else:
            hi = mid - 1
    return lo


def missing_shares(
    manifest: Manifest, health: FileHealth, stripes: Iterable[int]
) -> list[tuple[int, int]]:
    """``(stripe, share)`` pairs of ``stripes`` that no live holder reports."""
    holdings = stripe_holdings(manifest, health)
    return [
        (s, j) for s in stripes for j in range(len(manifest.stripes[s])) if j not in holdings[s]
    ]


def source_order(
    shares: Mapping[int, Sequence[bytes]],
    data_count: int,
    self_id: bytes,
    load: Mapping[bytes, int],
    rng: random.Random,
) -> list[tuple[int, list[bytes]]]:
    """Where to fetch a stripe's shares from: ``(share, holders to try in order)``, best first.

    ``shares`` maps each reachable share position to its holders. Shares this node holds come
    first (no transfer), then data shares (no decoding if all k are data), then parity; among
    equals, random. Each share's holders are ordered by ``load`` (the fetches already given to
    each, so a repair spreads its reads over the holders), then at random; this node first if it
    holds it. The caller takes as many as it needs and falls back to later ones on failure.
    """
    entries = []
    for share, holders in shares.items():
        local = self_id in holders
        entries.append(((not local, share >= data_count, rng.random()), share, list(holders)))
    entries.sort(key=lambda e: e[0])
    out = []
    for _, share, holders in entries:
        keyed = [((h != self_id, load.get(h, 0), rng.random()), h) for h in holders]
        keyed.sort(key=lambda e: e[0])
        out.append((share, [h for _, h in keyed]))
    return out


def rebuild_shares(
    manifest: Manifest,
    stripe: int,
    good: Mapping[int, bytes],
    wanted: Iterable[int],
    rs: ReedSolomon | None = None,
) -> dict[int, bytes]:
    """The stripe's shares at positions ``wanted``, rebuilt from ``good`` (position -> bytes).

    ``good`` must hold at least the stripe's data-chunk count of verified shares. The data is
    decoded, the parity re-encoded, and every share returned is checked against its ID in the
    manifest. CPU-bound: run it in a worker thread for megabyte chunks. Raises
    :class:`NotEnoughSharesError` with too few shares and :class:`RepairError` if a rebuilt
    share does not hash to its ID (a share given in ``good`` was not genuine).
    """
    rs = rs or ReedSolomon(manifest.k, manifest.m)
    want = wanted_list(wanted)
    ids = manifest.stripes[stripe]
    d = manifest.data_chunk_count(stripe)
    k = manifest.k
    length = manifest.share_length(stripe)
    if len(good) < d:
        raise NotEnoughSharesError(f"stripe {stripe} needs {d} shares to rebuild, got {len(good)}")
    shares: dict[int, bytes] = {}
    for pos, data in good.items():
        shares[manifest.erasure_index(stripe, pos)] = bytes(data) + bytes(length - len(data))
    zeros = bytes(length)
    for i in range(d, k):  # a short last stripe's absent data chunks are implicit zeros
        shares[i] = zeros
    data_shares = rs.decode(shares)
    parity = rs.encode(data_shares) if any(p >= d for p in want) else []
    out: dict[int, bytes] = {}
    for pos in want:
        if pos < d:
            chunk = data_shares[pos][: manifest.chunk_length(stripe, pos)]
        else:
            chunk = parity[pos - d]
        if hashlib.sha256(chunk).digest() != ids[pos]:
            raise RepairError(
                f"rebuilt share {pos} of stripe {stripe} does not match its ID {ids[pos].hex()}"
            )
        out[pos] = chunk
    return out


def wanted_list(wanted: Iterable[int]) -> list[int]:
    """``wanted`` as a sorted list without duplicates."""
    return sorted(set(wanted))


class Placer:
    """Chooses the node that receives each rebuilt share, and re-chooses when one fails.

    ``candidates`` are live nodes that may take shares (this node included, if it may), and
    ``held[node][stripe]`` how many shares of each stripe a node holds already. A share goes to
    the candidate closest to the file ID holding no share of its stripe; only if every
    remaining candidate holds one does it go to the one holding the fewest (closest first among
    equals), so two shares of a stripe share a node only when no other node can take them.
    A failed node (unreachable, out of quota) is never chosen again.
    """

    def __init__(
        self,
        file_id: bytes,
        candidates: Iterable[bytes],
        held: Mapping[bytes, Mapping[int, int]] | None = None,
    ) -> None:
        self.file_id = file_id
        self._order = sorted(set(candidates), key=lambda n: xor_distance(n, file_id))
        self._counts: dict[bytes, dict[int, int]] = {
            node: dict((held or {}).get(node, {})) for node in self._order
        }
        self._failed: set[bytes] = set()

    @property
    def failed(self) -> frozenset[bytes]:
        """Nodes excluded after a failure."""
        return frozenset(self._failed)

    def shares_of(self, node: bytes, stripe: int) -> int:
        """Shares of ``stripe`` that ``node`` holds or has been given."""
        return self._counts.get(node, {}).get(stripe, 0)

    def assign(
        self, shares: Iterable[tuple[int, int]], *, free_only: bool = False
    ) -> dict[bytes, list[tuple[int, int]]]:
        """Choose a node for each ``(stripe, share)``; shares no node can take are left out
        (when every candidate has failed, or with ``free_only`` when every candidate already
        holds a share of that stripe: a copy there would protect nothing)."""
        out: dict[bytes, list[tuple[int, int]]] = {}
        for stripe, share in shares:
            node = self._choose(stripe)
            if node is None or (free_only and self._counts[node].get(stripe, 0) > 0):
                continue
            self._counts[node][stripe] = self._counts[node].get(stripe, 0) + 1
            out.setdefault(node, []).append((stripe, share))
        return out

    def fail(
        self, node: bytes, unplaced: Iterable[tuple[int, int]]
    ) -> dict[bytes, list[tuple[int, int]]]:
        """``node`` failed before storing ``unplaced``: exclude it and place those elsewhere."""
        self._failed.add(node)
        items = list(unplaced)
        for stripe, _ in items:
            if self._counts.get(node, {}).get(stripe, 0) > 0:
                self._counts[node][stripe] -= 1
        return self.assign(items)

    def reject(self, node: bytes, item: tuple[int, int]) -> bytes | None:
        """``node`` was found to hold a share of ``item``'s stripe that was not counted (a
        concurrent repair put it there): choose again for ``item``. The share ``item`` was
        counted on ``node`` when it was chosen and now stands for the one found there. Returns
        the new choice (``node`` itself if it is still the best), or None if no node is left."""
        again = self.assign([item])
        return next(iter(again), None)

    def _choose(self, stripe: int) -> bytes | None:
        best: bytes | None = None
        best_count = 0
        for node in self._order:
            if node in self._failed:
                continue
            count = self._counts[node].get(stripe, 0)
            if count == 0:
                return node
            if best is None or count < best_count:
                best, best_count = node, count
        return best


def held_counts(manifest: Manifest, health: FileHealth) -> dict[bytes, dict[int, int]]:
    """``node -> stripe -> shares held`` for every holder in ``health``."""
    starts = _stripe_starts(manifest)
    out: dict[bytes, dict[int, int]] = {}
    for node, positions in health.held.items():
        counts: dict[int, int] = {}
        for p in positions:
            s = _stripe_of(starts, p)
            counts[s] = counts.get(s, 0) + 1
        out[node] = counts
    return out


@dataclass
class _Watch:
    due: float
    need_since: float | None = None


class RepairTimer:
    """When a node checks each of its files, and whether it repairs what it finds.

    Track a file with :meth:`track`; :meth:`due` returns the files whose check is due at ``now``
    (and takes them off the schedule until :meth:`observed`); :meth:`observed` is given each
    check's result and says whether this node should repair now. The first check comes after
    a random fraction of an interval (so a node restarting with many files spreads them out),
    every later one after a jittered interval.
    """

    def __init__(
        self,
        interval: float,
        rng: random.Random,
        *,
        jitter: float = DEFAULT_JITTER,
        step_in: float = DEFAULT_STEP_IN,
    ) -> None:
        if not interval > 0:
            raise ValueError("the repair interval must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.interval = interval
        self.jitter = jitter
        self.step_in = step_in
        self._rng = rng
        self._watches: dict[bytes, _Watch] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._running: set[bytes] = set()

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._watches

    def _delay(self) -> float:
        return self.interval * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def _schedule(self, file_id: bytes, at: float) -> None:
        self._watches[file_id].due = at
        heapq.heappush(self._heap, (at, file_id))

    def track(self, file_id: bytes, now: float) -> None:
        """Start checking ``file_id`` (no-op if tracked already)."""
        if file_id in self._watches:
            return
        self._watches[file_id] = _Watch(due=0.0)
        self._schedule(file_id, now + self.interval * self._rng.uniform(0.1, 1.0))

    def untrack(self, file_id: bytes) -> None:
        """Stop checking ``file_id`` (unpinned, forgotten)."""
        self._watches.pop(file_id, None)
        self._running.discard(file_id)

    def tracked(self) -> set[bytes]:
        """Every file being checked."""
        return set(self._watches)

    def next_due(self) -> float | None:
        """When the earliest scheduled check is due (``None`` if none is scheduled)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[bytes]:
        """Files to check now; each is off the schedule until :meth:`observed` or
        :meth:`skipped` is called for it."""
        out = []
        self._drop_stale()
        while self._heap and self._heap[0][0] <= now:
            _, file_id = heapq.heappop(self._heap)
            if file_id in self._watches and file_id not in self._running:
                self._running.add(file_id)
                out.append(file_id)
            self._drop_stale()
        return out

    def _drop_stale(self) -> None:
        while self._heap:
            at, file_id = self._heap[0]
            watch = self._watches.get(file_id)
            if watch is not None and watch.due == at and file_id not in self._running:
                return
            heapq.heappop(self._heap)

    def skipped(self, file_id: bytes, now: float) -> None:
        """The check could not be made (no manifest, look-up failed): try again next interval."""
        self._running.discard(file_id)
        if file_id in self._watches:
            self._schedule(file_id, now + self._delay())

    def observed(self, health: FileHealth, self_id: bytes, now: float, threshold: int) -> list[int]:
        """Record a check's result; the stripes this node should repair now (often none).

        A file needs repair while some stripe is degraded down to ``needed + threshold`` shares
        or fewer. This node's rank is its place among the live holders by distance to the file
        ID (last if it holds nothing). Rank 0 repairs at once; rank r once the need has lasted
        ``r * step_in`` intervals, which means every closer holder has failed to repair it.
        """
        file_id = health.file_id
        self._running.discard(file_id)
        watch = self._watches.get(file_id)
        if watch is None:
            return []
        self._schedule(file_id, now + self._delay())
        stripes = stripes_to_repair(health, threshold)
        if not stripes:
            watch.need_since = None
            return []
        if watch.need_since is None:
            watch.need_since = now
        holders = list(health.holders)
        rank = holders.index(self_id) if self_id in holders else len(holders)
        if rank == 0 or now - watch.need_since >= rank * self.step_in * self.interval:
            return stripes
        return []
