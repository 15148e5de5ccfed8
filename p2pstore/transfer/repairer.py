"""Health checks and repair over the network: the thin Trio layer around :mod:`p2pstore.repair`.

:func:`survey` asks every provider of a file what it holds (``HAVE``, each in its own deadline,
all at once) and the local store likewise, fetches the manifest if it is not stored here, and
returns the file's :class:`~p2pstore.repair.FileHealth`.

:class:`Repairer` rebuilds the missing shares of chosen stripes: per stripe (a few at once) it
fetches the stripe's data-chunk count of shares (its own first, then spread over the holders,
each verified by the channel), decodes and re-encodes in a worker thread, checks every rebuilt
share against the manifest, and pushes each to the node the :class:`~p2pstore.repair.Placer`
chose. A new holder first receives the manifest (index chunks, then the root), so it adopts the
file and announces itself at once and its ``HAVE`` shows each share as it lands. A target that
fails (unreachable, quota) is excluded and its shares go to the next choice.

Crash safety: fetched shares live only in memory; every share stored anywhere is stored
atomically by the store that receives it; a new holder that got the manifest but not all its
shares reports exactly what it has. So an interrupted repair leaves only true statements in the
network, and the next check sees what is still missing and repairs that.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from .._groups import collapse_exception_groups
from ..erasure import ReedSolomon
from ..errors import (
    ChunkNotFoundError,
    CorruptChunkError,
    FileUnavailableError,
    ManifestError,
    P2PStoreError,
    QuotaExceededError,
)
from ..manifest import Manifest, ManifestRoot
from ..repair import (
    DEFAULT_JITTER,
    DEFAULT_STEP_IN,
    FileHealth,
    Placer,
    assess,
    held_counts,
    missing_shares,
    rebuild_shares,
    source_order,
    stacked_shares,
    stripe_holdings,
)
from ..wire.client import ConnectionPool, PeerAddress, PeerBusyError, PeerConnection
from ..wire.uploads import UploadGate
from .download import MIN_BUSY_WAIT, LocalChunks, Provider, bitmap_indices, get_patiently

log = logging.getLogger(__name__)

#: Seconds for connect + handshake + HAVE of one provider during a check.
DEFAULT_HAVE_TIMEOUT = 5.0
#: Seconds for one chunk fetched to rebuild a stripe.
DEFAULT_CHUNK_TIMEOUT = 20.0
#: Seconds for one PUT of a rebuilt share to be acknowledged.
DEFAULT_PUT_TIMEOUT = 30.0
#: Most stripes rebuilt at once: overlaps the fetches, coding and pushes of several stripes (a
#: stripe alone is a chain of round trips, a thread hop and an fsync at the receiver).
DEFAULT_STRIPES_IN_FLIGHT = 8
#: ...but no more than fit this many bytes of fetched and rebuilt shares: 8 stripes of 1 MiB
#: chunks (k + m = 6 MiB each) or a single stripe of 16 MiB chunks.
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024
#: PUTs in flight per target, as in dispersal.
DEFAULT_PUTS_IN_FLIGHT = 4
#: Providers one check asks at once: a check of a file with many providers must not take every
#: channel of the connection pool (64), whose exhaustion would count providers as unreachable.
DEFAULT_HAVES_IN_FLIGHT = 16
#: Files checked at once by the automatic repair of one node.
DEFAULT_CHECK_CONCURRENCY = 4
#: Nodes looked up beyond the file's holders as possible new holders.
DEFAULT_SPARE_TARGETS = 8

_REMOTE_ERRORS = (P2PStoreError, OSError, trio.TooSlowError)
"""What a peer can cause: refusals, broken channels, timeouts, refused connections."""


@dataclass(frozen=True)
class RepairConfig:
    """Deadlines and pacing of checks and repairs (the interval and threshold are
    :class:`~p2pstore.node.NodeConfig` fields)."""

    have_timeout: float = DEFAULT_HAVE_TIMEOUT
    haves_in_flight: int = DEFAULT_HAVES_IN_FLIGHT
    chunk_timeout: float = DEFAULT_CHUNK_TIMEOUT
    put_timeout: float = DEFAULT_PUT_TIMEOUT
    stripes_in_flight: int = DEFAULT_STRIPES_IN_FLIGHT
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    puts_in_flight: int = DEFAULT_PUTS_IN_FLIGHT
    check_concurrency: int = DEFAULT_CHECK_CONCURRENCY
    spare_targets: int = DEFAULT_SPARE_TARGETS
    jitter: float = DEFAULT_JITTER
    step_in: float = DEFAULT_STEP_IN


@dataclass
class Survey:
    """A check's result: the manifest, the health, and the live holders' addresses."""

    manifest: Manifest
    health: FileHealth
    peers: dict[bytes, Provider]


@dataclass
class RepairReport:
    """What a repair did. ``after`` is the health as this node knows it once the shares it
    placed are counted (other nodes see them once the new holders' announcements land)."""

    file_id: bytes
    before: FileHealth
    after: FileHealth
    stripes: list[int]
    rebuilt: int = 0
    copied: int = 0
    placed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unplaced: int = 0
    unrebuildable: list[int] = field(default_factory=list)
    bytes_fetched: int = 0
    bytes_sent: int = 0
    bytes_kept: int = 0
    seconds: float = 0.0
    held_locally: bool = False

    def as_report(self) -> dict[str, object]:
        """Plain data for the CLI and the control socket (``before`` without per-stripe
        counts; ``after`` is the caller's to show)."""
        return {
            "stripes_repaired": len(self.stripes) - len(self.unrebuildable),
            "shares_rebuilt": self.rebuilt,
            "shares_copied": self.copied,
            "placed": dict(self.placed),
            "failed_targets": dict(self.failed),
            "unplaced": self.unplaced,
            "unrebuildable": list(self.unrebuildable),
            "bytes_fetched": self.bytes_fetched,
            "bytes_sent": self.bytes_sent,
            "bytes_kept": self.bytes_kept,
            "seconds": self.seconds,
            "before": self.before.as_report(per_stripe=False),
        }


async def survey(
    file_id: bytes,
    providers: Sequence[Provider],
    *,
    store: LocalChunks,
    have_bitmap: Callable[[bytes], Awaitable[bytes | None]],
    pool: ConnectionPool,
    self_id: bytes,
    config: RepairConfig,
) -> Survey:
    """Ask ``providers`` (``haves_in_flight`` at once) and the local store which chunks of
    ``file_id`` they hold.

    Providers that fail, time out, do not know the file or send a bitmap of the wrong length
    are not holders (failures are counted in ``unreachable``). Raises
    :class:`FileUnavailableError` if the manifest is neither stored here nor obtainable from a
    provider that knows the file.
    """
    bitmaps: dict[bytes, bytes] = {}
    failures = 0

    slots = trio.Semaphore(max(1, config.haves_in_flight))

    async def ask(provider: Provider) -> None:
        nonlocal failures
        try:
            async with slots:
                with trio.fail_after(config.have_timeout):
                    conn = await _connect(pool, provider)
                    bitmap = await conn.have(file_id)
        except _REMOTE_ERRORS as exc:
            log.debug("check: %s did not answer HAVE: %s", provider.label, exc)
            failures += 1
            return
        if bitmap is not None:
            bitmaps[provider.node_id] = bitmap

    live = {p.node_id: p for p in providers if p.node_id != self_id}
    async with trio.open_nursery() as nursery:
        for provider in live.values():
            nursery.start_soon(ask, provider)
    local = await have_bitmap(file_id)
    manifest = await _manifest(file_id, store, local is not None, bitmaps, live, pool, config)
    count = manifest.chunk_count
    held: dict[bytes, frozenset[int]] = {}
    for node, bitmap in bitmaps.items():
        if len(bitmap) != (count + 7) // 8:
            log.info("check: %s sent a bitmap of the wrong length", live[node].label)
            continue
        held[node] = frozenset(bitmap_indices(bitmap, count))
    if local is not None:
        held[self_id] = frozenset(bitmap_indices(local, count))
    health = assess(manifest, held, unreachable=failures)
    return Survey(manifest, health, {n: live[n] for n in health.holders if n in live})


async def _connect(pool: ConnectionPool, provider: Provider) -> PeerConnection:
    return await pool.connect(PeerAddress(provider.node_id, provider.host, provider.port))


async def _manifest(
    file_id: bytes,
    store: LocalChunks,
    local: bool,
    bitmaps: dict[bytes, bytes],
    live: dict[bytes, Provider],
    pool: ConnectionPool,
    config: RepairConfig,
) -> Manifest:
    if local:
        try:
            return await store.load_manifest(file_id)
        except (ChunkNotFoundError, CorruptChunkError, ManifestError) as exc:
            log.info("check: the stored manifest of %s is unusable: %s", file_id.hex()[:16], exc)
    errors = []
    for node in bitmaps:
        try:
            with trio.fail_after(config.chunk_timeout):
                return await _fetch_manifest(await _connect(pool, live[node]), file_id)
        except (*_REMOTE_ERRORS, ManifestError) as exc:
            errors.append(f"{live[node].label}: {exc or type(exc).__name__}")
    raise FileUnavailableError(
        f"no reachable node has the manifest of {file_id.hex()}"
        + (": " + "; ".join(errors[:3]) if errors else ""),
        {},
    )


async def _fetch_manifest(conn: PeerConnection, file_id: bytes) -> Manifest:
    """The manifest (root, then index chunks) from one peer; every chunk verified by its ID."""
    ((_, root_bytes),) = await get_patiently(conn, [file_id])  # BUSY: wait its hint
    if root_bytes is None:
        raise ManifestError("the peer lacks the manifest root")
    root = ManifestRoot.decode(root_bytes)
    parts: dict[bytes, bytes] = {}
    while needed := root.needed_chunk_ids(parts):
        for chunk_id, data in await get_patiently(conn, needed):
            if data is None:
                raise ManifestError(f"the peer lacks manifest chunk {chunk_id.hex()}")
            parts[chunk_id] = data
    return Manifest.from_parts(root, parts)


class _Target:
    """A node receiving rebuilt shares: its channel, set up once, and its PUT slots."""

    def __init__(self, provider: Provider, puts_in_flight: int) -> None:
        self.provider = provider
        self.lock = trio.Lock()
        self.conn: PeerConnection | None = None
        self.slots = trio.Semaphore(puts_in_flight)
        self.held: frozenset[int] = frozenset()
        """The chunk positions its HAVE reported when the repair first reached it."""


class Repairer:
    """Rebuilds and places the missing shares of some stripes of one surveyed file.

    ``targets`` are possible new holders (closest to the file first; the holders found by the
    survey are added); ``local`` allows this node to keep rebuilt shares itself. Remote PUTs wait
    for their target's turn at ``uploads`` (the node's fair upload gate, shared with its chunk
    server; ``None``: no upload limit). :meth:`run` never raises for a peer's
    failure; it raises only for local errors (the store) and cancellation, which leave
    everything already stored anywhere consistent.
    """

    on_stripe_done: Callable[[int, int], None] | None = None
    """Called as ``(stripes finished, stripes to repair)`` after each stripe :meth:`run` ends."""

    def __init__(
        self,
        found: Survey,
        targets: Sequence[Provider],
        *,
        store: LocalChunks,
        pool: ConnectionPool,
        self_id: bytes,
        local: bool,
        uploads: UploadGate | None,
        config: RepairConfig,
        rng: random.Random,
    ) -> None:
        self.survey = found
        self.manifest = found.manifest
        self.store = store
        self.pool = pool
        self.self_id = self_id
        self.uploads = uploads
        self.config = config
        self.rng = rng
        self._providers: dict[bytes, Provider] = dict(found.peers)
        for t in targets:
            if t.node_id != self_id:
                self._providers.setdefault(t.node_id, t)
        candidates = list(self._providers)
        if local:
            candidates.append(self_id)
        self.placer = Placer(
            self.manifest.file_id, candidates, held_counts(self.manifest, found.health)
        )
        self._targets: dict[bytes, _Target] = {}
        self._load: dict[bytes, int] = {}
        self._placed: dict[bytes, set[int]] = {}
        self._checked: set[tuple[bytes, int]] = set()
        self._rs = ReedSolomon(self.manifest.k, self.manifest.m)
        self._local_ready = False

    async def run(self, stripes: Sequence[int]) -> RepairReport:
        """Rebuild every missing share of ``stripes`` and place it; returns what was done."""
        started = trio.current_time()
        health = self.survey.health
        report = RepairReport(self.manifest.file_id, health, health, list(stripes))
        missing = missing_shares(self.manifest, health, stripes)
        destinations: dict[tuple[int, int], bytes] = {}
        for node, items in self.placer.assign(missing).items():
            for item in items:
                destinations[item] = node
        report.unplaced = len(missing) - len(destinations)
        # Shares piled on one node are copied to nodes holding none of their stripe, if any.
        stacked = stacked_shares(health, stripes)
        for node, items in self.placer.assign(stacked, free_only=True).items():
            for item in items:
                destinations[item] = node
        holdings = stripe_holdings(self.manifest, health)
        by_stripe: dict[int, list[int]] = {}
        for s, j in destinations:
            by_stripe.setdefault(s, []).append(j)
        stripe_bytes = (self.manifest.k + self.manifest.m) * self.manifest.chunk_size
        in_flight = min(self.config.stripes_in_flight, self.config.memory_budget // stripe_bytes)
        limit = trio.Semaphore(max(1, in_flight))

        finished = 0

        async def one(stripe: int, shares: list[int]) -> None:
            nonlocal finished
            try:
                await self._repair_stripe(stripe, shares, holdings[stripe], destinations, report)
            finally:
                limit.release()
            finished += 1
            if self.on_stripe_done is not None:
                self.on_stripe_done(finished, len(by_stripe))

        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for stripe in sorted(by_stripe):
                    await limit.acquire()
                    nursery.start_soon(one, stripe, sorted(by_stripe[stripe]))
        report.held_locally = self._local_ready
        for node in self.placer.failed:
            report.failed.setdefault(self._label(node), "failed")
        held = {n: set(p) for n, p in health.held.items()}
        for node, positions in self._placed.items():
            held.setdefault(node, set()).update(positions)
        report.after = assess(self.manifest, held, unreachable=health.unreachable)
        report.seconds = trio.current_time() - started
        return report

    def _label(self, node: bytes) -> str:
        if node == self.self_id:
            return "self"
        provider = self._providers.get(node)
        return provider.label if provider is not None else node.hex()[:16]

    async def _repair_stripe(
        self,
        stripe: int,
        shares: list[int],
        holders: dict[int, list[bytes]],
        destinations: dict[tuple[int, int], bytes],
        report: RepairReport,
    ) -> None:
        rebuilt: dict[int, bytes] | None = None
        if all(j in holders for j in shares):  # only copies to make: fetch just those
            rebuilt = await self._copy(stripe, shares, holders, report)
        if rebuilt is None:
            good = await self._fetch(stripe, holders, report)
            if good is None:
                report.unrebuildable.append(stripe)
                return
            rebuilt = await trio.to_thread.run_sync(
                rebuild_shares, self.manifest, stripe, good, shares, self._rs
            )
            del good
            report.rebuilt += len(rebuilt)
        async with trio.open_nursery() as nursery:
            for share, data in rebuilt.items():
                nursery.start_soon(
                    self._deliver, stripe, share, data, destinations[(stripe, share)], report
                )

    async def _copy(
        self,
        stripe: int,
        shares: list[int],
        holders: dict[int, list[bytes]],
        report: RepairReport,
    ) -> dict[int, bytes] | None:
        """The reachable ``shares`` themselves (each verified by its ID), or None if one of
        them cannot be fetched (then the stripe is rebuilt instead)."""
        ids = self.manifest.stripes[stripe]
        got: dict[int, bytes] = {}

        async def one(share: int) -> None:
            data = await self._fetch_share(ids[share], holders[share], report)
            if data is not None:
                got[share] = data

        async with trio.open_nursery() as nursery:
            for share in shares:
                nursery.start_soon(one, share)
        if len(got) < len(shares):
            return None
        report.copied += len(got)
        return got

    async def _fetch(
        self, stripe: int, holders: dict[int, list[bytes]], report: RepairReport
    ) -> dict[int, bytes] | None:
        """The stripe's needed shares, verified: this node's own first, the rest spread over
        the holders, each share tried at its other holders (then other shares) on failure."""
        ids = self.manifest.stripes[stripe]
        needed = self.manifest.data_chunk_count(stripe)
        order = source_order(holders, needed, self.self_id, self._load, self.rng)
        for _, nodes in order[:needed]:
            remote = [n for n in nodes if n != self.self_id]
            if remote and self.self_id not in nodes:
                self._load[remote[0]] = self._load.get(remote[0], 0) + 1
        good: dict[int, bytes] = {}
        queue = iter(order)
        in_flight = 0

        async def worker() -> None:
            nonlocal in_flight
            # A worker takes the next share only while the ones fetched and being fetched are
            # too few: a failure is replaced, a success never fetched twice.
            for share, nodes in queue:
                in_flight += 1
                try:
                    data = await self._fetch_share(ids[share], nodes, report)
                finally:
                    in_flight -= 1
                if data is not None and len(good) < needed:
                    good[share] = data
                if len(good) + in_flight >= needed:
                    return

        async with trio.open_nursery() as nursery:
            for _ in range(needed):
                nursery.start_soon(worker)
        return good if len(good) >= needed else None

    async def _fetch_share(
        self, chunk_id: bytes, nodes: list[bytes], report: RepairReport
    ) -> bytes | None:
        busy: list[tuple[float, Provider]] = []  # holders that answered BUSY: (retry at, who)
        for node in nodes:
            if node == self.self_id:
                try:
                    return await self.store.get_chunk(chunk_id)
                except (ChunkNotFoundError, CorruptChunkError):
                    continue
            provider = self._providers.get(node)
            if provider is None:
                continue
            data = await self._fetch_from(provider, chunk_id, busy)
            if data is not None:
                report.bytes_fetched += len(data)
                return data
        # As a download does: the other holders first, then the busy ones after their hints.
        for retry_at, provider in sorted(busy, key=lambda b: b[0]):
            await trio.sleep_until(retry_at)
            data = await self._fetch_from(provider, chunk_id, None)
            if data is not None:
                report.bytes_fetched += len(data)
                return data
        return None

    async def _fetch_from(
        self, provider: Provider, chunk_id: bytes, busy: list[tuple[float, Provider]] | None
    ) -> bytes | None:
        """One chunk from one holder within ``chunk_timeout``; ``None`` if it failed or lacks
        it. A BUSY is noted in ``busy`` (to retry later), or with ``busy=None`` waited out."""
        try:
            with trio.fail_after(self.config.chunk_timeout):
                conn = await _connect(self.pool, provider)
                if busy is None:
                    ((_, data),) = await get_patiently(conn, [chunk_id])
                else:
                    ((_, data),) = await conn.get([chunk_id])
        except PeerBusyError as exc:
            assert busy is not None
            wait = min(max(exc.retry_after, MIN_BUSY_WAIT), self.config.chunk_timeout)
            busy.append((trio.current_time() + wait, provider))
            return None
        except _REMOTE_ERRORS as exc:
            log.info("repair: fetching from %s failed: %s", provider.label, exc)
            return None
        return data

    async def _deliver(
        self, stripe: int, share: int, data: bytes, node: bytes | None, report: RepairReport
    ) -> None:
        item = (stripe, share)
        while node is not None:
            if node not in self.placer.failed:
                if await self._holds_unknown_share(node, stripe, share, report):
                    # Another repair got there first: place this share elsewhere if possible.
                    other = self.placer.reject(node, item)
                    if other is not None and other != node:
                        node = other
                        continue
                error = await self._store_on(node, data, report)
                if error is None:
                    self._placed.setdefault(node, set()).add(self._position(stripe, share))
                    label = self._label(node)
                    report.placed[label] = report.placed.get(label, 0) + 1
                    return
                log.info("repair: %s cannot take shares: %s", self._label(node), error)
                report.failed[self._label(node)] = error
            again = self.placer.fail(node, [item])
            node = next(iter(again), None)
        report.unplaced += 1

    async def _holds_unknown_share(
        self, node: bytes, stripe: int, share: int, report: RepairReport
    ) -> bool:
        """Whether ``node`` turned out (on its HAVE when the repair reached it) to hold a share
        of ``stripe`` that the survey did not show: a concurrent repair placed it there."""
        if node == self.self_id or (node, stripe) in self._checked:
            return False
        self._checked.add((node, stripe))
        target = self._targets.get(node)
        if target is None:
            target = _Target(self._providers[node], self.config.puts_in_flight)
            self._targets[node] = target
        try:
            await self._ready(target, report)
        except _REMOTE_ERRORS:
            return False  # storing on it will fail and say why
        start = self._position(stripe, 0)
        known = self.survey.health.held.get(node, frozenset())
        unknown = {
            p - start
            for p in target.held - known
            if start <= p < start + len(self.manifest.stripes[stripe])
        }
        return bool(unknown - {share})

    def _position(self, stripe: int, share: int) -> int:
        return sum(len(ids) for ids in self.manifest.stripes[:stripe]) + share

    async def _store_on(self, node: bytes, data: bytes, report: RepairReport) -> str | None:
        """Store one rebuilt share on ``node``; the node's failure as text, or None."""
        chunk_id = hashlib.sha256(data).digest()
        if node == self.self_id:
            if not self._local_ready:
                await self.store.add_manifest(self.manifest, pin=True)
                self._local_ready = True
            await self.store.put_chunk(chunk_id, data, file_id=self.manifest.file_id)
            report.bytes_kept += len(data)
            return None
        target = self._targets.get(node)
        if target is None:
            target = _Target(self._providers[node], self.config.puts_in_flight)
            self._targets[node] = target
        try:
            conn = await self._ready(target, report)
            async with target.slots:
                await self._put(conn, chunk_id, data, report)
        except QuotaExceededError as exc:
            return f"quota: {exc}"
        except _REMOTE_ERRORS as exc:
            return str(exc) or type(exc).__name__
        return None

    async def _ready(self, target: _Target, report: RepairReport) -> PeerConnection:
        """The target's channel; a node new to the file first gets its manifest (index chunks,
        then the root), so it adopts the file and announces itself before its shares arrive."""
        async with target.lock:
            if target.conn is not None and not target.conn.closed:
                return target.conn
            with trio.fail_after(self.config.have_timeout):
                conn = await _connect(self.pool, target.provider)
                known = await conn.have(self.manifest.file_id)
            if known is None:
                for chunk_id, data in reversed(self.manifest.manifest_chunks()):
                    await self._put(conn, chunk_id, data, report)
            elif len(known) == (self.manifest.chunk_count + 7) // 8:
                target.held = frozenset(bitmap_indices(known, self.manifest.chunk_count))
            target.conn = conn
            return conn

    async def _put(
        self, conn: PeerConnection, chunk_id: bytes, data: bytes, report: RepairReport
    ) -> None:
        if self.uploads is not None:
            # Our own push: it waits its turn among the peers we serve, but is never refused.
            await self.uploads.acquire(conn.peer_node_id, len(data), may_refuse=False)
        with trio.fail_after(self.config.put_timeout):
            await conn.put(chunk_id, data)
        report.bytes_sent += len(data)


__all__ = [
    "RepairConfig",
    "RepairReport",
    "Repairer",
    "Survey",
    "survey",
]
