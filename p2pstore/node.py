"""The node: one Trio nursery that owns a store, a DHT service, a chunk server and background work.

:func:`open_node` is the way in::

    async with p2pstore.open_node(data_dir, host="127.0.0.1", udp_port=0, tcp_port=0,
                                  bootstrap=[("127.0.0.1", 8468)]) as node:
        file_id = await node.put(path, disperse=True)
        await node.get(file_id, dest)

Everything the node starts runs in the nursery of that ``async with``; leaving it (normally, by an
exception or by cancellation) cancels transfers, saves the routing table and closes the store.

How a node is found over TCP: besides the provider records of the files it holds, every node
announces a provider record for its **own node ID** (a "node record"), so any node can turn a
DHT contact into a TCP address with one provider look-up. Announcements that reached fewer than
``k`` nodes are repeated, with backoff, when the routing table grows (the first node of a network
announces into an empty table).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from ._groups import collapse_exception_groups
from .chunking import DEFAULT_CHUNK_SIZE
from .datadir import prepare_data_dir
from .dht import Contact, DhtConfig, DhtService, ProviderRecord, open_dht
from .directories import (
    DirectoryGetResult,
    DirectoryPutProgress,
    DirectoryPutResult,
    TreeAction,
    TreeHealth,
    check_tree,
    fetch_listing,
    get_directory,
    get_file_or_directory,
    local_trees,
    pin_tree,
    put_directory,
    tree_listing,
    unpin_tree,
)
from .directory import DirectoryListing
from .errors import (
    BootstrapError,
    ChunkNotFoundError,
    ConfigError,
    CorruptChunkError,
    FileUnavailableError,
    ManifestError,
    NoSuchTransferError,
    NotDispersedError,
    P2PStoreError,
    TransferCancelledError,
    UnknownFileError,
)
from .identity import Identity
from .manifest import Manifest, ManifestRoot
from .peerhint import HintedProviders
from .ratelimit import RateLimiter
from .repair import (
    DEFAULT_REPAIR_INTERVAL,
    FileHealth,
    RepairTimer,
    Verdict,
    default_threshold,
    stripes_to_repair,
)
from .store import ChunkStore, StoredFile, VerifyReport
from .telemetry import CountingServerStore, Telemetry
from .transfer.disperse import DispersalConfig, DispersalReport, disperse
from .transfer.download import Download, DownloadConfig, FindProviders, Provider, SinkFactory
from .transfer.output import LocalChunksLostError, remove_dead_parts
from .transfer.progress import Progress
from .transfer.repairer import RepairConfig, Repairer, RepairReport, Survey, survey
from .transfer.superseed import SuperSeeder
from .treerefs import TreeRefs, tree_operation
from .wire.client import ConnectionPool
from .wire.config import WireConfig
from .wire.holdings import HoldingsHub
from .wire.server import ChunkServer
from .wire.uploads import UploadGate

log = logging.getLogger(__name__)

#: Default UDP port of the DHT, as in the design this project replaces.
DEFAULT_UDP_PORT = 8468
#: Default TCP port of the chunk server, as in the design this project replaces.
DEFAULT_TCP_PORT = 9000
#: Seconds between checks for under-replicated announcements.
REANNOUNCE_CHECK_INTERVAL = 2.0
#: The longest wait between two attempts to re-announce an under-replicated key.
REANNOUNCE_MAX_BACKOFF = 300.0
#: Announcements run at most this many at once (each is a DHT look-up plus k stores).
ANNOUNCE_CONCURRENCY = 8
#: Background announcements (after a get, a deferred put's, re-announcements, those at start)
#: start at most this many per second after a burst of BACKGROUND_ANNOUNCE_BURST: each makes a
#: few DHT requests to the nodes closest to its key, and a DHT node drops an address's requests
#: beyond 50/s after a burst of 200 (DhtConfig.rate_limit_*), then evicts it from its table. A
#: tree of many files must not be announced in one burst (measured: benchmarks/bench_tree.py).
BACKGROUND_ANNOUNCE_RATE = 10.0
BACKGROUND_ANNOUNCE_BURST = 20
#: Manifest roots checked for adoption at once, and the most waiting (more PUTs are not checked).
ADOPT_CONCURRENCY = 4
MAX_PENDING_ADOPTIONS = 64
#: Times a get plans again after chunks its own store claimed to hold were found damaged (each
#: round quarantines what it found, so the next one fetches those from the network).
LOCAL_DAMAGE_RETRIES = 4
#: Token-bucket burst of the upload limiter, in seconds of the configured rate (at least a chunk).
UPLOAD_BURST_SECONDS = 0.25
#: Reciprocity: a peer that sent this node chunks of a download within the last this many
#: seconds gets this many times the upload share of others when the uplink is saturated.
RECIPROCITY_WINDOW = 10.0
RECIPROCITY_WEIGHT = 2.0


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node can be told; every field has a sensible default.

    ``upload_limit`` caps the bytes per second this node's chunk server sends in answer to GETs,
    shared by all its connections (``None``: unlimited); ``download_limit`` the bytes per second
    all its downloads receive together (gets, streamed reads, gateway reads). ``quota_bytes``
    caps the store's total size as far as chunks pushed by other nodes are concerned: a PUT
    that would take the store over it is refused (the user's own puts and downloads are never
    refused). ``chunk_size``, ``k`` and ``m`` are the defaults for ``put``.

    ``repair_interval``: seconds between two health checks of each pinned file this node
    holds (jittered; ``None`` turns automatic repair off). A stripe is repaired once it is down
    to ``k + repair_threshold`` shares or fewer (``None``: the file's
    :func:`~p2pstore.repair.default_threshold`, ``ceil(m / 2)``). See ``docs/protocol.md``,
    "Health checks and repair".
    """

    host: str = "127.0.0.1"
    udp_port: int = DEFAULT_UDP_PORT
    tcp_port: int = DEFAULT_TCP_PORT
    bootstrap: tuple[tuple[str, int], ...] = ()
    upload_limit: float | None = None
    download_limit: float | None = None
    quota_bytes: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    k: int = 4
    m: int = 2
    dht: DhtConfig = field(default_factory=DhtConfig)
    wire: WireConfig = field(default_factory=WireConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    dispersal: DispersalConfig = field(default_factory=DispersalConfig)
    repair_interval: float | None = DEFAULT_REPAIR_INTERVAL
    repair_threshold: int | None = None
    repair: RepairConfig = field(default_factory=RepairConfig)

    def __post_init__(self) -> None:
        for label, port in (("udp_port", self.udp_port), ("tcp_port", self.tcp_port)):
            if not 0 <= port <= 0xFFFF:
                raise ConfigError(f"{label} must be in 0..65535, not {port}")
        if self.upload_limit is not None and self.upload_limit <= 0:
            raise ConfigError("upload_limit must be positive (or None for unlimited)")
        if self.download_limit is not None and not (
            self.download_limit > 0 and math.isfinite(self.download_limit)
        ):
            raise ConfigError("download_limit must be positive (or None for unlimited)")
        if self.quota_bytes is not None and self.quota_bytes < 0:
            raise ConfigError("quota_bytes must be >= 0 (or None for unlimited)")
        if self.repair_interval is not None and not (
            self.repair_interval > 0 and math.isfinite(self.repair_interval)
        ):
            raise ConfigError("repair_interval must be a positive number of seconds (or None)")
        if self.repair_threshold is not None and self.repair_threshold < 0:
            raise ConfigError("repair_threshold must be >= 0 (or None for the default)")


@dataclass(frozen=True)
class PutProgress:
    """Where a put is: ``phase`` is ``"store"``, ``"publish"`` or ``"disperse"``."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class PhaseProgress:
    """Where a verify or a repair is: its ``phase``, and ``done`` of ``total`` in ``unit``
    (``"bytes"``, ``"stripes"``; ``total`` 0 and ``unit`` empty while a phase has no count)."""

    phase: str
    done: int
    total: int
    unit: str


@dataclass(frozen=True)
class PeerProgress:
    """Verified bytes received from one peer in a download, and its current rate (bytes/s)."""

    bytes: int
    rate: float


@dataclass(frozen=True)
class DownloadProgress:
    """A download's progress: file bytes done of the total, and per-peer figures by label."""

    bytes_done: int
    bytes_total: int
    peers: dict[str, PeerProgress]


@dataclass(frozen=True)
class GetResult:
    """A finished download: where the file is and which peers it came from."""

    file_id: bytes
    path: Path
    size: int
    bytes_from_peers: dict[str, int]
    seconds: float
    resumed_chunks: int
    first_chunk_seconds: float | None


@dataclass
class Transfer:
    """An active put or get, for ``status``."""

    kind: str
    file_id: bytes | None
    name: str
    bytes_done: int = 0
    bytes_total: int = 0
    peers: int = 0
    started: float = field(default_factory=time.time)
    peer_rates: dict[str, float] = field(default_factory=dict)
    """Current receive rate (bytes/s) from each active peer of a download, by ``host:port``."""
    id: int = 0
    """The node's number for it while it runs (``p2pstore cancel ID``); never reused."""
    phase: str = ""
    """What a multi-phase transfer (verify, repair) is doing now; empty otherwise."""


@dataclass(frozen=True)
class StreamResult:
    """A file sent in order by :meth:`Node.stream_file`."""

    file_id: bytes
    name: str
    size: int
    bytes_sent: int
    seconds: float
    local: bool
    """Read from a complete local copy, without a download."""


_CANCEL_SCOPE: contextvars.ContextVar[tuple[trio.CancelScope, object] | None] = (
    contextvars.ContextVar("p2pstore_transfer_cancel_scope", default=None)
)
"""The scope :meth:`Node.cancel_transfer` cancels for transfers begun in this context, and the
task that entered it (see :func:`_cancel_scope`)."""


def _cancel_scope() -> trio.CancelScope | None:
    """The :meth:`Node.cancellable` scope of the current task, if it is in one. Tasks inherit
    context variables from the task that started them, so a background task started during an
    operation would otherwise see that operation's scope (long exited, perhaps)."""
    entry = _CANCEL_SCOPE.get()
    if entry is None or entry[1] is not trio.lowlevel.current_task():
        return None
    return entry[0]


@dataclass(frozen=True)
class NodeStatus:
    """A snapshot of a node for ``p2pstore status``."""

    node_id: bytes
    udp: tuple[str, int]
    tcp: tuple[str, int]
    routing_table_size: int
    peers: int
    stored_bytes: int
    files: int
    transfers: list[Transfer]


@dataclass
class _Announcement:
    acked: int
    table_size: int
    next_try: float
    backoff: float


class Node:
    """A running node; obtain one from :func:`open_node`, never construct it directly.

    Its methods may be called concurrently from many tasks. Every method that touches the network
    has deadlines; cancelling one stops that operation only.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        identity: Identity,
        config: NodeConfig,
        store: ChunkStore,
        dht: DhtService,
        pool: ConnectionPool,
        nursery: trio.Nursery,
    ) -> None:
        self.data_dir = data_dir
        self.identity = identity
        self.node_id: bytes = identity.node_id
        self.config = config
        self.store = store
        self.dht = dht
        self.pool = pool
        self.udp_address: tuple[str, int] = dht.address
        self.tcp_address: tuple[str, int] = ("", 0)
        self._nursery = nursery
        self._announcements: dict[bytes, _Announcement] = {}
        self._announce_limit = trio.Semaphore(ANNOUNCE_CONCURRENCY)
        self._background_announce = RateLimiter(BACKGROUND_ANNOUNCE_RATE, BACKGROUND_ANNOUNCE_BURST)
        self._adopt_limit = trio.Semaphore(ADOPT_CONCURRENCY)
        self._adopting: set[bytes] = set()
        self._withdrawn: set[bytes] = set()
        self._transfers: dict[int, Transfer] = {}
        self._transfer_scopes: dict[int, trio.CancelScope] = {}  # see cancel_transfer
        self._next_transfer = 0
        self.holdings = HoldingsHub()
        self._downloads: dict[bytes, set[Download]] = {}
        self._sources: dict[bytes, float] = {}
        self._uploads: UploadGate | None = None
        self._download_limiter: RateLimiter | None = None  # config.download_limit
        self._rng = random.Random()
        self._repair_locks: dict[bytes, trio.Lock] = {}
        self.telemetry = Telemetry()
        """Event counters for ``/metrics`` (:mod:`p2pstore.telemetry`)."""
        self.tree_refs = TreeRefs(data_dir)
        """Local directories and files pinned on their own (:mod:`p2pstore.treerefs`)."""
        self.tree_listings: dict[bytes, DirectoryListing] = {}  # decoded local listings

    # ------------------------------------------------------------------ put

    async def put(
        self,
        path: Path,
        *,
        disperse: bool = True,
        name: str | None = None,
        progress: Callable[[PutProgress], None] | None = None,
        announce: bool = True,
    ) -> bytes:
        """Store the file at ``path``, announce it in the DHT and (by default) disperse its shares.

        Returns the file ID. With ``disperse``, the ``n`` shares of each stripe are pushed to
        distinct peers closest to the file ID (as many as exist when fewer than ``n``), each of
        which keeps them and announces itself as a provider; the file then survives this node
        and any ``m`` holders of each stripe leaving. Raises ``OSError`` if the file cannot be
        read and :class:`ConfigError` for bad parameters. Peers that fail during dispersal are
        logged and their shares given to the others (see :attr:`last_dispersal`). If dispersal
        was asked for but no peer could take any share (none found, or every one failed), raises
        :class:`NotDispersedError` *after* the file was stored and announced here: a caller that
        asked for copies elsewhere must not be told it has them (its ``file_id`` names the file).
        ``announce=False``: announce it in the background (paced, see
        :data:`BACKGROUND_ANNOUNCE_RATE`) rather than before returning, as a directory's put
        does for the files of its tree (they are fetched from the directory's providers).
        """
        transfer = self._begin("put", None, Path(path).name)
        try:

            def on_store(done: int, total: int) -> None:
                transfer.bytes_done, transfer.bytes_total = done, total
                if progress is not None:
                    progress(PutProgress("store", done, total))

            manifest = await self.store.put_file(
                Path(path),
                name=name,
                chunk_size=self.config.chunk_size,
                k=self.config.k,
                m=self.config.m,
                progress=on_store,
            )
            self.tree_refs.note_own(manifest.file_id)  # unless a directory's put stored it
            transfer.file_id = manifest.file_id
            if progress is not None:
                progress(PutProgress("publish", 0, 1))
            if announce:
                await self.announce(manifest.file_id)
            else:
                self.announce_soon(manifest.file_id)
            if progress is not None:
                progress(PutProgress("publish", 1, 1))
            if disperse:
                self.last_dispersal = report = await self._disperse(manifest, progress)
                _check_dispersed(manifest, report)
            return manifest.file_id
        finally:
            self._end(transfer)

    last_dispersal: DispersalReport | None = None
    """The report of the most recent dispersal (``None`` before the first)."""

    async def _disperse(
        self, manifest: Manifest, progress: Callable[[PutProgress], None] | None
    ) -> DispersalReport | None:
        targets = await self.dispersal_targets(manifest.file_id, manifest.k + manifest.m)
        if not targets:
            log.warning("no peer to disperse %s to; it is stored here only", manifest.name)
            return None

        def on_push(done: int, total: int) -> None:
            if progress is not None:
                progress(PutProgress("disperse", done, total))

        report = await disperse(
            manifest,
            targets,
            store=self.store,
            pool=self.pool,
            config=self.config.dispersal,
            progress=on_push,
        )
        if report.failed:
            log.warning(
                "dispersal: %d peer(s) failed: %s",
                len(report.failed),
                "; ".join(f"{peer}: {reason}" for peer, reason in report.failed.items()),
            )
        return report

    async def dispersal_targets(self, key: bytes, want: int) -> list[Provider]:
        """Up to ``want`` peers closest to ``key`` whose TCP address is known, closest first."""
        with self.telemetry.timed_lookup("find_node"):
            contacts = [c for c in await self.dht.find_node(key) if c.node_id != self.node_id]
        resolved: dict[bytes, Provider] = {}

        async def resolve(contact: Contact) -> None:
            provider = await self.resolve_peer(contact)
            if provider is not None:
                resolved[contact.node_id] = provider

        async with trio.open_nursery() as nursery:
            for contact in contacts[: max(want * 2, want + 4)]:
                nursery.start_soon(resolve, contact)
        ordered = [resolved[c.node_id] for c in contacts if c.node_id in resolved]
        return ordered[:want]

    async def resolve_peer(self, contact: Contact) -> Provider | None:
        """The TCP address of ``contact`` from its node record, or ``None``.

        Only a record whose IP is the contact's own (proven by its DHT replies) is trusted: the
        node ID inside a provider record is the announcer's claim, so anyone could otherwise
        publish a bogus address for somebody else's node ID.
        """
        for record in await self.dht.find_providers(contact.node_id):
            if record.node_id == contact.node_id and record.host == contact.host:
                return Provider(record.node_id, record.host, record.tcp_port)
        return None

    # ------------------------------------------------------------------ get

    async def get(
        self,
        file_id: bytes,
        dest: Path,
        *,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
        sink: SinkFactory | None = None,
        label: str | None = None,
        find_providers: FindProviders | None = None,
    ) -> GetResult:
        """Download the file ``file_id`` from every provider at once into ``dest``.

        ``dest`` appears only when the whole file is there and verified (temp file + rename);
        an existing file at ``dest`` is replaced (as by ``os.replace``).
        Chunks already in the local store are not fetched again, so a ``get`` that was
        cancelled or failed resumes. Raises :class:`FileUnavailableError` (naming the stripes and
        chunks that cannot be found) when the file cannot be rebuilt from the reachable peers,
        and :class:`ManifestError` if its manifest cannot be obtained intact. Afterwards this node
        announces itself as a provider of the file. Chunks of this node's own store that turn
        out damaged are quarantined and fetched from the network (the download is planned
        again). Temporary files that dead downloads (``kill -9``) left beside ``dest`` are
        removed first. ``peer_hint``: a chunk server (``HOST:PORT``, from a share link) that may
        hold the file, tried beside the DHT's providers (:mod:`p2pstore.peerhint`). ``sink``:
        what writes the file instead of an ordinary output file (a directory listing's bounded
        reader, :mod:`p2pstore.directories`); ``label``: the name :meth:`status` shows for the
        transfer (default: ``dest``'s name). ``find_providers``: the provider look-up to use
        instead of the DHT's (a directory's files are first asked of the directory's providers,
        :class:`p2pstore.directories.TreeProviders`); ``peer_hint`` is then not used.
        """
        if len(file_id) != 32:
            raise ConfigError("a file ID is 32 bytes (64 hex digits)")
        await trio.to_thread.run_sync(_start_download, self.store, Path(dest))
        try:
            for attempt in range(LOCAL_DAMAGE_RETRIES + 1):
                try:
                    return await self._get_once(
                        file_id,
                        dest,
                        progress=progress,
                        peer_hint=peer_hint,
                        sink=sink,
                        label=label,
                        find_providers=find_providers,
                    )
                except LocalChunksLostError as exc:
                    # The bad local chunks are quarantined now: planning again fetches them
                    # from the network (everything verified so far stays stored).
                    if attempt == LOCAL_DAMAGE_RETRIES:
                        raise
                    log.warning("get %s: %s; fetching them from peers", file_id.hex()[:16], exc)
            raise AssertionError("unreachable")
        finally:
            self.store.forget_download(Path(dest))

    async def _get_once(
        self,
        file_id: bytes,
        dest: Path,
        *,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
        sink: SinkFactory | None = None,
        label: str | None = None,
        find_providers: FindProviders | None = None,
    ) -> GetResult:
        """One download attempt of :meth:`get` (which see).

        ``dest`` appears only when the whole file is there and verified (temp file + rename);
        an existing file at ``dest`` is replaced (as by ``os.replace``).
        Chunks already in the local store are not fetched again, so a ``get`` that was
        cancelled or failed resumes. Raises :class:`FileUnavailableError` (naming the stripes and
        chunks that cannot be found) when the file cannot be rebuilt from the reachable peers,
        and :class:`ManifestError` if its manifest cannot be obtained intact. Afterwards this node
        announces itself as a provider of the file.
        """
        if len(file_id) != 32:
            raise ConfigError("a file ID is 32 bytes (64 hex digits)")
        transfer = self._begin("get", file_id, Path(dest).name if label is None else label)
        try:

            def on_progress(p: Progress, labels: dict[Any, str]) -> None:
                transfer.bytes_done, transfer.bytes_total = p.bytes_done, p.bytes_total
                transfer.peers = sum(1 for pp in p.per_peer.values() if pp.active)
                transfer.peer_rates = {
                    labels[x]: pp.rate for x, pp in p.per_peer.items() if pp.active
                }
                if progress is not None:
                    peers = {
                        labels[peer]: PeerProgress(pp.bytes, pp.rate)
                        for peer, pp in p.per_peer.items()
                    }
                    progress(DownloadProgress(p.bytes_done, p.bytes_total, peers))

            download = Download(
                file_id,
                Path(dest),
                store=self.store,
                pool=self.pool,
                find_providers=find_providers or self._file_providers_finder(file_id, peer_hint),
                self_node_id=self.node_id,
                config=self.config.download,
                progress=on_progress,
                listen_port=self.tcp_address[1],
                on_stored=self._stored_hook(file_id),
                telemetry=self.telemetry,
                sink=sink,
            )
            download.rate_limiter = self._download_limiter
            self._downloads.setdefault(file_id, set()).add(download)
            try:
                outcome = await download.run()
            finally:
                self._downloads[file_id].discard(download)
                if not self._downloads[file_id]:
                    del self._downloads[file_id]
        finally:
            self._end(transfer)
        self.tree_refs.note_own(file_id)  # unless a directory's get fetched it
        self._nursery.start_soon(self._announce_quietly, file_id)
        return GetResult(
            file_id=file_id,
            path=Path(dest),
            size=outcome.manifest.size,
            bytes_from_peers=outcome.bytes_from_peers,
            seconds=outcome.seconds,
            resumed_chunks=outcome.resumed_chunks,
            first_chunk_seconds=outcome.first_chunk_seconds,
        )

    # ------------------------------------------------------------------ swarming

    def _stored_hook(self, file_id: bytes) -> Callable[[Any, int], None]:
        """What a download calls for each chunk it stores: tell our watchers, remember who gave
        it (reciprocity), and announce this node a (partial) provider after the first one."""
        announced = False

        def on_stored(peer: Any, index: int) -> None:
            nonlocal announced
            self.holdings.publish(file_id, index)
            if isinstance(peer, bytes):
                self._sources[peer] = trio.current_time()
            if not announced:
                announced = True
                if file_id not in self.dht.providing():
                    self._nursery.start_soon(self._announce_quietly, file_id)

        return on_stored

    def _on_watch(self, peer_id: bytes, host: str, port: int, file_id: bytes) -> None:
        """Server hook: a peer WATCHes ``file_id`` and serves on ``host:port``; every download of
        that file here may fetch from it too (a downloader is a source)."""
        for download in list(self._downloads.get(file_id, ())):
            download.offer_provider(Provider(peer_id, host, port))

    def _upload_weight(self, peer: Any) -> float:
        """Reciprocity: peers that recently gave us chunks get a larger upload share."""
        last = self._sources.get(peer) if isinstance(peer, bytes) else None
        if last is not None and trio.current_time() - last < RECIPROCITY_WINDOW:
            return RECIPROCITY_WEIGHT
        return 1.0

    @property
    def uploaded_bytes(self) -> int | None:
        """Chunk bytes this node's server has sent (granted by its upload limit); ``None``
        without an upload limit (not counted)."""
        if self._uploads is not None:
            return self._uploads.granted_bytes
        return None

    def streaming_download(
        self,
        file_id: bytes,
        *,
        sink: SinkFactory,
        window: tuple[int, int],
        progress: Callable[[Progress, dict[Any, str]], None] | None = None,
        cache_only: bool = False,
        peer_hint: tuple[str, int] | None = None,
    ) -> Download:
        """A sequential-mode :class:`Download` of ``file_id`` wired to this node's store, pool
        and DHT, whose verified stripes go to ``sink`` (the HTTP gateway streams from it).
        ``cache_only``: nothing is pinned, recorded or announced; the chunks are gc-able.
        ``peer_hint``: a share link's chunk server, tried beside the DHT look-up."""
        download = Download(
            file_id,
            self.data_dir,  # unused: the sink replaces the output file
            store=self.store,
            pool=self.pool,
            find_providers=self._file_providers_finder(file_id, peer_hint),
            self_node_id=self.node_id,
            config=self.config.download,
            progress=progress,
            listen_port=self.tcp_address[1],
            on_stored=None if cache_only else self._stored_hook(file_id),
            sink=sink,
            window=window,
            telemetry=self.telemetry,
            cache_only=cache_only,
        )
        download.rate_limiter = self._download_limiter
        return download

    @contextlib.contextmanager
    def tracked_transfer(self, kind: str, file_id: bytes | None, name: str) -> Iterator[Transfer]:
        """Show an operation run outside :meth:`put`/:meth:`get` (a gateway read, an HTTP
        upload) among :meth:`status`'s transfers while the block runs; it is
        :meth:`cancellable` (``TransferCancelledError`` from the ``with``)."""
        with self.cancellable():
            transfer = self._begin(kind, file_id, name)
            try:
                yield transfer
            finally:
                self._end(transfer)

    def _file_providers_finder(
        self, file_id: bytes, peer_hint: tuple[str, int] | None
    ) -> FindProviders:
        """The DHT look-up, with a share link's peer hint tried beside it if there is one."""
        if peer_hint is None:
            return self._find_file_providers
        return HintedProviders(
            self._find_file_providers, self.pool, file_id, peer_hint, self.node_id
        )

    async def _find_file_providers(self, key: bytes, *, quick: bool = False) -> list[Provider]:
        """Providers of ``key`` other than this node; ``quick`` stops at the first reply naming
        any (a download starts on those while the full look-up goes on)."""
        with self.telemetry.timed_lookup("find_providers"):
            records = await self.dht.find_providers(key, limit=1 if quick else None)
        return [
            Provider(r.node_id, r.host, r.tcp_port) for r in records if r.node_id != self.node_id
        ]

    async def find_providers(self, key: bytes) -> list[ProviderRecord]:
        """Who serves ``key`` (a file ID, or a chunk ID some node chose to announce), this node
        first if it provides it itself (the DHT look-up never returns the asking node)."""
        with self.telemetry.timed_lookup("find_providers"):
            records = await self.dht.find_providers(key)
        if key in self.dht.providing():
            host, port = self.tcp_address
            records.insert(0, ProviderRecord(key, self.node_id, host, port))
        return records

    # ------------------------------------------------------------------ announcing

    async def announce(self, key: bytes) -> int:
        """Announce this node as a provider of ``key`` now; the DHT republishes it periodically.

        Returns how many DHT nodes stored the record. If that is fewer than ``k``, the node
        repeats the announcement (with backoff) as its routing table grows.
        """
        async with self._announce_limit:
            acked = await self.dht.announce_provider(key, self.tcp_address[1])
        if key in self._withdrawn:  # unpinned while we were announcing
            self.dht.stop_providing(key)
            return acked
        self._announcements[key] = _Announcement(
            acked=acked,
            table_size=self.dht.routing_table_size(),
            next_try=trio.current_time() + REANNOUNCE_CHECK_INTERVAL,
            backoff=REANNOUNCE_CHECK_INTERVAL,
        )
        return acked

    def announce_soon(self, key: bytes) -> None:
        """Announce ``key`` in the background (failures are logged), as :meth:`get` does after a
        download; for downloads driven elsewhere (the HTTP gateway)."""
        self._nursery.start_soon(self._announce_quietly, key)

    async def _announce_quietly(self, key: bytes) -> None:
        await self._background_announce.acquire(1)  # see BACKGROUND_ANNOUNCE_RATE
        try:
            await self.announce(key)
        except P2PStoreError as exc:
            log.info("announcing %s failed: %s", key.hex()[:16], exc)

    async def _reannounce_loop(self) -> None:
        """Repeat announcements that reached fewer than k nodes once the table has grown."""
        while True:
            await trio.sleep(REANNOUNCE_CHECK_INTERVAL)
            now = trio.current_time()
            size = self.dht.routing_table_size()
            for key, ann in list(self._announcements.items()):
                if ann.acked >= self.config.dht.k or size <= ann.table_size or now < ann.next_try:
                    continue
                backoff = min(ann.backoff * 2, REANNOUNCE_MAX_BACKOFF)
                await self._announce_quietly(key)
                if key in self._announcements:
                    self._announcements[key].backoff = backoff
                    self._announcements[key].next_try = now + backoff

    async def _announce_held_files(self) -> None:
        """At start: the node record, then every file this node holds."""
        await self._announce_quietly(self.node_id)
        async with trio.open_nursery() as nursery:
            for stored in self.store.list_files():
                if stored.chunks_present > 0:
                    nursery.start_soon(self._announce_quietly, stored.file_id)

    # ------------------------------------------------------------------ receiving shares

    def _on_put(self, chunk_id: bytes) -> None:
        """Server hook: a peer pushed a chunk; if it completes a manifest, adopt that file.

        Bounded: at most ``MAX_PENDING_ADOPTIONS`` checks wait at once (a flood of PUTs is
        dropped here, not queued), and a file the store already knows is never adopted again,
        so re-sending a root cannot undo an ``unpin`` or trigger announcements.
        """
        if chunk_id in self._adopting or len(self._adopting) >= MAX_PENDING_ADOPTIONS:
            return
        self._adopting.add(chunk_id)
        self._nursery.start_soon(self._maybe_adopt, chunk_id)

    async def _maybe_adopt(self, chunk_id: bytes) -> None:
        """If ``chunk_id`` is a root manifest whose index chunks are here, keep and announce it."""
        try:
            async with self._adopt_limit:
                if self.store.knows_file(chunk_id):
                    return
                manifest = await self._local_manifest(chunk_id)
                if manifest is None:
                    return
                await self.store.add_manifest(manifest, pin=True)
            log.info(
                "holding shares of %s (%s) for the network", manifest.name, chunk_id.hex()[:16]
            )
            await self._announce_quietly(manifest.file_id)
        except (P2PStoreError, OSError) as exc:
            # A remote PUT led here: whatever goes wrong, it must not take the node down.
            log.warning("could not adopt %s: %s", chunk_id.hex()[:16], exc)
        finally:
            self._adopting.discard(chunk_id)

    async def _local_manifest(self, chunk_id: bytes) -> Manifest | None:
        """The manifest whose root is the stored chunk ``chunk_id``, or ``None`` if that chunk
        is not a root or its index chunks are not all here yet."""
        data = await self.store.get_chunk(chunk_id)
        try:
            root = ManifestRoot.decode(data)
        except ManifestError:
            return None  # an ordinary chunk
        parts: dict[bytes, bytes] = {}
        try:
            while needed := root.needed_chunk_ids(parts):
                for part_id in needed:
                    parts[part_id] = await self.store.get_chunk(part_id)
            return Manifest.from_parts(root, parts)
        except (ChunkNotFoundError, CorruptChunkError, ManifestError) as exc:
            log.info("cannot adopt manifest %s yet: %s", chunk_id.hex()[:16], exc)
            return None

    # ------------------------------------------------------------------ health and repair

    async def check(self, file_id: bytes) -> FileHealth:
        """How many distinct shares of each stripe of ``file_id`` are reachable right now.

        Every provider found in the DHT is asked with ``HAVE`` (16 at once, each within
        ``config.repair.have_timeout``), and so is the local store. Raises
        :class:`FileUnavailableError` if no reachable node (this one included) has the manifest.
        """
        return (await self._survey(file_id)).health

    async def repair(
        self,
        file_id: bytes,
        *,
        threshold: int | None = None,
        progress: Callable[[PhaseProgress], None] | None = None,
    ) -> RepairReport:
        """:meth:`_repair` (which see), listed among the transfers (kind ``repair``) and
        :meth:`cancellable`. ``progress`` gets the phases ``surveying`` (asking the holders) and
        ``rebuilding`` (stripes repaired of those to repair)."""
        with self.tracked_transfer("repair", file_id, file_id.hex()[:16]) as transfer:

            def on_progress(phase: str, done: int, total: int) -> None:
                transfer.phase, transfer.bytes_done, transfer.bytes_total = phase, done, total
                if progress is not None:
                    progress(PhaseProgress(phase, done, total, "stripes" if total else ""))

            on_progress("surveying", 0, 0)
            return await self._repair(file_id, threshold=threshold, on_progress=on_progress)

    async def _repair(
        self,
        file_id: bytes,
        *,
        threshold: int | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> RepairReport:
        """Check ``file_id`` and rebuild the missing shares of its degraded stripes.

        ``threshold`` None repairs every degraded stripe; otherwise only those down to
        ``k + threshold`` shares or fewer (or that many on distinct nodes). Rebuilt shares go to
        live nodes closest to the file ID that hold no share of that stripe (this node
        included), within their quota, and shares piled on one node are copied to such nodes;
        remote PUTs obey ``upload_limit``. Lost stripes cannot be rebuilt and are left as they are.
        One repair of a file runs at a time on a node (a second call waits for the first).
        Raises like :meth:`check`; a peer's failure is reported, never raised.
        """
        async with self._repair_locks.setdefault(file_id, trio.Lock()):
            # The holders' survey and the look-up of possible new holders are independent
            # DHT look-ups: run them at once.
            targets: list[Provider] = []

            async def look_up_targets() -> None:
                try:
                    targets.extend(await self._repair_targets(file_id))
                except P2PStoreError as exc:  # the holders can still take shares
                    log.info("looking up new holders of %s failed: %s", file_id.hex()[:16], exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look_up_targets)
                found = await self._survey(file_id)
            stripes = stripes_to_repair(found.health, threshold)
            if on_progress is not None:
                on_progress("rebuilding", 0, len(stripes))
            return await self._repair_surveyed(found, stripes, targets, on_progress)

    async def _repair_targets(self, key: bytes) -> list[Provider]:
        """The DHT's closest nodes to ``key`` with a known TCP address, closest first.

        Like :meth:`dispersal_targets`, each contact is resolved through its node record (only
        a record from the contact's own IP counts), but each look-up stops at the first record
        found (the node itself usually answers it) and all end within the check's deadline.
        """
        contacts = [c for c in await self.dht.find_node(key) if c.node_id != self.node_id]
        resolved: dict[bytes, Provider] = {}

        async def resolve(contact: Contact) -> None:
            try:
                records = await self.dht.find_providers(contact.node_id, limit=1)
            except P2PStoreError:
                return
            for record in records:
                if record.node_id == contact.node_id and record.host == contact.host:
                    resolved[contact.node_id] = Provider(
                        record.node_id, record.host, record.tcp_port
                    )
                    return

        with trio.move_on_after(self.config.repair.have_timeout):
            async with trio.open_nursery() as nursery:
                for contact in contacts:
                    nursery.start_soon(resolve, contact)
        return [resolved[c.node_id] for c in contacts if c.node_id in resolved]

    async def _survey(self, file_id: bytes) -> Survey:
        if len(file_id) != 32:
            raise ConfigError("a file ID is 32 bytes (64 hex digits)")
        providers = await self._find_file_providers(file_id)
        return await survey(
            file_id,
            providers,
            store=self.store,
            have_bitmap=self.store.have_bitmap,
            pool=self.pool,
            self_id=self.node_id,
            config=self.config.repair,
        )

    async def _repair_surveyed(
        self,
        found: Survey,
        stripes: list[int],
        targets: list[Provider] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> RepairReport:
        if stripes and targets is None:
            targets = await self._repair_targets(found.manifest.file_id)
        repairer = Repairer(
            found,
            targets or [],
            store=self.store,
            pool=self.pool,
            self_id=self.node_id,
            local=True,
            uploads=self._uploads,
            config=self.config.repair,
            rng=self._rng,
        )
        if on_progress is not None:
            repairer.on_stripe_done = lambda done, total: on_progress("rebuilding", done, total)
        report = await repairer.run(stripes)
        file_id = found.manifest.file_id
        if report.held_locally and file_id not in self.dht.providing():
            await self._announce_quietly(file_id)
        if report.placed:
            log.info(
                "repaired %s: %d share(s) rebuilt, %d copied, %d placed; now %s",
                file_id.hex()[:16],
                report.rebuilt,
                report.copied,
                sum(report.placed.values()),
                report.after.verdict.value,
            )
        return report

    async def _repair_loop(self) -> None:
        """Automatic repair: check every pinned file held here every ``repair_interval``
        (jittered) and repair when this node's turn comes (see :class:`RepairTimer`)."""
        interval = self.config.repair_interval
        if interval is None:
            return
        timer = RepairTimer(
            interval,
            self._rng,
            jitter=self.config.repair.jitter,
            step_in=self.config.repair.step_in,
        )
        # New and unpinned files are noticed at least this often.
        sync_every = min(interval, 30.0)
        next_sync = trio.current_time()
        slots = trio.Semaphore(max(1, self.config.repair.check_concurrency))
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                if now >= next_sync:
                    held = {
                        f.file_id for f in self.store.list_files() if f.pinned and f.chunks_present
                    }
                    for file_id in held - timer.tracked():
                        timer.track(file_id, now)
                    for file_id in timer.tracked() - held:
                        timer.untrack(file_id)
                    next_sync = now + sync_every
                for file_id in timer.due(now):
                    await slots.acquire()
                    nursery.start_soon(self._auto_check, timer, file_id, slots)
                due = timer.next_due()
                wake = next_sync if due is None else min(next_sync, due)
                await trio.sleep(max(0.0, wake - trio.current_time()))

    async def _auto_check(self, timer: RepairTimer, file_id: bytes, slots: trio.Semaphore) -> None:
        try:
            try:
                found = await self._survey(file_id)
            except (P2PStoreError, OSError) as exc:
                log.info("health check of %s failed: %s", file_id.hex()[:16], exc)
                timer.skipped(file_id, trio.current_time())
                return
            health = found.health
            threshold = self.config.repair_threshold
            if threshold is None:
                threshold = default_threshold(health.m)
            stripes = timer.observed(health, self.node_id, trio.current_time(), threshold)
            if health.verdict is Verdict.LOST:
                log.warning(
                    "file %s is lost: stripe(s) %s lack shares",
                    file_id.hex()[:16],
                    health.in_state(Verdict.LOST)[:10],
                )
            if not stripes:
                return
            lock = self._repair_locks.setdefault(file_id, trio.Lock())
            if lock.locked():
                return  # a repair of this file is running here already
            async with lock:
                try:
                    await self._repair_surveyed(found, stripes)
                except (P2PStoreError, OSError) as exc:
                    log.warning("repair of %s failed: %s", file_id.hex()[:16], exc)
        finally:
            slots.release()

    # ------------------------------------------------------------------ local management

    def list_files(self) -> list[StoredFile]:
        """Files this node knows (its own and those it holds shares of)."""
        return self.store.list_files()

    def file_info(self, file_id: bytes) -> StoredFile | None:
        """The :meth:`list_files` entry of one file (or ``None``), without listing them all."""
        return self.store.file_info(file_id)

    def pin(self, file_id: bytes) -> None:
        """Keep the file's chunks through ``gc``, and announce it again if it was unpinned.

        Raises :class:`UnknownFileError` for a file this node has no record of."""
        if not self.store.knows_file(file_id):
            raise UnknownFileError(file_id)
        self.store.pin(file_id)
        self.tree_refs.note_own(file_id)
        if file_id in self._withdrawn:
            self._withdrawn.discard(file_id)
            self._nursery.start_soon(self._announce_quietly, file_id)

    def unpin(self, file_id: bytes) -> None:
        """Let ``gc`` reclaim the file's chunks; the node stops announcing it.

        Raises :class:`UnknownFileError` for a file this node has no record of."""
        if not self.store.knows_file(file_id):
            raise UnknownFileError(file_id)
        self.store.unpin(file_id)
        self.tree_refs.drop_own(file_id)
        self._withdrawn.add(file_id)
        self.dht.stop_providing(file_id)
        self._announcements.pop(file_id, None)

    async def gc(self) -> int:
        """Delete chunks no pinned file needs (in a worker thread); returns the bytes freed."""
        freed = await trio.to_thread.run_sync(self.store.gc)
        self.telemetry.gc_done(freed)
        return freed

    async def verify(
        self, *, progress: Callable[[PhaseProgress], None] | None = None
    ) -> VerifyReport:
        """Re-hash every stored chunk; corrupt ones are quarantined and reported.

        Listed among the transfers (kind ``verify``, its phase) and :meth:`cancellable`;
        ``progress`` gets each phase: ``hashing`` in bytes, then ``spares`` and ``rebuilding``."""
        with self.tracked_transfer("verify", None, "all chunks") as transfer:

            def on_progress(phase: str, done: int, total: int) -> None:
                transfer.phase, transfer.bytes_done, transfer.bytes_total = phase, done, total
                if progress is not None:
                    unit = "bytes" if phase == "hashing" else ""
                    progress(PhaseProgress(phase, done, total, unit))

            return await self.store.verify(progress=on_progress)

    def peers(self) -> list[Contact]:
        """The DHT routing table's contacts."""
        return self.dht.contacts()

    def status(self) -> NodeStatus:
        """A snapshot: identity, addresses, table size, stored bytes, files, transfers."""
        contacts = self.dht.contacts()
        return NodeStatus(
            node_id=self.node_id,
            udp=self.udp_address,
            tcp=self.tcp_address,
            routing_table_size=len(contacts),
            peers=len(self.pool),
            stored_bytes=self.store.stored_bytes,
            files=len(self.store.list_files()),
            transfers=list(self._transfers.values()),
        )

    def _begin(self, kind: str, file_id: bytes | None, name: str) -> Transfer:
        transfer = Transfer(kind, file_id, name)
        self._next_transfer += 1
        self._transfers[self._next_transfer] = transfer
        transfer.id = self._next_transfer
        scope = _cancel_scope()
        if scope is not None:
            self._transfer_scopes[transfer.id] = scope
        return transfer

    def _end(self, transfer: Transfer) -> None:
        for key, value in list(self._transfers.items()):
            if value is transfer:
                del self._transfers[key]
                self._transfer_scopes.pop(key, None)

    # ------------------------------------------------------------------ cancel

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[None]:
        """Run the block so that :meth:`cancel_transfer` of a transfer it starts stops it.

        The block is cancelled (Trio cancellation: every wait ends, cleanup runs as for any
        failure) and the ``with`` raises :class:`TransferCancelledError`. Nested blocks share
        the outermost scope (one operation, one cancel)."""
        if _cancel_scope() is not None:
            yield
            return
        with trio.CancelScope() as scope:
            token = _CANCEL_SCOPE.set((scope, trio.lowlevel.current_task()))
            try:
                yield
            finally:
                _CANCEL_SCOPE.reset(token)
        if scope.cancelled_caught:
            raise TransferCancelledError("cancelled (by p2pstore cancel)")

    def cancel_transfer(self, transfer_id: int) -> Transfer:
        """Stop the running transfer numbered ``transfer_id`` (see :attr:`Transfer.id`); its
        caller gets :class:`TransferCancelledError`. Returns the transfer. Raises
        :class:`NoSuchTransferError` if none runs by that number or it cannot be cancelled (an
        automatic repair, or a call made outside :meth:`cancellable`)."""
        transfer = self._transfers.get(transfer_id)
        scope = self._transfer_scopes.get(transfer_id)
        if transfer is None:
            raise NoSuchTransferError(f"no transfer {transfer_id} is running (see: transfers)")
        if scope is None:
            raise NoSuchTransferError(
                f"transfer {transfer_id} ({transfer.kind}) cannot be cancelled"
            )
        scope.cancel()
        return transfer

    # ------------------------------------------------------------------ streaming

    async def stream_file(
        self,
        file_id: bytes,
        send: Callable[[bytes], Awaitable[None]],
        *,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
    ) -> StreamResult:
        """Send the file ``file_id`` to ``send`` in order, while it downloads.

        The HTTP gateway's read (:class:`~p2pstore.http.gateway.FileRead`): a sequential window
        of stripes ahead of the reader is fetched from many peers at once, and only bytes
        verified against their chunk IDs are passed to ``send`` (``send`` waiting is the
        back-pressure: the window moves as it returns). A file complete in the local store is
        read from it. Like gateway reads, the chunks fetched are an unpinned cache (the next
        ``gc`` may free them; ``get`` keeps a file). Raises :class:`FileUnavailableError` when the
        manifest is not found within the gateway's ``MANIFEST_TIMEOUT`` or the file cannot be
        rebuilt (possibly after some bytes were sent), :class:`ManifestError` for a bad manifest.
        ``peer_hint``: as for :meth:`get` (a share link's chunk server, tried beside the DHT).
        """
        from .http.gateway import DEFAULT_WINDOW_STRIPES, MANIFEST_TIMEOUT, FileRead

        if len(file_id) != 32:
            raise ConfigError("a file ID is 32 bytes (64 hex digits)")
        started = trio.current_time()
        read = FileRead(self, file_id, None, DEFAULT_WINDOW_STRIPES, peer_hint=peer_hint)
        await read.check_local()
        with self.tracked_transfer("cat", file_id, file_id.hex()[:16]) as transfer:
            peer_bytes: dict[str, PeerProgress] = {}

            def report() -> None:
                if progress is not None:
                    progress(
                        DownloadProgress(transfer.bytes_done, transfer.bytes_total, peer_bytes)
                    )

            def on_progress(p: Progress, labels: dict[Any, str]) -> None:
                active = {labels[x]: pp.rate for x, pp in p.per_peer.items() if pp.active}
                transfer.peers, transfer.peer_rates = len(active), active
                peer_bytes.clear()
                peer_bytes.update(
                    {labels[x]: PeerProgress(pp.bytes, pp.rate) for x, pp in p.per_peer.items()}
                )
                report()

            async def counted(data: bytes) -> None:
                await send(data)
                transfer.bytes_done += len(data)
                report()

            read.download.progress_callback = on_progress
            with collapse_exception_groups():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read.run_download)
                    try:
                        with trio.fail_after(MANIFEST_TIMEOUT):
                            manifest = await read.wait_manifest()
                    except trio.TooSlowError:
                        raise FileUnavailableError(
                            f"the manifest of {file_id.hex()} was not found in time"
                        ) from None
                    if read.too_large:
                        raise ConfigError(
                            f"this file's stripes ({manifest.layout.stripe_bytes} bytes) exceed"
                            f" the streaming read budget ({read.budget.total} bytes); use get"
                        )
                    transfer.name, transfer.bytes_total = manifest.name, manifest.size
                    report()
                    sent = await read.stream(counted)
                    nursery.cancel_scope.cancel()
        return StreamResult(
            file_id=file_id,
            name=manifest.name,
            size=manifest.size,
            bytes_sent=sent,
            seconds=trio.current_time() - started,
            local=read.was_local,
        )

    # ------------------------------------------------------------------ directories

    async def put_directory(
        self,
        path: Path,
        *,
        disperse: bool = True,
        name: str | None = None,
        progress: Callable[[DirectoryPutProgress], None] | None = None,
    ) -> DirectoryPutResult:
        """Store the tree at ``path``: every regular file as by :meth:`put` (a few at once),
        then its directory manifest (:mod:`p2pstore.directory`) as one more ordinary file,
        whose file ID is the directory's ID (``result.file_id``).

        Empty directories and symlinks that stay inside the tree are kept; other symlinks,
        special files and invalid names are skipped and listed in ``result.skipped``. Only
        permission bits are kept. Raises :class:`ConfigError` for a tree larger than a
        directory manifest holds and ``OSError`` if it cannot be read. A file that could not
        be dispersed does not stop the put: ``result.not_dispersed`` says so.
        """
        with tree_operation():
            return await put_directory(self, path, disperse=disperse, name=name, progress=progress)

    async def fetch_listing(
        self,
        dir_id: bytes,
        *,
        peer_hint: tuple[str, int] | None = None,
        progress: Callable[[DownloadProgress], None] | None = None,
        label: str | None = None,
    ) -> DirectoryListing:
        """The directory manifest ``dir_id`` (fetched and pinned like a file; none of the
        tree's files). Raises :class:`~p2pstore.directories.NotADirectoryListingError` if
        ``dir_id`` is an ordinary file (a large one is refused from its manifest alone, before
        any of its content is fetched) and :class:`~p2pstore.directory.DirectoryError` for a
        malformed or unsafe listing. It is fetched as by :meth:`get` (a transfer with progress,
        cancellable, under the download limit); ``peer_hint``, ``progress``, ``label``: as
        there."""
        with tree_operation():
            return await fetch_listing(
                self, dir_id, peer_hint=peer_hint, progress=progress, label=label
            )

    async def get_directory(
        self,
        dir_id: bytes,
        dest: Path,
        *,
        listing: DirectoryListing | None = None,
        progress: Callable[[DownloadProgress], None] | None = None,
        peer_hint: tuple[str, int] | None = None,
    ) -> DirectoryGetResult:
        """Download the directory ``dir_id`` (or the already fetched ``listing``) to ``dest``,
        which must not exist (``FileExistsError``).

        The listing is validated in full before anything is written (see
        :meth:`fetch_listing`); the tree is built in a temporary directory beside ``dest``
        whose files are downloaded as by :meth:`get` (a few at once) and renamed to ``dest``
        only once every file is there and verified. On failure or cancellation the temporary
        tree is removed; the chunks fetched stay in the store, so a new get resumes.
        ``peer_hint``: as for :meth:`get`, for the listing and every file of the tree.
        """
        with tree_operation():
            return await get_directory(
                self, dir_id, dest, listing=listing, progress=progress, peer_hint=peer_hint
            )

    async def get_file_or_directory(
        self,
        file_id: bytes,
        target_for: Callable[[str], Path],
        *,
        peer_hint: tuple[str, int] | None = None,
        progress: Callable[[DownloadProgress], None] | None = None,
        label: str | None = None,
    ) -> GetResult | DirectoryGetResult:
        """``get`` of an ID that may be a file or a directory, downloaded once: the file (as by
        :meth:`get`) or the tree (as by :meth:`get_directory`) goes to ``target_for(name)``,
        ``name`` being the manifest's (the listing's for a tree). An existing target is
        refused (``FileExistsError``) once the manifest is in, before any chunk is fetched.
        See :func:`p2pstore.directories.get_file_or_directory`."""
        return await get_file_or_directory(
            self, file_id, target_for, peer_hint=peer_hint, progress=progress, label=label
        )

    async def local_directory(self, file_id: bytes) -> DirectoryListing | None:
        """The listing of ``file_id`` if it is a directory stored here (complete), else
        ``None``: an ordinary file, or one not stored here. Reads only the local store."""
        return await tree_listing(self, file_id)

    async def directory_ids(self) -> set[bytes]:
        """IDs of the directories whose listing is stored here (for ``ls`` to mark)."""
        return await local_trees(self)

    async def pin_directory(self, dir_id: bytes) -> TreeAction | None:
        """Pin the directory ``dir_id`` and every file of its tree stored here; ``None`` if
        it is not a directory stored here (then :meth:`pin` is what applies)."""
        listing = await tree_listing(self, dir_id)
        return None if listing is None else await pin_tree(self, dir_id, listing)

    async def unpin_directory(self, dir_id: bytes) -> TreeAction | None:
        """Unpin the directory ``dir_id`` and the files of its tree nothing else holds (no
        other pinned directory lists them, they were not pinned on their own: see
        :mod:`p2pstore.treerefs`); ``None`` if it is not a directory stored here."""
        listing = await tree_listing(self, dir_id)
        return None if listing is None else await unpin_tree(self, dir_id, listing)

    async def check_directory(self, dir_id: bytes, *, repair: bool = False) -> TreeHealth | None:
        """:meth:`check` (with ``repair``, :meth:`repair`) of the directory's listing and every
        file of its tree; ``None`` if it is not a directory stored here."""
        listing = await tree_listing(self, dir_id)
        if listing is None:
            return None
        return await check_tree(self, dir_id, listing, repair=repair)


def _start_download(store: ChunkStore, dest: Path) -> None:
    """Before a download into ``dest``: remove temporary files dead downloads left beside it
    (what they held is in the store, which the new download resumes from), and note it."""
    for path in remove_dead_parts(dest):
        log.info("removed %s, left by a download that did not finish", path)
    store.note_download(dest)


def _remove_dead_downloads(store: ChunkStore) -> None:
    """At start: the temporary files of downloads the last run did not finish (``kill -9``)."""
    for dest in store.pending_downloads():
        for path in remove_dead_parts(dest):
            log.info("removed %s, left by a download that did not finish", path)
        store.forget_download(dest)


def _check_dispersed(manifest: Manifest, report: DispersalReport | None) -> None:
    """Raise :class:`NotDispersedError` unless some peer now holds shares of the file."""
    if report is None:
        raise NotDispersedError(manifest.file_id, "no peer to disperse to was found")
    if not report.holders:
        reasons = "; ".join(f"{label}: {why}" for label, why in list(report.failed.items())[:3])
        raise NotDispersedError(
            manifest.file_id, f"every peer failed ({len(report.failed)}): {reasons}"
        )


def _normalise_bootstrap(value: Iterable[Sequence[Any]]) -> tuple[tuple[str, int], ...]:
    out = []
    for entry in value:
        host, port = entry
        out.append((str(host), int(port)))
    return tuple(out)


@asynccontextmanager
async def open_node(
    data_dir: Path | str,
    config: NodeConfig | None = None,
    **overrides: Any,
) -> AsyncIterator[Node]:
    """Run a node in ``data_dir`` for the duration of the ``async with`` block.

    ``overrides`` are :class:`NodeConfig` fields (``host``, ``udp_port``, ``tcp_port``,
    ``bootstrap``, ``upload_limit``...) applied on top of ``config``. On entry the store is
    opened, the DHT and the chunk server listen, and the node joins the network through
    ``bootstrap`` or the contacts saved by its last run. Raises :class:`ConfigError` when a port
    is in use or the data directory is unusable, and :class:`BootstrapError` when bootstrap
    addresses were given and none answered. On exit (or cancellation) every transfer is
    cancelled, the routing table saved and the store closed.
    """
    if "bootstrap" in overrides:
        overrides["bootstrap"] = _normalise_bootstrap(overrides["bootstrap"])
    config = replace(config or NodeConfig(), **overrides)
    data_dir = Path(data_dir)
    prepare_data_dir(data_dir)  # created 0700; refused if another user could control it
    try:
        identity = Identity.load_or_create(data_dir)
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {data_dir}: {exc.strerror or exc}") from exc
    store = ChunkStore.open(data_dir, quota_bytes=config.quota_bytes)
    try:
        await trio.to_thread.run_sync(_remove_dead_downloads, store)
    except BaseException:
        store.close()
        raise
    # Callers get the documented exceptions (ConfigError, BootstrapError, their own errors from
    # the block), not ExceptionGroups from the node's nursery.
    with collapse_exception_groups():
        async with _running_node(data_dir, config, identity, store) as node:
            yield node


@asynccontextmanager
async def _running_node(
    data_dir: Path, config: NodeConfig, identity: Identity, store: ChunkStore
) -> AsyncIterator[Node]:
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(store.close)
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            dht = await stack.enter_async_context(
                open_dht(
                    identity, config.host, config.udp_port, config=config.dht, data_dir=data_dir
                )
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on UDP {config.host}:{config.udp_port}: {exc.strerror or exc}"
            ) from exc
        pool = await stack.enter_async_context(ConnectionPool(identity, config.wire))
        node = Node(
            data_dir=data_dir,
            identity=identity,
            config=config,
            store=store,
            dht=dht,
            pool=pool,
            nursery=nursery,
        )
        if config.upload_limit is not None:
            burst = max(int(config.upload_limit * UPLOAD_BURST_SECONDS), config.chunk_size)
            node._uploads = UploadGate(config.upload_limit, burst, weight_of=node._upload_weight)
        if config.download_limit is not None:
            burst = max(int(config.download_limit * UPLOAD_BURST_SECONDS), config.chunk_size)
            node._download_limiter = RateLimiter(config.download_limit, burst)
        server = ChunkServer(
            identity,
            CountingServerStore(store, node.telemetry),
            config.wire,
            on_put=node._on_put,
            uploads=node._uploads,
            holdings=node.holdings,
            on_watch=node._on_watch,
            seeding=SuperSeeder(store, downloading=node._downloads.__contains__),
        )
        try:
            node.tcp_address = await nursery.start(server.serve, config.host, config.tcp_port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on TCP {config.host}:{config.tcp_port}: {exc.strerror or exc}"
            ) from exc
        await _join(dht, config.bootstrap)
        nursery.start_soon(node._announce_held_files)
        nursery.start_soon(node._reannounce_loop)
        nursery.start_soon(node._repair_loop)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


async def _join(dht: DhtService, bootstrap: Sequence[tuple[str, int]]) -> None:
    """Join through ``bootstrap`` and the saved contacts. Only a failure of explicitly given
    bootstrap addresses is an error: a node restarting alone (or the first node) carries on."""
    if not bootstrap and not dht.saved_contacts():
        return
    try:
        await dht.bootstrap(bootstrap)
    except BootstrapError:
        if bootstrap:
            raise
        log.warning("none of the saved DHT contacts answered; waiting for others to find us")


__all__ = [
    "DEFAULT_TCP_PORT",
    "DEFAULT_UDP_PORT",
    "DownloadProgress",
    "GetResult",
    "Node",
    "NodeConfig",
    "NodeStatus",
    "PeerProgress",
    "PhaseProgress",
    "PutProgress",
    "StreamResult",
    "Transfer",
    "open_node",
]
