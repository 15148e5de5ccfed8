"""The parallel multi-peer download: the thin Trio layer around :class:`DownloadScheduler`.

One :class:`Download` fetches one file. It finds providers, fetches and verifies the manifest, asks
each provider what it holds (``HAVE``), and runs **one worker task per peer, each in its own cancel
scope**, with one task per chunk request (each in its own cancel scope too). Every decision (which
chunk from whom, when a peer is too slow, endgame duplicates, when a stripe is done) comes from the
sans-IO scheduler; this module only moves bytes and time:

* a verified chunk frees its request slot at once (the scheduler hears of it on arrival) and
  goes through a bounded queue to one writer task that writes it to the output and stores it in
  batches (one thread hop and one index transaction per batch, no second hash: the wire client
  verified it), so an interrupted download resumes; a stripe is rebuilt only once its chunks are
  stored; a full queue holds the requests whose chunks wait in it (back-pressure);
* ``CancelRequest`` cancels that request's scope, ``DropPeer`` cancels that peer's scope;
* a peer that fails (connection refused, handshake, channel error) is reported and its work
  re-queued; new providers are looked up again while some stripe is unreachable, and every
  ``refresh_interval`` seconds while the download runs (partial providers join all the time),
  the wait doubling up to ``max_refresh_interval`` while look-ups find nobody new;
* swarming (peers that speak ``swarm``): each peer is WATCHed rather than asked HAVE once, so its
  new chunks arrive as HAVE_UPDATEs (a refused WATCH falls back to HAVE); a BUSY reply re-queues
  that chunk and rests that peer for the hinted time, floored and backed off (no strike; a peer that
  only defers is dropped after ``busy_give_up``); a request times out only after ``chunk_timeout``
  without any sign of life from its peer (a delivery or a BUSY extends the deadlines of its other
  requests, up to ``max_request_wait``), so queueing at a live peer is not taken for death; every
  chunk stored is reported to ``on_stored`` (the node publishes it to its own watchers and announces
  itself a provider after the first); peers that WATCH this node for the file are offered as sources
  through :meth:`Download.offer_provider`;
* once every stripe has ``k`` verified chunks the file is rebuilt from the store into a temporary
  file beside the destination and renamed into place.

Memory is bounded by the requests in flight plus the store queue (``STORE_QUEUE_BYTES``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from .._groups import collapse_exception_groups
from ..dht.records import subnet_of
from ..errors import (
    ChunkNotFoundError,
    CorruptChunkError,
    FileUnavailableError,
    ManifestError,
    P2PStoreError,
    ProtocolError,
)
from ..manifest import Manifest, ManifestRoot
from ..ratelimit import RateLimiter
from ..telemetry import Telemetry
from ..wire.client import (
    ConnectionPool,
    PeerAddress,
    PeerBusyError,
    PeerConnection,
    WatchHandle,
    WatchRefusedError,
)
from ..wire.uploads import DEFAULT_BUSY_AFTER
from .output import OutputFile
from .progress import Progress
from .scheduler import (
    DEFAULT_PIPELINE_FLOOR,
    CancelRequest,
    ChunkRequest,
    Decision,
    DownloadScheduler,
    DropPeer,
    SchedulerConfig,
    StripeComplete,
    StripeSpec,
)

log = logging.getLogger(__name__)

#: Seconds to wait for one chunk: generous, since a rate-limited peer with a full pipeline may
#: take several seconds per chunk; slow peers are cut off by the scheduler's rate check instead.
DEFAULT_CHUNK_TIMEOUT = 20.0
#: Seconds for the TCP connect + handshake + HAVE of one peer.
DEFAULT_PEER_SETUP_TIMEOUT = 5.0
#: Seconds between provider look-ups while some stripe is unreachable with the current peers.
DEFAULT_REDISCOVER_INTERVAL = 1.0
#: Look-ups that find no new provider before an unreachable download gives up.
DEFAULT_REDISCOVER_ATTEMPTS = 3
#: How often the scheduler's slow-peer check runs.
DEFAULT_SLOW_CHECK_INTERVAL = 0.5
#: How often the progress callback is called at most.
DEFAULT_PROGRESS_INTERVAL = 0.1
#: Times a provider that failed (not one the scheduler dropped) is tried again in one download.
MAX_PEER_RETRIES = 2

MANIFEST_LOOKUP_RETRIES = 2
"""Fresh provider look-ups after every provider found has failed to give the manifest (each
draws another random subset of the records where they do not all fit a reply)."""
#: Largest file (data + parity chunks) a download accepts, checked on the root manifest before
#: any index chunk is fetched: a file ID from a stranger may describe up to 1 PiB, and the plan
#: costs about 200 bytes of memory per chunk. 2**21 chunks is 1.4 TiB of data at 1 MiB chunks with
#: k=4, m=2 (about 400 MiB of plan); raise it for bigger files.
DEFAULT_MAX_FILE_CHUNKS = 1 << 21
#: Providers asked at once for the manifest; the first to answer wins, the others are cancelled.
#: Wide, because false providers (Sybil identities announcing a file they do not serve) may be
#: most of those found: each attempt is one connection the download's peer workers open anyway.
MANIFEST_RACE_WIDTH = 16
#: Seconds after which a manifest attempt that has not succeeded yet stops counting against the
#: race's width, so an untried provider is asked too (the attempt itself keeps its own deadlines:
#: a slow honest provider of a big manifest still wins if it is the only one).
DEFAULT_MANIFEST_ATTEMPT_TIMEOUT = 2.0
#: A peer with requests in flight that delivers nothing for this many seconds (plus one chunk's
#: time at ``STALL_MIN_RATE``), while some other peer is not stalling, is cut off, whatever the
#: median rate (when most peers stall, the median is 0).
DEFAULT_STALL_FLOOR = 3.0
#: Bytes per second below which a peer that sends nothing at all counts as stalled: 1 MiB chunks
#: get 1 s on top of the floor, 16 MiB chunks 16 s.
STALL_MIN_RATE = 1024 * 1024
#: Once a peer has been cut off for stalling in a download, the others get this much less time.
STALL_PROBATION_DIVISOR = 4
#: Seconds between provider look-ups while a download runs, even when every stripe is reachable:
#: other downloaders become partial providers during the download and should be used.
DEFAULT_REFRESH_INTERVAL = 3.0
#: ... doubled after each look-up that finds no new provider, up to this (in a flash crowd of N
#: downloaders the nodes closest to the key get N look-ups per interval: back off once the
#: crowd is known; WATCH dial-backs still bring in newcomers at once).
DEFAULT_MAX_REFRESH_INTERVAL = 60.0
#: The longest one chunk request may wait at a peer that keeps showing signs of life (other
#: deliveries, BUSY replies): queueing behind other downloaders is slow, not dead.
DEFAULT_MAX_REQUEST_WAIT = 120.0
#: A peer's HAVE_UPDATE indices beyond twice the file's chunk count plus this are a flood: an
#: honest peer names each chunk about once.
UPDATE_FLOOD_SLACK = 256
#: The longest wait for one BUSY hint while fetching the manifest (it is tiny: worth retrying).
MANIFEST_BUSY_WAIT = 2.0
#: The shortest wait after a BUSY hint (the spec's floor: a 0 ms hint is not a licence to spin).
MIN_BUSY_WAIT = 0.25
#: Bytes of verified chunks that may wait to be written and stored (at least one chunk): the
#: writer catches up in batches while the requests' slots are already refilled.
STORE_QUEUE_BYTES = 32 * 1024 * 1024
#: Chunks written and stored in one batch at most (one thread hop, one index transaction).
STORE_BATCH_CHUNKS = 16


def next_refresh_interval(interval: float, found_new: bool, config: DownloadConfig) -> float:
    """The wait before the next background provider look-up: ``refresh_interval`` again if
    the last one found a new provider (the crowd is still growing), else twice ``interval``
    (at least ``refresh_interval`` once the first quick ones are done), at most
    ``max_refresh_interval``. Unreachable stripes have their own look-ups
    (``rediscover_interval``), so backing off here never delays a rescue."""
    base = config.refresh_interval
    if interval < base:
        return min(interval * 2, base)
    if found_new:
        return base
    return max(base, min(interval * 2, config.max_refresh_interval))


async def get_patiently(
    conn: PeerConnection, chunk_ids: Sequence[bytes], *, max_wait: float = MANIFEST_BUSY_WAIT
) -> list[tuple[bytes, bytes | None]]:
    """``conn.get(chunk_ids)``, asking again after each BUSY hint (floored at 0.25 s, at most
    ``max_wait``; the caller's deadline bounds the whole): a busy holder is the usual state of a
    popular file's first seconds, and of a holder with an upload limit that repair reads from."""
    found: dict[bytes, bytes | None] = {}
    wanted = list(chunk_ids)
    while wanted:
        try:
            for chunk_id, data in await conn.get(wanted):
                found[chunk_id] = data
            break
        except PeerBusyError as busy:
            found.update(busy.found)
            wanted = [c for c in wanted if c not in found]
            await trio.sleep(min(max(busy.retry_after, MIN_BUSY_WAIT), max_wait))
    return [(chunk_id, found[chunk_id]) for chunk_id in chunk_ids]


@dataclass(frozen=True)
class DownloadConfig:
    """Timeouts and pacing of a download (the scheduler has its own :class:`SchedulerConfig`)."""

    chunk_timeout: float = DEFAULT_CHUNK_TIMEOUT
    peer_setup_timeout: float = DEFAULT_PEER_SETUP_TIMEOUT
    manifest_race_width: int = MANIFEST_RACE_WIDTH
    manifest_attempt_timeout: float = DEFAULT_MANIFEST_ATTEMPT_TIMEOUT
    stall_floor: float = DEFAULT_STALL_FLOOR
    rediscover_interval: float = DEFAULT_REDISCOVER_INTERVAL
    rediscover_attempts: int = DEFAULT_REDISCOVER_ATTEMPTS
    slow_check_interval: float = DEFAULT_SLOW_CHECK_INTERVAL
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    max_file_chunks: int = DEFAULT_MAX_FILE_CHUNKS
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    max_refresh_interval: float = DEFAULT_MAX_REFRESH_INTERVAL
    max_request_wait: float = DEFAULT_MAX_REQUEST_WAIT
    # Each peer's pipeline sized to its bandwidth-delay product (see SchedulerConfig).
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(pipeline_floor=DEFAULT_PIPELINE_FLOOR)
    )


@dataclass(frozen=True)
class Provider:
    """A peer believed to serve a file: its node ID (verified by the handshake) and TCP address."""

    node_id: bytes
    host: str
    port: int

    @property
    def label(self) -> str:
        """``host:port``, for progress reports and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class LocalChunks(Protocol):
    """What a download needs of the local store."""

    def has_chunk(self, chunk_id: bytes) -> bool: ...

    def has_chunks(self, chunk_ids: Sequence[bytes]) -> list[bool]: ...

    async def get_chunk(self, chunk_id: bytes) -> bytes: ...

    async def put_chunk(
        self,
        chunk_id: bytes,
        data: bytes,
        *,
        enforce_quota: bool = False,
        file_id: bytes | None = None,
    ) -> bool: ...

    async def put_chunks(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        enforce_quota: bool = False,
        file_id: bytes | None = None,
        verified: bool = False,
    ) -> list[bool]: ...

    async def load_manifest(self, file_id: bytes) -> Manifest: ...

    async def add_manifest(self, manifest: Manifest, *, pin: bool = True) -> None: ...


class FindProviders(Protocol):
    """Looks up the providers of a key; ``quick`` may return after the first reply naming any."""

    def __call__(self, key: bytes, *, quick: bool = False) -> Awaitable[Sequence[Provider]]: ...


ProgressCallback = Callable[[Progress, dict[Hashable, str]], None]
StoredCallback = Callable[[Hashable, int], None]
"""``on_stored(peer, index)``: chunk ``index`` (manifest order) from ``peer`` is now verified and
stored here (newly: a copy already stored is not reported). Must not block."""


class StripeSink(Protocol):
    """Where a download's verified chunks go: :class:`OutputFile` (the default) or a streaming
    reader's sink (``p2pstore.http.gateway``), made by ``sink(manifest, dest)`` once the manifest
    is known. ``complete_stripe(s, store)`` is called once per stripe when its ``k`` chunks are
    verified and in the store, so a sink that only wants whole stripes can read them there."""

    async def open(self) -> None: ...

    async def write_chunk(self, stripe: int, share: int, data: bytes) -> None: ...

    async def complete_stripe(self, stripe: int, source: LocalChunks) -> None: ...

    async def finish(self) -> None: ...

    def abort(self) -> None: ...


SinkFactory = Callable[[Manifest, Path], StripeSink]


@dataclass
class DownloadOutcome:
    """What a finished download did: per-peer verified bytes and how much was already local."""

    manifest: Manifest
    bytes_from_peers: dict[str, int]
    resumed_chunks: int
    seconds: float
    first_chunk_seconds: float | None


@dataclass(frozen=True)
class _Received:
    """A verified chunk on its way to the output and the store."""

    request: ChunkRequest
    data: bytes


def stripe_specs(manifest: Manifest) -> list[StripeSpec]:
    """The scheduler's view of a manifest: per stripe its chunk IDs, ``k`` and chunk sizes.

    A short last stripe needs only as many shares as it has data chunks (the missing data chunks
    are implicit zeros), so its ``k`` is its data-chunk count.
    """
    return [
        StripeSpec(
            chunk_ids=ids,
            k=manifest.data_chunk_count(s),
            chunk_sizes=tuple(manifest.chunk_length(s, j) for j in range(len(ids))),
        )
        for s, ids in enumerate(manifest.stripes)
    ]


def failure_reason(exc: BaseException) -> str:
    """A peer's failure as one non-empty phrase (a timeout's ``str`` is empty)."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out (no answer in time)"
    return str(exc) or type(exc).__name__


def _network(provider: Provider) -> Hashable:
    """The network a provider is in, for spreading attempts: its /24 or /64, or (an address
    exempt from the DHT's caps, like 127.0.0.1) its node ID, a network of its own."""
    return subnet_of(provider.host) or provider.node_id


def bitmap_indices(bitmap: bytes, count: int) -> list[int]:
    """Indices ``i < count`` whose bit is set (LSB-first within each byte)."""
    out: list[int] = []
    for byte_index, byte in enumerate(bitmap[: (count + 7) // 8]):
        if not byte:
            continue
        base = byte_index * 8
        for bit in range(8):
            if byte >> bit & 1 and base + bit < count:
                out.append(base + bit)
    return out


class Download:
    """Fetch one file from its providers into ``dest``; see the module docstring.

    :meth:`run` returns a :class:`DownloadOutcome` once ``dest`` holds the verified file. It raises
    :class:`FileUnavailableError` (naming the missing stripes and chunks) when no provider is
    found or some stripe cannot reach ``k`` chunks after repeated look-ups, and
    :class:`ManifestError` if the manifest cannot be obtained intact. Nothing is left at ``dest``
    on failure or cancellation; every verified chunk stays in the store, so running again resumes.
    """

    rate_limiter: RateLimiter | None = None
    """Shared by every download of a node with a download limit (set after construction):
    each received chunk waits for its bytes before it is used (see :meth:`_pay_download`)."""

    def __init__(
        self,
        file_id: bytes,
        dest: Path,
        *,
        store: LocalChunks,
        pool: ConnectionPool,
        find_providers: FindProviders,
        self_node_id: bytes,
        config: DownloadConfig | None = None,
        progress: ProgressCallback | None = None,
        rng: random.Random | None = None,
        listen_port: int = 0,
        on_stored: StoredCallback | None = None,
        sink: SinkFactory | None = None,
        window: tuple[int, int] | None = None,
        telemetry: Telemetry | None = None,
        cache_only: bool = False,
    ) -> None:
        self.file_id = file_id
        # ``cache_only`` (gateway reads of remote files): chunks are stored unheld and the file
        # is neither recorded nor pinned, so the next gc may free them.
        self.cache_only = cache_only
        self._hold_for: bytes | None = None if cache_only else file_id
        self.listen_port = listen_port
        self.on_stored = on_stored
        self.telemetry = telemetry or Telemetry()
        # Streaming reads (the HTTP gateway): ``sink`` replaces the output file and ``window``
        # puts the scheduler in sequential mode (see :meth:`set_window`).
        self._sink_factory: SinkFactory = sink or OutputFile
        self._window = window
        self._window_endgame = False
        self.dest = dest
        self.store = store
        self.pool = pool
        self.find_providers = find_providers
        self.self_node_id = self_node_id
        self.config = config or DownloadConfig()
        self.progress_callback = progress
        self.rng = rng or random.Random()
        self._providers: dict[bytes, Provider] = {}
        self._peer_scopes: dict[Hashable, trio.CancelScope] = {}
        self._request_scopes: dict[tuple[Hashable, int], trio.CancelScope] = {}
        self._changed = trio.Event()
        self._started_at = 0.0
        self._first_chunk_at: float | None = None
        self._sched: DownloadScheduler | None = None
        self._output: StripeSink | None = None
        self._ready = trio.Event()  # set once the manifest, scheduler and output exist
        self._finished = trio.Event()
        self._setups_pending = 0
        self._chunk_count = 0
        self._chunk_size = 0  # the manifest's, once known
        self._failure: P2PStoreError | None = None
        self._retries: dict[bytes, int] = {}
        self._discovery_done = trio.Event()  # the full provider look-up has ended
        self._race_wakeup = trio.Event()  # new providers, or a manifest attempt ended
        self._fetch: trio.Nursery | None = None
        self._updates_seen = 0  # HAVE_UPDATEs received: the peers' holdings are still growing
        # per peer: request index -> (its timeout scope, when it started)
        self._timers: dict[Hashable, dict[int, tuple[trio.CancelScope, float]]] = {}
        # Stall detection: per peer (verified bytes received, since when unchanged); peers cut
        # off for stalling, never retried in this download.
        self._stall_clock: dict[Hashable, tuple[int, float]] = {}
        self._stalled: set[Hashable] = set()
        # Why each peer left this download (scheduler drops, stall cut-offs), for the error
        # message of a download that runs out of peers.
        self._peer_faults: dict[Hashable, str] = {}
        self._last_alive: dict[Hashable, float] = {}  # per peer: its last delivery or BUSY
        self._fair_share_peers: set[Hashable] = set()  # watched peers: they queue us fairly
        # The store queue (see STORE_QUEUE_BYTES): made by _prepare, drained by _store_received.
        self._store_queue: trio.MemorySendChannel[_Received] | None = None
        self._unstored: dict[int, int] = {}  # stripe -> its chunks queued, not yet stored
        self._complete_when_stored: set[int] = set()  # stripes done, waiting for their chunks

    # ------------------------------------------------------------------ public

    async def run(self) -> DownloadOutcome:
        """Download and write the file; see the class docstring for what it raises."""
        self._started_at = trio.current_time()
        manifest = await self._local_manifest()
        already: list[int] = []
        try:
            with collapse_exception_groups():
                async with trio.open_nursery() as writers:
                    async with trio.open_nursery() as fetch:
                        self._fetch = fetch
                        if manifest is None or not self._complete_locally(manifest):
                            # Start on the first providers found; the full look-up (which may
                            # wait out departed nodes' timeouts) adds the others as it ends.
                            new, _ = await self._discover(quick=True)
                            for provider in new:
                                fetch.start_soon(self._peer_worker, provider)
                            fetch.start_soon(self._discover_rest, fetch)
                        if manifest is None:
                            manifest = await self._fetch_manifest()
                        already = await self._prepare(manifest, writers)
                        sched = self._sched
                        assert sched is not None
                        if not sched.is_complete():
                            fetch.start_soon(self._watch_availability, sched, fetch)
                            fetch.start_soon(self._refresh_providers, fetch)
                            fetch.start_soon(self._check_slow_peers, sched)
                            if self.progress_callback is not None:
                                fetch.start_soon(self._report_progress, sched)
                            await self._finished.wait()
                        fetch.cancel_scope.cancel()
                    self._fetch = None
                    if self._failure is not None:
                        raise self._failure
                    if self._store_queue is not None:
                        self._store_queue.close()  # the writer stores what is queued, then ends
            assert self._output is not None
            assert manifest is not None
            with trio.CancelScope(shield=True):  # renamed into place <=> recorded in the store
                await self._output.finish()
                if not self.cache_only:
                    await self.store.add_manifest(manifest, pin=True)
        except BaseException:
            if self._output is not None:
                self._output.abort()
            raise
        assert self._sched is not None
        progress = self._sched.progress(trio.current_time())
        self._report(progress)
        by_peer = {
            self._label(peer): p.bytes for peer, p in progress.per_peer.items() if p.bytes > 0
        }
        first = None
        if self._first_chunk_at is not None:
            first = self._first_chunk_at - self._started_at
        return DownloadOutcome(
            manifest=manifest,
            bytes_from_peers=by_peer,
            resumed_chunks=len(already),
            seconds=trio.current_time() - self._started_at,
            first_chunk_seconds=first,
        )

    def offer_provider(self, provider: Provider) -> bool:
        """A peer that may hold chunks of this file (e.g. it WATCHes it on our server and serves
        on ``provider.port``): dial it as a source too. True if a worker was started for it;
        False if the download is not fetching, or the peer is us, already a source, dropped, cut
        off for stalling, or out of retries. The dial names ``provider.node_id``, so a false
        claim only fails that dial."""
        peer = provider.node_id
        if self._fetch is None or self._finished.is_set() or peer == self.self_node_id:
            return False
        if peer in self._peer_scopes or peer in self._stalled:
            return False
        if self._sched is not None and self._sched.is_dropped(peer):
            return False
        if peer in self._providers:
            if self._retries.get(peer, 0) >= MAX_PEER_RETRIES:
                return False
            self._retries[peer] = self._retries.get(peer, 0) + 1
        self._providers[peer] = provider
        self._fetch.start_soon(self._peer_worker, provider)
        return True

    async def _prepare(self, manifest: Manifest, writers: trio.Nursery) -> list[int]:
        """Create the scheduler and the output file; queue the stripes already stored."""
        output = self._output = self._sink_factory(manifest, self.dest)  # may call set_window
        ids = manifest.chunk_ids()
        present = self.store.has_chunks(ids)
        already = [i for i, ok in enumerate(present) if ok]
        self._chunk_count = len(ids)
        self._chunk_size = manifest.chunk_size
        sched = DownloadScheduler(
            stripe_specs(manifest),
            already_have=already,
            config=self.config.scheduler,
            rng=self.rng,
            window=self._window,
        )
        if self._window is not None:
            sched.set_window(*self._window, endgame=self._window_endgame)
        await output.open()
        self._sched, self._writers = sched, writers
        capacity = max(1, STORE_QUEUE_BYTES // max(1, manifest.chunk_size))
        self._store_queue, queued = trio.open_memory_channel[_Received](capacity)
        writers.start_soon(self._store_received, queued)
        for s in range(len(manifest.stripes)):
            if sched.stripe_done(s):
                writers.start_soon(output.complete_stripe, s, self.store)
        self._ready.set()
        if sched.is_complete():
            self._finished.set()
        return already

    def _complete_locally(self, manifest: Manifest) -> bool:
        present = self.store.has_chunks(manifest.chunk_ids())
        pos = 0
        for s, ids in enumerate(manifest.stripes):
            if sum(present[pos : pos + len(ids)]) < manifest.data_chunk_count(s):
                return False
            pos += len(ids)
        return True

    def set_window(self, first: int, end: int, *, endgame: bool = False) -> None:
        """Sequential mode: fetch only stripes ``first <= s < end`` from now on, lowest first
        (:meth:`DownloadScheduler.set_window`). Only for a download created with ``window``;
        may be called before the scheduler exists (from the sink factory)."""
        if self._window is None:
            raise ValueError("set_window needs a download created with a window")
        self._window = (first, end)
        self._window_endgame = endgame
        if self._sched is not None:
            self._sched.set_window(first, end, endgame=endgame)
            self._notify()

    # ------------------------------------------------------------------ manifest

    async def _local_manifest(self) -> Manifest | None:
        if not self.store.has_chunk(self.file_id):
            return None
        try:
            return await self.store.load_manifest(self.file_id)
        except (ChunkNotFoundError, CorruptChunkError):
            return None  # part of a large manifest is missing: fetch it from peers

    async def _discover_rest(self, nursery: trio.Nursery) -> None:
        try:
            new, _ = await self._discover()
        except P2PStoreError as exc:
            log.info("provider look-up failed: %s", exc)
            return
        finally:
            self._discovery_done.set()
            self._wake_manifest_race()
        for provider in new:
            nursery.start_soon(self._peer_worker, provider)

    async def _discover(self, *, quick: bool = False) -> tuple[list[Provider], list[Provider]]:
        """Look providers up again: ``(new, retried)``. ``new`` were never seen; ``retried``
        failed before (connection lost, pool full...) and get another chance, at most
        ``MAX_PEER_RETRIES`` times; peers the scheduler dropped are never retried."""
        found = await self.find_providers(self.file_id, quick=quick)
        new, retried = [], []
        for p in found:
            if p.node_id == self.self_node_id or p.node_id in self._peer_scopes:
                continue
            if p.node_id in self._stalled:
                continue
            if self._sched is not None and self._sched.is_dropped(p.node_id):
                continue
            if p.node_id not in self._providers:
                new.append(p)
            elif self._retries.get(p.node_id, 0) < MAX_PEER_RETRIES:
                self._retries[p.node_id] = self._retries.get(p.node_id, 0) + 1
                retried.append(p)
            else:
                continue
            self._providers[p.node_id] = p
        if new:
            self._wake_manifest_race()
        return new, retried

    async def _fetch_manifest(self) -> Manifest:
        """The manifest from the providers found so far and those the look-ups still running add
        (the quick look-up may have named only departed or hostile nodes); see
        :meth:`_race_manifest`. Raises :class:`FileUnavailableError` naming every provider's
        reason once all have failed and the full look-up has ended."""
        tried: set[bytes] = set()
        errors: list[str] = []
        manifest = await self._race_manifest(tried, errors)
        # Every provider found failed. A DHT node returns a random subset of a key's records
        # when they do not all fit a reply, so a crowd of false providers can leave out the
        # honest record by chance: a fresh look-up draws again (a bounded number of times).
        for _ in range(MANIFEST_LOOKUP_RETRIES):
            if manifest is not None or not tried:
                break
            try:
                new, _retried = await self._discover()
            except P2PStoreError as exc:
                log.info("provider look-up failed: %s", exc)
                break
            if not any(p.node_id not in tried for p in new):
                break
            manifest = await self._race_manifest(tried, errors)
        if manifest is not None:
            return manifest
        if not tried:
            raise FileUnavailableError(f"no provider found for file {self.file_id.hex()}", {})
        raise FileUnavailableError(
            f"could not fetch the manifest of {self.file_id.hex()} from "
            f"{len(tried)} provider(s): " + "; ".join(errors[:5]),
            {},
        )

    def _next_manifest_candidate(self, tried: set[bytes], asked: dict[Hashable, int]) -> Provider:
        """The untried provider to ask next: one from a network (its /24 or /64, see
        :func:`_network`) asked least often so far, at random. So a crowd of false
        providers in one place costs the race one attempt per round, not one per identity."""
        untried = [p for p in self._providers.values() if p.node_id not in tried]
        fewest = min(asked.get(_network(p), 0) for p in untried)
        return self.rng.choice([p for p in untried if asked.get(_network(p), 0) == fewest])

    def _wake_manifest_race(self) -> None:
        self._race_wakeup.set()
        self._race_wakeup = trio.Event()

    async def _race_manifest(self, tried: set[bytes], errors: list[str]) -> Manifest | None:
        """Ask providers for the manifest, ``manifest_race_width`` at a time, taking each new
        provider as the look-ups find it (:meth:`_next_manifest_candidate` picks the order); an
        attempt older than ``manifest_attempt_timeout`` frees its place for the next provider
        (it goes on). The first valid manifest cancels the rest; ``None`` once every provider
        failed and the full look-up has ended. Providers asked go into ``tried``, every
        failure's reason into ``errors``."""
        winner: list[Manifest] = []
        young = trio.Semaphore(max(1, self.config.manifest_race_width))
        asked: dict[Hashable, int] = {}
        running = 0
        async with trio.open_nursery() as nursery:

            async def attempt(provider: Provider) -> None:
                nonlocal running
                freed = False

                def free() -> None:
                    nonlocal freed
                    if not freed:
                        freed = True
                        young.release()

                async def age(scope: trio.CancelScope) -> None:
                    with scope:
                        await trio.sleep(self.config.manifest_attempt_timeout)
                        free()

                timer = trio.CancelScope()
                nursery.start_soon(age, timer)
                try:
                    manifest = await self._manifest_from(provider)
                except (P2PStoreError, OSError, trio.TooSlowError) as exc:
                    errors.append(f"{provider.label}: {failure_reason(exc)}")
                    return
                finally:
                    timer.cancel()
                    free()
                    running -= 1
                    self._wake_manifest_race()
                if not winner:
                    winner.append(manifest)
                    nursery.cancel_scope.cancel()

            while True:
                wakeup = self._race_wakeup
                if any(p not in tried for p in self._providers):
                    await young.acquire()
                    provider = self._next_manifest_candidate(tried, asked)
                    tried.add(provider.node_id)
                    asked[_network(provider)] = asked.get(_network(provider), 0) + 1
                    running += 1
                    nursery.start_soon(attempt, provider)
                    continue
                if not running and self._discovery_done.is_set():
                    break
                await wakeup.wait()  # a provider found, an attempt ended, the look-up done
        return winner[0] if winner else None

    async def _manifest_from(self, provider: Provider) -> Manifest:
        """The manifest from ``provider``: the root within the set-up deadline, then each batch
        of index chunks within the chunk deadline (a big file's index is many MiB)."""
        with trio.fail_after(self.config.peer_setup_timeout * 2):
            conn = await self._connect(provider)
            ((_, root_bytes),) = await self._get_patiently(conn, [self.file_id])
            if root_bytes is None:
                raise ChunkNotFoundError(self.file_id)
        root = ManifestRoot.decode(root_bytes)
        if root.file_id != self.file_id:  # cannot happen after the hash check; belt and braces
            raise ManifestError("manifest does not hash to the file ID")
        chunks = root.layout.total_chunks(root.size)
        if chunks > self.config.max_file_chunks:
            raise ManifestError(
                f"file {root.name!r} has {chunks} chunks, more than this node accepts "
                f"({self.config.max_file_chunks}; see DownloadConfig.max_file_chunks)"
            )
        await self.store.put_chunk(self.file_id, root_bytes, file_id=self._hold_for)
        parts: dict[bytes, bytes] = {}
        while needed := root.needed_chunk_ids(parts):
            with trio.fail_after(self.config.chunk_timeout):
                fetched = await self._get_patiently(conn, needed)
            for chunk_id, data in fetched:
                if data is None:
                    raise ManifestError(f"{provider.label} lacks manifest chunk {chunk_id.hex()}")
                parts[chunk_id] = data
                await self.store.put_chunk(chunk_id, data, file_id=self._hold_for)
        return Manifest.from_parts(root, parts)

    async def _get_patiently(
        self, conn: PeerConnection, chunk_ids: Sequence[bytes]
    ) -> list[tuple[bytes, bytes | None]]:
        return await get_patiently(conn, chunk_ids)

    async def _connect(self, provider: Provider) -> PeerConnection:
        with trio.fail_after(self.config.peer_setup_timeout):
            return await self.pool.connect(
                PeerAddress(provider.node_id, provider.host, provider.port)
            )

    # ------------------------------------------------------------------ transfer

    def _notify(self) -> None:
        """Wake every worker waiting for work; called after any scheduler event."""
        if self._sched is not None and self._sched.is_complete():
            self._finished.set()
        self._changed.set()
        self._changed = trio.Event()

    def _apply(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, CancelRequest):
                scope = self._request_scopes.get((decision.peer, decision.index))
                if scope is not None:
                    scope.cancel()
            elif isinstance(decision, DropPeer):
                log.info("dropping peer %s: %s", self._label(decision.peer), decision.reason)
                self._peer_faults[decision.peer] = decision.reason
                peer_scope = self._peer_scopes.get(decision.peer)
                if peer_scope is not None:
                    peer_scope.cancel()
            elif isinstance(decision, StripeComplete):
                if self._unstored.get(decision.stripe):
                    self._complete_when_stored.add(decision.stripe)  # see _store_received
                else:
                    self._complete_stripe(decision.stripe)
        self._notify()

    def _complete_stripe(self, stripe: int) -> None:
        assert self._output is not None
        self._writers.start_soon(self._output.complete_stripe, stripe, self.store)

    async def _peer_worker(self, provider: Provider) -> None:
        """Connect and learn what the peer holds (WATCH if it speaks ``swarm``, else HAVE) while
        the manifest is being fetched, then keep the peer's pipeline full (and, with a watch,
        its holdings up to date) until the download ends or the peer is dropped."""
        peer = provider.node_id
        added = False
        watch: WatchHandle | None = None
        if peer in self._peer_scopes:
            return  # two look-ups (or a look-up and a watcher) named it at once
        with trio.CancelScope() as scope:
            self._peer_scopes[peer] = scope
            try:
                self._setups_pending += 1
                try:
                    conn = await self._connect(provider)
                    asked = trio.current_time()  # the WATCH/HAVE round trip sizes its pipeline
                    with trio.fail_after(self.config.peer_setup_timeout):
                        if conn.swarming:
                            try:
                                watch = await conn.watch(self.file_id, self.listen_port)
                                bitmap = watch.bitmap
                            except WatchRefusedError:
                                # Watched too much (a limit, perhaps an attacker filling it):
                                # still a source, only its new chunks go unseen.
                                bitmap = await conn.have(self.file_id)
                        else:
                            bitmap = await conn.have(self.file_id)
                    round_trip = trio.current_time() - asked
                finally:
                    self._setups_pending -= 1
                if bitmap is None and watch is None:
                    return  # it announced the file but no longer knows it
                await self._ready.wait()
                sched = self._sched
                assert sched is not None
                have = bitmap_indices(bitmap, self._chunk_count) if bitmap is not None else []
                sched.add_peer(peer, have, trio.current_time(), fair_share=conn.swarming)
                sched.set_round_trip(peer, round_trip)
                if conn.swarming:
                    self._fair_share_peers.add(peer)
                added = True
                self._notify()
                async with trio.open_nursery() as requests:
                    if watch is not None:
                        requests.start_soon(self._follow_updates, sched, peer, watch)
                    while True:
                        now = trio.current_time()
                        for request in sched.next_requests(peer, now):
                            requests.start_soon(self._request, sched, conn, request)
                        resting = sched.busy_until(peer)
                        with trio.move_on_at(resting if resting > now else math.inf):
                            await self._changed.wait()
            except (P2PStoreError, OSError, trio.TooSlowError) as exc:
                # OSError only escapes from the dial: store errors are P2PStoreErrors or fatal.
                log.info("peer %s failed: %s", provider.label, failure_reason(exc))
            finally:
                del self._peer_scopes[peer]
                if watch is not None:
                    with trio.CancelScope(shield=True):
                        await watch.aclose()
                if added and self._sched is not None:
                    self._apply(self._sched.peer_failed(peer, trio.current_time()))

    async def _follow_updates(
        self, sched: DownloadScheduler, peer: Hashable, watch: WatchHandle
    ) -> None:
        """Feed a watched peer's HAVE_UPDATEs to the scheduler. A flood (far more indices than
        the file has chunks) or an index out of range is that peer's ``ProtocolError``."""
        budget = 2 * self._chunk_count + UPDATE_FLOOD_SLACK
        try:
            while True:
                indices = await watch.next_update()
                budget -= len(indices)
                if budget < 0:
                    raise ProtocolError(f"{self._label(peer)} floods HAVE_UPDATEs")
                self._updates_seen += 1
                if sched.add_peer(peer, indices, trio.current_time()):
                    self._notify()
        except P2PStoreError as exc:
            # The channel ended or the peer misbehaved: end that peer's worker, as a request does.
            log.info("peer %s failed: %s", self._label(peer), exc)
            peer_scope = self._peer_scopes.get(peer)
            if peer_scope is not None:
                peer_scope.cancel()

    def _alive(self, peer: Hashable, now: float) -> None:
        """``peer`` just showed it is alive: its requests' deadlines restart from now (never
        beyond ``max_request_wait`` from each request's start), and it is not stalling."""
        self._last_alive[peer] = now
        for timer, started in self._timers.get(peer, {}).values():
            extended = min(now + self.config.chunk_timeout, started + self.config.max_request_wait)
            if extended > timer.deadline:
                timer.deadline = extended

    async def _request(
        self, sched: DownloadScheduler, conn: PeerConnection, request: ChunkRequest
    ) -> None:
        key = (request.peer, request.index)
        started = trio.current_time()
        timer = trio.CancelScope(deadline=started + self.config.chunk_timeout)
        timers = self._timers.setdefault(request.peer, {})
        with trio.CancelScope() as scope:
            self._request_scopes[key] = scope
            timers[request.index] = (timer, started)
            data: bytes | None = None
            try:
                with timer:
                    data = await self._fetch_or_none(conn, request.chunk_id)
            except trio.TooSlowError:
                timer.cancel()
            except PeerBusyError as busy:
                now = trio.current_time()
                self._alive(request.peer, now)
                self._apply(sched.request_busy(request.peer, request.index, busy.retry_after, now))
                return
            except CorruptChunkError:
                self.telemetry.chunk_corrupt()
                self._apply(sched.chunk_corrupt(request.peer, request.index, trio.current_time()))
                return
            except P2PStoreError as exc:
                # The channel closed, the peer refused, the pool dropped it: that peer's problem,
                # so end that peer's worker (its requests are re-queued), never the download.
                log.info("peer %s failed: %s", self._label(request.peer), exc)
                peer_scope = self._peer_scopes.get(request.peer)
                if peer_scope is not None:
                    peer_scope.cancel()
                return
            finally:
                if self._request_scopes.get(key) is scope:
                    del self._request_scopes[key]
                if timers.get(request.index, (None,))[0] is timer:
                    del timers[request.index]
            if timer.cancelled_caught or timer.cancel_called:
                self._apply(
                    sched.request_timed_out(request.peer, request.index, trio.current_time())
                )
                return
            self._alive(request.peer, trio.current_time())
            if data is None:
                self._apply(sched.chunk_missing(request.peer, request.index, trio.current_time()))
                return
            if len(data) != request.size:
                # It hashes to the ID the manifest names, so every peer would send these bytes:
                # the manifest contradicts itself, and no file can be rebuilt from it.
                self._failure = self._failure or ManifestError(
                    f"manifest is inconsistent: chunk {request.chunk_id.hex()} (stripe "
                    f"{request.stripe}, position {request.share}) is {len(data)} bytes, "
                    f"its layout says {request.size}"
                )
                self._finished.set()
                return
            await self._pay_download(request.peer, len(data))  # the node's download limit
            self.telemetry.chunk_fetched(len(data))
            if self._first_chunk_at is None:
                self._first_chunk_at = trio.current_time()
            if sched.wanted(request.index):
                # Queued for the writer (waiting here, slot held, only while the queue is full),
                # then the scheduler frees the slot: the stripe's completion waits for the store.
                assert self._store_queue is not None
                self._unstored[request.stripe] = self._unstored.get(request.stripe, 0) + 1
                try:
                    await self._store_queue.send(_Received(request, data))
                except BaseException:
                    self._settled(request.stripe)  # not queued after all (cancelled)
                    raise
            self._apply(
                sched.chunk_received(request.peer, request.index, len(data), trio.current_time())
            )

    async def _store_received(self, queued: trio.MemoryReceiveChannel[_Received]) -> None:
        """The writer: each queued chunk into the output, then into the store (for resume and
        for serving), up to ``STORE_BATCH_CHUNKS`` at a time; then the stripes that were waiting
        for them are rebuilt and ``on_stored`` hears of the new chunks. Ends when the queue is
        closed and empty."""
        assert self._output is not None
        async with queued:
            async for first in queued:
                batch = [first]
                while len(batch) < STORE_BATCH_CHUNKS:
                    try:
                        batch.append(queued.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                for item in batch:
                    await self._output.write_chunk(
                        item.request.stripe, item.request.share, item.data
                    )
                # file_id pins the chunks as held, so a gc during the download cannot take them;
                # verified: conn.get checked each chunk's SHA-256 against its ID.
                stored = await self.store.put_chunks(
                    [(item.request.chunk_id, item.data) for item in batch],
                    file_id=self._hold_for,
                    verified=True,
                )
                for item, new in zip(batch, stored, strict=True):
                    self._settled(item.request.stripe)
                    if new and self.on_stored is not None:
                        self.on_stored(item.request.peer, item.request.index)

    def _settled(self, stripe: int) -> None:
        """One chunk of ``stripe`` counted in ``_unstored`` is stored (or was never queued);
        rebuild the stripe if it is done and this was the last one it waited for."""
        left = self._unstored[stripe] - 1
        if left:
            self._unstored[stripe] = left
            return
        del self._unstored[stripe]
        if stripe in self._complete_when_stored:
            self._complete_when_stored.discard(stripe)
            self._complete_stripe(stripe)

    async def _pay_download(self, peer: Hashable, nbytes: int) -> None:
        """The download rate limit (:attr:`rate_limiter`): wait until ``nbytes`` just received
        may be used. The request's slot stays taken meanwhile, so the peer's pipeline refills
        only at the limit's pace; the wait is ours, so the peer counts as alive after it."""
        if self.rate_limiter is None:
            return
        await self.rate_limiter.acquire(nbytes)
        self._alive(peer, trio.current_time())

    async def _fetch_or_none(self, conn: PeerConnection, chunk_id: bytes) -> bytes | None:
        ((_, data),) = await conn.get([chunk_id], patience=self.config.max_request_wait)
        return data

    async def _refresh_providers(self, nursery: trio.Nursery) -> None:
        """Every ``refresh_interval``, look the providers up again and start on the new ones:
        other downloaders announce themselves as soon as they hold chunks."""
        # The first look-ups come sooner: the rest of a crowd announces itself within a second.
        interval = min(1.0, self.config.refresh_interval)
        while True:
            await trio.sleep(interval)
            fresh: list[Provider] = []
            retried: list[Provider] = []
            try:
                with trio.move_on_after(self.config.refresh_interval * 5):
                    fresh, retried = await self._discover()
            except P2PStoreError as exc:
                log.info("provider look-up failed: %s", exc)
            for provider in (*fresh, *retried):
                nursery.start_soon(self._peer_worker, provider)
            interval = next_refresh_interval(interval, bool(fresh), self.config)

    async def _watch_availability(self, sched: DownloadScheduler, nursery: trio.Nursery) -> None:
        """While some stripe is unreachable, look for new providers; give up after a few tries.

        A look-up counts as fruitless only while no peer is still being set up and no peer's
        holdings grew since the last one (HAVE_UPDATE), so slow handshakes and a swarm still
        spreading its chunks are not mistaken for absent providers.
        """
        fruitless = 0
        updates = self._updates_seen
        while True:
            await trio.sleep(self.config.rediscover_interval)
            if not sched.wants_more_peers():
                fruitless = 0
                continue
            fresh: list[Provider] = []
            retried: list[Provider] = []
            try:
                with trio.move_on_after(self.config.rediscover_interval * 5):
                    fresh, retried = await self._discover()
            except P2PStoreError as exc:
                log.info("provider look-up failed: %s", exc)
            for provider in (*fresh, *retried):
                nursery.start_soon(self._peer_worker, provider)
            # Only never-seen providers (or set-ups still running) reset the give-up count, so
            # a stale record of a departed node cannot keep a hopeless download alive.
            if fresh or self._setups_pending or self._updates_seen != updates:
                updates = self._updates_seen
                fruitless = 0
                continue
            fruitless += 1
            if fruitless >= self.config.rediscover_attempts and sched.wants_more_peers():
                self._failure = self._unavailable_error(sched)
                self._finished.set()
                return

    async def _check_slow_peers(self, sched: DownloadScheduler) -> None:
        while True:
            await trio.sleep(self.config.slow_check_interval)
            self._apply(sched.check_slow_peers(trio.current_time()))
            self._cut_off_stalled(sched, trio.current_time())

    def _cut_off_stalled(self, sched: DownloadScheduler, now: float) -> None:
        """End the worker of every peer whose requests have delivered nothing for
        ``stall_floor`` seconds (plus a chunk's time at ``STALL_MIN_RATE``) while some other
        peer is not stalling; it is not tried again in this download. (The
        scheduler's rate check compares with the median, which is 0 when most peers stall: 50
        stalling identities then kept their requests for 3 chunk timeouts each.) Its in-flight
        chunks are re-queued by ``peer_failed``."""
        chunk = self._chunk_size
        # Once some peer has been caught stalling, the download is under attack (or among many
        # dead peers): the chunks it held go to other peers, often more of the same, so those
        # get a quarter of the floor. Otherwise every wave of stallers costs a full floor.
        base = self.config.stall_floor / (STALL_PROBATION_DIVISOR if self._stalled else 1)
        floor = base + chunk / STALL_MIN_RATE
        # A fair-sharing peer may keep an admitted request queued up to its BUSY threshold
        # before it starts sending (a crowd shares its uplink): that is waiting, not stalling.
        fair_floor = self.config.stall_floor + DEFAULT_BUSY_AFTER + chunk / STALL_MIN_RATE
        per_peer = sched.progress(now).per_peer
        stalled: list[Hashable] = []
        for peer in sched.peers():
            got = per_peer[peer].bytes if peer in per_peer else 0
            seen = self._stall_clock.get(peer)
            alive = self._last_alive.get(peer)
            if (
                seen is None
                or seen[0] != got
                or not sched.in_flight(peer)
                or (alive is not None and alive > seen[1])
            ):
                # New, delivering, idle, or alive (a BUSY from a fair-sharing peer whose uplink
                # a crowd shares is queueing, not stalling): not stalling.
                self._stall_clock[peer] = (got, now)
            elif now - seen[1] >= (
                fair_floor if peer in self._fair_share_peers else floor
            ) and not sched.is_sole_provider(peer):
                # (The only holder of chunks some stripe needs is never cut off: slow at worst.)
                stalled.append(peer)
        # Only if some other peer is not stalling (delivering, idle, or just added): if every
        # peer is stuck it may be the network (or this node), and the chunk timeouts deal with it.
        if not stalled or all(p in stalled for p in sched.peers()):
            return
        for peer in stalled:
            scope = self._peer_scopes.get(peer)
            if scope is None or peer in self._stalled:
                continue
            self._stalled.add(peer)
            self._peer_faults[peer] = "stalled"
            log.info(
                "dropping peer %s: stalled (no chunk for %.1f s with %d request(s) in flight)",
                self._label(peer),
                floor,
                len(sched.in_flight(peer)),
            )
            scope.cancel()

    def _unavailable_error(self, sched: DownloadScheduler) -> FileUnavailableError:
        """The scheduler's unreachable-stripes error, plus why the peers that left were dropped
        (``3 peer(s) dropped: corrupt: 2 (a:1, b:2), stalled: 1 (c:3)``): a failure says why."""
        error = sched.unavailable_error()
        if not self._peer_faults:
            return error
        by_reason: dict[str, list[str]] = {}
        for peer, reason in self._peer_faults.items():
            by_reason.setdefault(reason, []).append(self._label(peer))
        parts = [
            f"{reason}: {len(labels)} ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})"
            for reason, labels in sorted(by_reason.items(), key=lambda item: -len(item[1]))
        ]
        return FileUnavailableError(
            f"{error}; {len(self._peer_faults)} peer(s) dropped: {', '.join(parts)}", error.missing
        )

    async def _report_progress(self, sched: DownloadScheduler) -> None:
        while True:
            self._report(sched.progress(trio.current_time()))
            await trio.sleep(self.config.progress_interval)

    def _report(self, progress: Progress) -> None:
        if self.progress_callback is not None:
            labels = {peer: self._label(peer) for peer in progress.per_peer}
            self.progress_callback(progress, labels)

    def _label(self, peer: Hashable) -> str:
        provider = self._providers.get(peer) if isinstance(peer, bytes) else None
        return provider.label if provider is not None else str(peer)


__all__ = [
    "Download",
    "DownloadConfig",
    "DownloadOutcome",
    "LocalChunks",
    "Provider",
    "SinkFactory",
    "StripeSink",
    "bitmap_indices",
    "failure_reason",
    "stripe_specs",
]
