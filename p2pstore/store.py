"""The local, content-addressed, crash-safe chunk store.

Layout of a data directory::

    chunks/ab/<64 hex>       one file per chunk, named by its SHA-256, sharded by its first byte
    tmp/                     temp files being written (same filesystem, emptied at open)
    quarantine/              chunks found corrupt, moved aside for inspection
    index.sqlite3            the SQLite (WAL) index: chunks, files, file membership, pins
    store.lock               exclusive flock: one open store per directory

Crash safety. A chunk is written to ``tmp/``, fsynced, renamed into place and its directory
fsynced *before* its index row is committed (a batch of chunks does each step for all of them
before the next, so its fsyncs share journal commits and each shard directory is fsynced
once); a file's membership, row and pin are committed last, in one transaction. So after an
exception or ``kill -9`` at any point no index row points at a missing chunk, no partial chunk
is ever visible under ``chunks/`` and a file is listed only once all its chunks are durable.
Re-running an interrupted :meth:`ChunkStore.put_file` completes it.
Chunk files without an index row (a crash between rename and commit) are invisible and are
removed by :meth:`ChunkStore.gc`. Temp files live in ``tmp/`` rather than beside their chunk: the
rename is just as atomic (same filesystem), and what a crash leaves is cleaned at open without
scanning the shards.

Threads. Hashing, coding, file I/O, fsync and SQLite run in ``trio.to_thread.run_sync`` in
stripe-sized batches; the SQLite connection is shared under a lock. The synchronous methods
(``has_chunk``, ``list_files``, ``pin``, ``gc`` ...) are short index queries, except ``gc``
which may walk the chunk directories: run it in a thread for large stores.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import trio

from . import _index
from ._groups import collapse_exception_groups
from .chunking import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_K,
    DEFAULT_M,
    MAX_CHUNK_SIZE,
    Layout,
    read_stripe,
)
from .datadir import prepare_data_dir
from .erasure import ReedSolomon
from .errors import (
    ChunkNotFoundError,
    ConfigError,
    CorruptChunkError,
    FileUnavailableError,
    ManifestError,
    QuotaExceededError,
)
from .manifest import ID_LEN, Manifest, ManifestRoot, validate_name
from .reassembly import ProgressCallback, fetch_stripe, reassemble, start_writeback

__all__ = [
    "MALLOC_ARENA_MAX",
    "PUT_CONCURRENCY",
    "STORE_THREADS",
    "WRITE_THREADS",
    "ChunkStore",
    "DamagedFile",
    "StoreInUseError",
    "StoredFile",
    "VerifyReport",
]

#: Stripes hashed/coded/written at once by put_file: keeps the writer threads fed while fsyncs
#: wait, and bounds memory to this many stripe buffers plus their parity.
PUT_CONCURRENCY = 6
#: Worker threads one store uses at once for hashing, coding and reading chunks: about the core
#: count; more only adds per-thread malloc arenas that hold on to freed chunk buffers.
STORE_THREADS = 4
#: Chunk files written and fsynced at once by put_file: concurrent fsyncs share journal commits
#: and keep a contended disk busy; these threads wait on the disk and allocate nothing large.
WRITE_THREADS = 10
#: Bytes read and hashed per thread hop by verify(): big enough to amortise the hop.
VERIFY_BATCH_BYTES = 32 * 1024 * 1024
#: Decoded manifests kept in memory (have_bitmap is called for every HAVE request).
MANIFEST_CACHE_SIZE = 32
#: Reading a chunk file stops after this many bytes: no chunk may be larger.
_MAX_READ = MAX_CHUNK_SIZE + 1


def _open_chunk_file(path: Path) -> int:
    """A read-only descriptor of a chunk file. A symbolic link is not followed: it reads as an
    empty file (so it is quarantined as corrupt, never read through)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _read_chunk_file(path: Path, expected: int) -> bytes:
    """The file's bytes, reading at most one byte more than ``expected`` (so a longer file is
    detected without allocating ``_MAX_READ``: a read buffer is sized by its request)."""
    with open(_open_chunk_file(path), "rb") as f:
        return f.read(min(expected + 1, _MAX_READ))


def _read_chunk_file_into(path: Path, buffer: memoryview) -> bool:
    """Fill ``buffer`` from the file; True if the file is exactly that long."""
    with open(_open_chunk_file(path), "rb", buffering=0) as f:
        filled = 0
        while filled < len(buffer):
            count = f.readinto(buffer[filled:])
            if not count:
                return False
            filled += count
        return not f.read(1)


_Bytes = TypeVar("_Bytes", bytes, memoryview)

log = logging.getLogger(__name__)

#: glibc malloc arenas allowed in the process (unless ``$MALLOC_ARENA_MAX`` says otherwise). By
#: default every worker thread may get its own arena, and freed chunk-sized buffers stay cached
#: in each: the RSS then creeps up by tens of MiB per GiB stored. Two keep it flat.
MALLOC_ARENA_MAX = 2
_M_ARENA_MAX = -8  # from glibc's <malloc.h>

_INDEX_NAME = "index.sqlite3"
#: Where the second copy of every manifest chunk (root and index chunks) lives: a flipped byte
#: in the only copy of a root would otherwise lose a whole file whose shares are all intact.
SPARES_DIR = "manifests"
_LOCK_NAME = "store.lock"
_TMP_SUFFIX = ".tmp"


class StoreInUseError(ConfigError):
    """The data directory is already open by another :class:`ChunkStore` (in any process)."""


@dataclass(frozen=True)
class StoredFile:
    """A file known to the store (its manifest is stored).

    ``chunks_present``/``chunks_total`` count distinct data and parity chunk IDs;
    ``pin_kind`` is ``"local"`` (the user's file), ``"held"`` (kept for other nodes) or ``None``.
    """

    file_id: bytes
    name: str
    size: int
    chunk_size: int
    k: int
    m: int
    created: float
    pinned: bool
    pin_kind: str | None
    chunks_present: int
    chunks_total: int


@dataclass(frozen=True)
class DamagedFile:
    """A file with chunks on record as damaged: ``chunks`` of them, not repaired yet."""

    file_id: bytes
    name: str
    chunks: int


@dataclass(frozen=True)
class VerifyReport:
    """Result of :meth:`ChunkStore.verify`.

    ``checked``/``bytes_checked``: chunks (and spare manifest copies) re-hashed. ``corrupt`` and
    ``missing``: IDs found bad or gone *in this run* (quarantined, dropped from the index).
    ``repaired``: IDs stored again in this run, from a spare manifest copy or rebuilt from the
    stripe's other local shares. ``damaged``: every chunk on record as damaged and still not
    repaired, whenever the damage was found (a chunk stays here, run after run, until it is
    stored again: by a later ``verify`` once enough of its stripe is local, a ``get`` of the file,
    or a peer's PUT); ``damaged_files`` groups them by file.
    """

    checked: int
    bytes_checked: int
    corrupt: list[bytes]
    missing: list[bytes]
    repaired: list[bytes] = field(default_factory=list)
    damaged: list[bytes] = field(default_factory=list)
    damaged_files: list[DamagedFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if nothing was found wrong in this run and no earlier damage is outstanding."""
        return not self.corrupt and not self.missing and not self.damaged


def _stored_file(r: _index.FileRow) -> StoredFile:
    return StoredFile(
        file_id=r.file_id,
        name=r.name,
        size=r.size,
        chunk_size=r.chunk_size,
        k=r.k,
        m=r.m,
        created=r.created,
        pinned=r.pin_kind is not None,
        pin_kind=r.pin_kind,
        chunks_present=r.chunks_present,
        chunks_total=r.chunks_total,
    )


def _sha(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes | memoryview, *, sync: bool = True) -> None:
    """Create ``path`` (must not exist) holding ``data``, fsynced (``sync=False``: only its
    writeback started; the caller fsyncs it). Removes it on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
        else:
            start_writeback(fd)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if exc.filename is None:  # os.write/fsync name no file: say which disk is full
            raise OSError(exc.errno, exc.strerror, os.fspath(path.parent)) from exc
        raise
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _empty_dir_no_follow(path: Path) -> None:
    """Remove the files in ``path`` without following a symbolic link, neither ``path`` itself
    (``O_NOFOLLOW``: a link there raises instead of emptying its target) nor its entries."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at ``MALLOC_ARENA_MAX`` (process-wide; no-op off glibc/Linux)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_ARENA_MAX, MALLOC_ARENA_MAX)


def _make_shards(chunks: Path) -> None:
    """Create the 256 shard directories once, durably, so no chunk write has to mkdir.

    One level of 256 keeps every write free of directory creation (a new directory needs its
    own fsync of the parent); ext4/xfs handle the ~40k entries per shard of a 10M-chunk store.
    """
    created = False
    for i in range(256):
        shard = chunks / f"{i:02x}"
        if not shard.is_dir():
            shard.mkdir(mode=0o700, exist_ok=True)
            created = True
    if created:
        _fsync_dir(chunks)
        _fsync_dir(chunks.parent)


class _Pending:
    """Chunk IDs being written by a running put: gc must not delete them yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: Counter[bytes] = Counter()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Callable[[Sequence[bytes]], None]]:
        held: list[bytes] = []

        def add(ids: Sequence[bytes]) -> None:
            with self._lock:
                self._ids.update(ids)
                held.extend(ids)

        try:
            yield add
        finally:
            with self._lock:
                self._ids.subtract(held)
                for cid in set(held):
                    if self._ids[cid] <= 0:
                        del self._ids[cid]

    def snapshot(self) -> set[bytes]:
        with self._lock:
            return set(self._ids)


class ChunkStore:
    """A content-addressed chunk store with a SQLite index in a data directory.

    Open with :meth:`open` (also a context manager). Every chunk handed out is verified against
    its ID; every chunk written is verified first and written atomically. Async methods run their
    disk and CPU work in worker threads; if cancelled they stop at the next batch boundary and
    leave the store consistent (see the module docstring).
    """

    def __init__(
        self, data_dir: Path, index: _index.Index, lock_fd: int, quota_bytes: int | None
    ) -> None:
        self._dir = data_dir
        self._chunks = data_dir / "chunks"
        self._tmp = data_dir / "tmp"
        self._quarantine = data_dir / "quarantine"
        self._spares = data_dir / SPARES_DIR
        self._index = index
        self._lock_fd: int | None = lock_fd
        self._quota = quota_bytes
        self._reserved = 0
        self._quota_lock = threading.Lock()
        self._pending = _Pending()
        self._manifests: OrderedDict[bytes, Manifest] = OrderedDict()
        self._manifests_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(STORE_THREADS)
        self._write_limiter = trio.CapacityLimiter(WRITE_THREADS)
        self._dirs_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, *, quota_bytes: int | None = None) -> ChunkStore:
        """Open (creating if needed) the store in ``data_dir``.

        Takes an exclusive lock on the directory (:class:`StoreInUseError` if held elsewhere),
        removes temp files left by an interrupted writer and opens the index. Also caps glibc's
        malloc arenas for the process (see ``MALLOC_ARENA_MAX``). ``quota_bytes``
        bounds what ``put_chunk(..., enforce_quota=True)`` may fill (``ConfigError`` if negative).
        Blocking: call it before entering the event loop or via ``trio.to_thread.run_sync``.
        """
        if quota_bytes is not None and quota_bytes < 0:
            raise ConfigError("quota_bytes must be >= 0")
        _limit_malloc_arenas()
        data_dir = Path(data_dir)
        prepare_data_dir(data_dir)  # refuses a directory another user could control
        try:
            for sub in ("chunks", "tmp", "quarantine", SPARES_DIR):
                (data_dir / sub).mkdir(mode=0o700, exist_ok=True)
            lock_fd = os.open(
                data_dir / _LOCK_NAME,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {data_dir}: {exc}") from exc
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreInUseError(f"the store in {data_dir} is already open") from None
            _empty_dir_no_follow(data_dir / "tmp")
            _make_shards(data_dir / "chunks")
            index = _index.Index(data_dir / _INDEX_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(data_dir, index, lock_fd, quota_bytes)

    def close(self) -> None:
        """Close the index and release the directory lock. Idempotent."""
        if self._lock_fd is None:
            return
        self._index.close()
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def data_dir(self) -> Path:
        """The store's data directory."""
        return self._dir

    @property
    def stored_bytes(self) -> int:
        """Total size of the indexed chunks."""
        return self._index.total_bytes

    @property
    def quota_bytes(self) -> int | None:
        """The quota enforced by ``put_chunk(..., enforce_quota=True)``, if any."""
        return self._quota

    def set_quota(self, quota_bytes: int | None) -> None:
        """Change the quota (``None``: unlimited), e.g. to one computed from the free space."""
        if quota_bytes is not None and quota_bytes < 0:
            raise ConfigError("quota_bytes must be >= 0 (or None for unlimited)")
        with self._quota_lock:
            self._quota = quota_bytes

    def chunk_path(self, chunk_id: bytes) -> Path:
        """Where the chunk's file lives (whether or not it exists)."""
        h = chunk_id.hex()
        return self._chunks / h[:2] / h

    # -- chunk writes (sync, in worker threads) --------------------------------------------------

    def _ensure_dir(self, path: Path) -> None:
        # The shard directories are made at open; this only repairs one deleted meanwhile. Under
        # a lock: no thread may use a new directory before its entry is durable.
        if path.is_dir():
            return
        with self._dirs_lock:
            if not path.is_dir():
                path.mkdir(mode=0o700, exist_ok=True)
                _fsync_dir(path.parent)

    def _todo(
        self, items: Sequence[tuple[bytes, bytes | memoryview]], add_pending: Callable[..., None]
    ) -> list[tuple[bytes, bytes | memoryview]]:
        """The distinct items not yet indexed; all IDs are first protected from gc."""
        unique: dict[bytes, bytes | memoryview] = {}
        for cid, data in items:
            unique.setdefault(cid, data)
        add_pending(list(unique))
        present = self._index.present(list(unique))
        return [(cid, data) for cid, data in unique.items() if cid not in present]

    def _write_chunk_file(self, chunk_id: bytes, data: bytes | memoryview) -> None:
        """Durably place one chunk file: temp file, fsync, rename into place, fsync its dir."""
        tmp = self._tmp / f"{chunk_id.hex()}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
        _write_temp(tmp, data)
        try:
            final = self.chunk_path(chunk_id)
            self._ensure_dir(final.parent)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(final.parent)

    def _write_chunk_files(self, items: Sequence[tuple[bytes, bytes | memoryview]]) -> None:
        """Durably place several chunk files as one batch, in phases: every temp file written
        (its writeback started at once), then each fsynced, then all renamed into place, then
        each distinct shard directory fsynced once. The same end state and the same crash
        guarantee as :meth:`_write_chunk_file` per item (nothing is indexed before all of it is
        durable; a crash leaves temp files, emptied at open, or unindexed chunk files, removed by
        gc), but the fsyncs of a batch share their journal commits: the first fsync of each
        phase commits what the others would each have committed. Temp files not yet renamed
        are removed on failure."""
        if len(items) == 1:
            self._write_chunk_file(*items[0])
            return
        temps: list[tuple[bytes, Path]] = []
        placed = 0
        dirs: dict[Path, None] = {}
        try:
            for cid, data in items:
                tmp = self._tmp / f"{cid.hex()}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
                _write_temp(tmp, data, sync=False)
                temps.append((cid, tmp))
            for _, tmp in temps:
                _fsync_file(tmp)
            for cid, tmp in temps:
                final = self.chunk_path(cid)
                self._ensure_dir(final.parent)
                os.replace(tmp, final)
                placed += 1
                dirs[final.parent] = None
        except BaseException:
            for _, tmp in temps[placed:]:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        for directory in dirs:
            _fsync_dir(directory)

    def _store_chunks_sync(
        self, items: Sequence[tuple[bytes, bytes | memoryview]], add_pending: Callable[..., None]
    ) -> set[bytes]:
        """Write the chunks not yet indexed, durably, then index them. Returns the new IDs.

        The caller has verified every ID. ``add_pending`` protects the IDs from gc meanwhile.
        """
        todo = self._todo(items, add_pending)
        self._write_chunk_files(todo)
        if not todo:
            return set()
        return self._index.insert_chunks([(cid, len(data)) for cid, data in todo])

    def _reserve(self, nbytes: int) -> None:
        with self._quota_lock:
            if self._quota is not None and (
                self._index.total_bytes + self._reserved + nbytes > self._quota
            ):
                raise QuotaExceededError(
                    f"storing {nbytes} bytes would exceed the quota of {self._quota} bytes"
                    f" ({self._index.total_bytes} used)"
                )
            self._reserved += nbytes

    def _unreserve(self, nbytes: int) -> None:
        with self._quota_lock:
            self._reserved -= nbytes

    def _put_chunks_sync(
        self,
        items: Sequence[tuple[bytes, bytes]],
        enforce_quota: bool,
        file_id: bytes | None,
        verified: bool = False,
    ) -> list[bool]:
        for cid, data in items:
            if len(cid) != ID_LEN or (not verified and hashlib.sha256(data).digest() != cid):
                raise CorruptChunkError(cid)
        with self._pending.hold() as add:
            reserved = 0
            if enforce_quota:
                present = self._index.present([cid for cid, _ in items])
                sizes = {cid: len(d) for cid, d in items if cid not in present}
                reserved = sum(sizes.values())
                self._reserve(reserved)
            try:
                new = self._store_chunks_sync(items, add)
            finally:
                if reserved:
                    self._unreserve(reserved)
            if file_id is not None:
                self._index.hold_chunks(file_id, [cid for cid, _ in items])
        seen: set[bytes] = set()
        result = []
        for cid, _ in items:
            result.append(cid in new and cid not in seen)
            seen.add(cid)
        return result

    # -- spare copies of manifest chunks --------------------------------------------------------

    def spare_path(self, chunk_id: bytes) -> Path:
        """Where the spare copy of a manifest chunk lives (whether or not it exists)."""
        return self._spares / chunk_id.hex()

    def _read_spare_sync(self, chunk_id: bytes) -> bytes | None:
        """The spare copy's bytes if it is recorded, present and intact, else ``None``."""
        size = self._index.spare_size(chunk_id)
        if size is None:
            return None
        try:
            data = _read_chunk_file(self.spare_path(chunk_id), size)
        except FileNotFoundError:
            return None
        if len(data) != size or hashlib.sha256(data).digest() != chunk_id:
            return None
        return data

    def _write_spare_sync(self, chunk_id: bytes, data: bytes | memoryview) -> None:
        tmp = self._tmp / f"spare-{chunk_id.hex()}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
        _write_temp(tmp, data)
        try:
            os.replace(tmp, self.spare_path(chunk_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self._spares)

    def _store_spares_sync(self, items: Sequence[tuple[bytes, bytes | memoryview]]) -> None:
        """Give each manifest chunk a durable second copy (before the file is recorded)."""
        todo = [(cid, data) for cid, data in items if self._index.spare_size(cid) is None]
        for cid, data in todo:
            self._write_spare_sync(cid, data)
        if todo:
            self._index.add_spares([(cid, len(data)) for cid, data in todo])

    def _restore_from_spare_sync(self, chunk_id: bytes) -> bool:
        """Put the primary copy of a manifest chunk back from its spare; True if it was."""
        data = self._read_spare_sync(chunk_id)
        if data is None:
            return False
        with self._pending.hold() as add:
            add([chunk_id])
            self._write_chunk_file(chunk_id, data)
            self._index.insert_chunks([(chunk_id, len(data))])
        log.warning("restored manifest chunk %s from its spare copy", chunk_id.hex())
        return True

    # -- public chunk API ----------------------------------------------------------------------

    async def put_chunk(
        self,
        chunk_id: bytes,
        data: bytes,
        *,
        enforce_quota: bool = False,
        file_id: bytes | None = None,
    ) -> bool:
        """Verify and durably store one chunk; True if it was not stored before.

        Raises :class:`CorruptChunkError` if ``data`` does not hash to ``chunk_id`` (nothing is
        written) and :class:`QuotaExceededError` if ``enforce_quota`` and a new chunk would exceed
        the quota. ``file_id``: the chunk is held for that file (a share kept for other nodes):
        the file is pinned as ``"held"`` so gc keeps its chunks. Idempotent. If cancelled, the
        chunk is either fully stored or not at all.
        """
        result = await self.put_chunks(
            [(chunk_id, data)], enforce_quota=enforce_quota, file_id=file_id
        )
        return result[0]

    async def put_chunks(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        enforce_quota: bool = False,
        file_id: bytes | None = None,
        verified: bool = False,
    ) -> list[bool]:
        """Batched :meth:`put_chunk` in one thread hop and one index transaction; per item,
        True if newly stored.

        All items are verified before anything is written: one bad item raises
        :class:`CorruptChunkError` and stores nothing. The quota check covers the whole batch.
        ``verified=True`` is the caller's promise that every item's SHA-256 has just been checked
        against its ID (the wire client checks each chunk it returns): the store then does not
        hash the bytes a second time (a download's largest CPU cost per byte after decryption).
        """
        return await trio.to_thread.run_sync(
            self._put_chunks_sync,
            list(items),
            enforce_quota,
            file_id,
            verified,
            limiter=self._limiter,
        )

    def has_chunk(self, chunk_id: bytes) -> bool:
        """True if the chunk is indexed (see :meth:`verify` for checking the bytes)."""
        return bool(self._index.present([chunk_id]))

    def knows_file(self, file_id: bytes) -> bool:
        """Whether the store has a record of the file (listed, or holding chunks for it)."""
        return self._index.is_known(file_id)

    def chunk_size(self, chunk_id: bytes) -> int | None:
        """The stored chunk's size in bytes from the index, or ``None`` if it is not stored."""
        return self._index.chunk_size(chunk_id) if len(chunk_id) == ID_LEN else None

    def has_chunks(self, chunk_ids: Sequence[bytes]) -> list[bool]:
        """:meth:`has_chunk` for many IDs, in order."""
        present = self._index.present(list(chunk_ids))
        return [cid in present for cid in chunk_ids]

    def _quarantine_sync(self, chunk_id: bytes) -> None:
        path = self.chunk_path(chunk_id)
        self._index.delete_chunks([chunk_id])
        self._index.mark_damaged([chunk_id], "corrupt")
        dest = self._quarantine / f"{chunk_id.hex()}.{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, dest)

    def _read_verified_sync(self, chunk_id: bytes) -> bytes:
        def read(path: Path, size: int) -> bytes | None:
            data = _read_chunk_file(path, size)
            return data if len(data) == size else None

        return self._verified_read(chunk_id, read)

    def read_chunk_into(
        self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]
    ) -> memoryview:
        """Read the chunk's bytes, verified against its ID, into ``buffer_for(size)`` (a buffer
        of exactly the chunk's size) and return that buffer; blocking (call it from a worker
        thread). Raises like :meth:`get_chunk`; after a :class:`CorruptChunkError` the buffer
        holds unverified bytes and must not be used.

        This spares a copy of the chunk where the caller wants it somewhere in particular (the
        chunk server reads it straight into the frame it seals).
        """

        given: list[memoryview] = []

        def read(path: Path, size: int) -> memoryview | None:
            # One buffer per call even if the read is retried (a manifest chunk restored from
            # its spare): the caller may hand out only one (the server's frame).
            if not given or len(given[0]) != size:
                given[:] = [buffer_for(size)]
            buffer = given[0]
            if len(buffer) != size:
                raise ValueError(f"buffer of {len(buffer)} bytes for a chunk of {size}")
            return buffer if _read_chunk_file_into(path, buffer) else None

        return self._verified_read(chunk_id, read)

    def _verified_read(self, chunk_id: bytes, read: Callable[[Path, int], _Bytes | None]) -> _Bytes:
        """``read(path, size)`` of the chunk's file, checked against its ID. ``read`` returns
        ``None`` if the file is not ``size`` bytes long. A vanished file drops the index row
        (:class:`ChunkNotFoundError`); wrong bytes quarantine the chunk
        (:class:`CorruptChunkError`). Either way the chunk is on record as damaged, and a
        manifest chunk is restored from its spare copy (and read again) if that one is intact.
        """
        try:
            return self._verified_read_once(chunk_id, read)
        except (ChunkNotFoundError, CorruptChunkError):
            if not self._restore_from_spare_sync(chunk_id):
                raise
        return self._verified_read_once(chunk_id, read)

    def _verified_read_once(
        self, chunk_id: bytes, read: Callable[[Path, int], _Bytes | None]
    ) -> _Bytes:
        size = self.chunk_size(chunk_id)
        if size is None:
            raise ChunkNotFoundError(chunk_id)
        try:
            data = read(self.chunk_path(chunk_id), size)
        except FileNotFoundError:
            self._index.delete_chunks([chunk_id])
            self._index.mark_damaged([chunk_id], "missing")
            raise ChunkNotFoundError(chunk_id) from None
        if data is None or hashlib.sha256(data).digest() != chunk_id:
            self._quarantine_sync(chunk_id)
            raise CorruptChunkError(chunk_id)
        return data

    async def get_chunk(self, chunk_id: bytes) -> bytes:
        """The chunk's bytes, verified against its ID.

        Raises :class:`ChunkNotFoundError` if it is not stored (or its file vanished: the index
        row is dropped) and :class:`CorruptChunkError` if its bytes do not match (the chunk is
        quarantined and dropped from the index, so it is never returned).
        """
        return await trio.to_thread.run_sync(
            self._read_verified_sync, chunk_id, limiter=self._limiter
        )

    # -- files -------------------------------------------------------------------------------

    def _prepare_stripe_sync(
        self,
        fd: int,
        layout: Layout,
        size: int,
        stripe: int,
        rs: ReedSolomon | None,
        add_pending: Callable[..., None],
        buf: bytearray,
    ) -> tuple[tuple[bytes, ...], list[tuple[bytes, bytes | memoryview]]]:
        """Read, code and hash one stripe: its IDs and the chunks still to be written."""
        data = read_stripe(fd, layout, size, stripe, buf)
        chunks: list[bytes | memoryview] = list(data)
        if rs is not None:
            length = len(data[0])
            shares: list[bytes | memoryview] = list(data)
            if len(data[-1]) != length:
                shares[-1] = bytes(data[-1]) + bytes(length - len(data[-1]))
            if len(shares) < layout.k:
                zeros = bytes(length)
                shares.extend([zeros] * (layout.k - len(shares)))
            chunks.extend(rs.encode(shares))
        ids = tuple(hashlib.sha256(c).digest() for c in chunks)
        return ids, self._todo(list(zip(ids, chunks, strict=True)), add_pending)

    async def _put_stripe(
        self,
        fd: int,
        layout: Layout,
        size: int,
        stripe: int,
        rs: ReedSolomon | None,
        add_pending: Callable[..., None],
        buffers: list[bytearray],
    ) -> tuple[bytes, ...]:
        # Stripe buffers are reused: fresh 4 MiB buffers per stripe cost page faults and RSS.
        buf = buffers.pop() if buffers else bytearray(layout.stripe_bytes)
        try:
            return await self._put_stripe_in(fd, layout, size, stripe, rs, add_pending, buf)
        finally:
            buffers.append(buf)

    async def _put_stripe_in(
        self,
        fd: int,
        layout: Layout,
        size: int,
        stripe: int,
        rs: ReedSolomon | None,
        add_pending: Callable[..., None],
        buf: bytearray,
    ) -> tuple[bytes, ...]:
        ids, todo = await trio.to_thread.run_sync(
            self._prepare_stripe_sync,
            fd,
            layout,
            size,
            stripe,
            rs,
            add_pending,
            buf,
            limiter=self._limiter,
        )
        # One thread per chunk file: concurrent fsyncs share journal commits.
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for cid, data in todo:
                    nursery.start_soon(
                        partial(
                            trio.to_thread.run_sync,
                            self._write_chunk_file,
                            cid,
                            data,
                            limiter=self._write_limiter,
                        )
                    )
        if todo:
            rows = [(cid, len(data)) for cid, data in todo]
            await trio.to_thread.run_sync(self._index.insert_chunks, rows, limiter=self._limiter)
        return ids

    def _commit_file_sync(
        self, manifest: Manifest, pin_kind: str | None, add_pending: Callable[..., None]
    ) -> None:
        mchunks = manifest.manifest_chunks()
        self._store_chunks_sync(mchunks, add_pending)
        self._store_spares_sync(mchunks)
        self._index.add_file(
            file_id=manifest.file_id,
            name=manifest.name,
            size=manifest.size,
            chunk_size=manifest.chunk_size,
            k=manifest.k,
            m=manifest.m,
            share_ids=manifest.chunk_ids(),
            manifest_ids=[cid for cid, _ in mchunks],
            pin_kind=pin_kind,
        )
        self._cache_manifest(manifest)

    async def put_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        k: int = DEFAULT_K,
        m: int = DEFAULT_M,
        progress: ProgressCallback | None = None,
    ) -> Manifest:
        """Chunk, code and durably store the file at ``path``, then record and pin it.

        Streams the file a few stripes at a time (``PUT_CONCURRENCY``) so memory stays bounded.
        ``name`` defaults to the file's base name. ``progress(done_bytes, total_bytes)`` is called
        in the Trio thread after each stripe. Idempotent: storing the same file again returns the
        same manifest, rewriting nothing already stored; after an interruption (exception,
        cancellation, crash) calling it again completes the put. The file is listed only once all
        its chunks are durable. Raises :class:`ConfigError` for bad parameters or name,
        ``OSError`` if the file cannot be read and ``EOFError`` if it shrinks while being read.
        Quota is not enforced for the user's own files. A file shorter than one stripe is stored
        with ``k`` = its chunk count and proportionally fewer parity chunks
        (:meth:`Layout.for_size`); the manifest records what was used.
        """
        path = Path(path)
        layout = Layout(chunk_size, k, m)
        try:
            name = validate_name(path.name if name is None else name)
        except ManifestError as exc:
            raise ConfigError(str(exc)) from None
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            layout = layout.for_size(size)  # a file shorter than a stripe: fewer parity chunks
            k, m = layout.k, layout.m
            rs = ReedSolomon(k, m) if m > 0 else None
            n = layout.stripe_count(size)
            ids: list[tuple[bytes, ...]] = [()] * n
            buffers: list[bytearray] = []
            written: set[bytes] = set()
            try:
                with self._pending.hold() as hold:

                    def add(ids: Sequence[bytes]) -> None:
                        hold(ids)
                        written.update(ids)

                    manifest = await self._put_stripes(
                        fd, layout, name, size, n, ids, rs, add, buffers, progress
                    )
            except BaseException:
                # A failed or cancelled put removes what it wrote (running it again redoes it).
                with trio.CancelScope(shield=True):
                    freed = await trio.to_thread.run_sync(self._drop_unclaimed_sync, written)
                if freed:
                    log.info("put of %s failed: removed %d bytes it had written", path, freed)
                raise
        finally:
            os.close(fd)
        if progress is not None and n == 0:
            progress(0, 0)
        return manifest

    async def _put_stripes(
        self,
        fd: int,
        layout: Layout,
        name: str,
        size: int,
        n: int,
        ids: list[tuple[bytes, ...]],
        rs: ReedSolomon | None,
        add: Callable[[Sequence[bytes]], None],
        buffers: list[bytearray],
        progress: ProgressCallback | None,
    ) -> Manifest:
        """The body of :meth:`put_file`: store every stripe, then commit the file."""
        k, m, chunk_size = layout.k, layout.m, layout.chunk_size
        done = 0

        async def one(stripe: int) -> None:
            nonlocal done
            try:
                ids[stripe] = await self._put_stripe(fd, layout, size, stripe, rs, add, buffers)
            finally:
                sem.release()
            done += layout.stripe_data_size(size, stripe)
            if progress is not None:
                progress(done, size)

        sem = trio.Semaphore(PUT_CONCURRENCY)
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for stripe in range(n):
                    await sem.acquire()
                    nursery.start_soon(one, stripe)
        manifest = Manifest(name, size, chunk_size, k, m, tuple(ids))
        await trio.to_thread.run_sync(self._commit_file_sync, manifest, "local", add)
        return manifest

    def _drop_unclaimed_sync(self, ids: set[bytes]) -> int:
        """Delete those of ``ids`` that no pinned file uses and no running put holds (the chunks
        a failed put wrote); returns the bytes freed."""
        if not ids:
            return 0
        pending = self._pending.snapshot()
        ours = ids - pending
        indexed = self._index.present(list(ours))
        unclaimed = {cid for cid, _ in self._index.unreferenced_chunks() if cid in indexed}
        # Indexed chunks some pinned file uses stay; the rest go, and so do files written but
        # not yet indexed when the put stopped (a batch is indexed after all its files).
        victims = [cid for cid in ours if cid in unclaimed or cid not in indexed]
        freed = self._index.delete_chunks([cid for cid in victims if cid in unclaimed])
        for cid in victims:
            if cid not in indexed:
                with contextlib.suppress(OSError):
                    freed += os.stat(self.chunk_path(cid)).st_size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.chunk_path(cid))
        return freed

    async def add_manifest(self, manifest: Manifest, *, pin: bool = True) -> None:
        """Record a file described by ``manifest`` (e.g. after a download, or to hold shares).

        Stores the manifest's own chunks (root and index chunks) if needed, then records the file
        and, if ``pin``, pins it (``"local"``) so gc keeps its chunks. Its data chunks need not be
        present (see ``list_files``'s counts and :meth:`have_bitmap`). Idempotent.
        """

        def work() -> None:
            with self._pending.hold() as add:
                self._commit_file_sync(manifest, "local" if pin else None, add)

        await trio.to_thread.run_sync(work, limiter=self._limiter)

    def _cache_manifest(self, manifest: Manifest) -> None:
        with self._manifests_lock:
            self._manifests[manifest.file_id] = manifest
            self._manifests.move_to_end(manifest.file_id)
            while len(self._manifests) > MANIFEST_CACHE_SIZE:
                self._manifests.popitem(last=False)

    def _load_manifest_sync(self, file_id: bytes) -> Manifest:
        with self._manifests_lock:
            cached = self._manifests.get(file_id)
        if cached is not None:
            return cached
        root = ManifestRoot.decode(self._read_verified_sync(file_id))
        parts: dict[bytes, bytes] = {}
        while needed := root.needed_chunk_ids(parts):
            for cid in needed:
                parts[cid] = self._read_verified_sync(cid)
        manifest = Manifest.from_parts(root, parts)
        self._cache_manifest(manifest)
        return manifest

    async def load_manifest(self, file_id: bytes) -> Manifest:
        """The manifest of ``file_id`` from its stored root and index chunks.

        Raises :class:`ChunkNotFoundError` if one of them is not stored,
        :class:`CorruptChunkError` if one is corrupt and :class:`ManifestError` if the stored
        root is not a manifest.
        """
        return await trio.to_thread.run_sync(
            self._load_manifest_sync, file_id, limiter=self._limiter
        )

    async def have_bitmap(self, file_id: bytes) -> bytes | None:
        """Which chunks of the file are stored, or ``None`` if its manifest is not.

        Bit ``i`` refers to ``manifest.chunk_ids()[i]``: it is bit ``i % 8`` (least significant
        first) of byte ``i // 8``; the bitmap has ``ceil(n / 8)`` bytes and unused bits are 0.
        """

        def work() -> bytes | None:
            try:
                manifest = self._load_manifest_sync(file_id)
            except (ChunkNotFoundError, CorruptChunkError, ManifestError):
                return None
            ids = manifest.chunk_ids()
            present = self._index.present(list(set(ids)))
            bitmap = bytearray((len(ids) + 7) // 8)
            for i, cid in enumerate(ids):
                if cid in present:
                    bitmap[i >> 3] |= 1 << (i & 7)
            return bytes(bitmap)

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def reassemble(
        self, manifest: Manifest, dest: Path, *, progress: ProgressCallback | None = None
    ) -> None:
        """Write the file to ``dest`` from local chunks (:func:`p2pstore.reassembly.reassemble`)."""
        await reassemble(manifest, self, dest, progress=progress)

    def list_files(self) -> list[StoredFile]:
        """Every file whose manifest is recorded, oldest first."""
        return [_stored_file(r) for r in self._index.files()]

    def partial_downloads(self) -> list[tuple[bytes, int, int]]:
        """Downloads that stored chunks but did not finish (failed, cancelled or running):
        ``(file_id, chunks, bytes)``; ``get`` resumes them, ``unpin`` + ``gc`` removes them."""
        return self._index.partial_files()

    def file_info(self, file_id: bytes) -> StoredFile | None:
        """The :meth:`list_files` entry of one file, or ``None``; one indexed look-up, so its cost
        does not grow with the number of files stored."""
        row = self._index.file_row(file_id)
        return None if row is None else _stored_file(row)

    def pin(self, file_id: bytes) -> None:
        """Pin a known file (its chunks survive gc). ChunkNotFoundError if the file is unknown."""
        if not self._index.is_known(file_id):
            raise ChunkNotFoundError(file_id)
        self._index.pin(file_id, "local")

    def unpin(self, file_id: bytes) -> None:
        """Unpin a file: the next gc frees its chunks unless another pinned file uses them."""
        self._index.unpin(file_id)

    def note_download(self, dest: Path) -> None:
        """Record that a download into ``dest`` starts: if the process dies, the next node start
        knows where a temporary file may have been left (see :meth:`pending_downloads`)."""
        self._index.note_download(os.fspath(dest))

    def forget_download(self, dest: Path) -> None:
        """The download into ``dest`` has ended (its temporary file is gone).

        A no-op once the store is closed: a download still unwinding when its node stops keeps
        its note, and the next start removes what it left (see :meth:`pending_downloads`)."""
        if self._lock_fd is None:
            return
        self._index.forget_download(os.fspath(dest))

    def pending_downloads(self) -> list[Path]:
        """Destinations of downloads noted and never forgotten (the process died meanwhile)."""
        return [Path(d) for d in self._index.downloads()]

    def gc(self) -> int:
        """Delete every chunk that belongs to no pinned file; returns the bytes freed.

        Index rows go first, then the files, so a crash midway leaves only invisible orphan
        files, which the next gc removes along with any other unindexed chunk file. The records
        of unpinned files are dropped too (they no longer appear in :meth:`list_files`). Chunks
        being written by a running put are kept. Blocking (walks the chunk directories).
        """
        self._index.forget_unpinned_files()
        self._index.forget_unpinned_held()
        for cid in self._index.forget_unneeded():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spare_path(cid))
        pending = self._pending.snapshot()
        victims = [(cid, n) for cid, n in self._index.unreferenced_chunks() if cid not in pending]
        freed = self._index.delete_chunks([cid for cid, _ in victims])
        for cid, _ in victims:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.chunk_path(cid))
        with self._manifests_lock:
            self._manifests.clear()
        indexed = set(self._index.all_chunk_ids())
        for entry in self._walk_chunk_files():
            try:
                cid = bytes.fromhex(entry.name)
            except ValueError:
                continue
            if len(cid) != ID_LEN or cid in pending or cid in indexed:
                continue
            # Re-check under the current index and pending set: a put may have just landed it.
            if not self._index.present([cid]) and cid not in self._pending.snapshot():
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(entry.path)
                    os.unlink(entry.path)
                    freed += st.st_size
        return freed

    def _walk_chunk_files(self) -> Iterator[os.DirEntry[str]]:
        for shard in os.scandir(self._chunks):
            if shard.is_dir():
                yield from (e for e in os.scandir(shard.path) if e.is_file())

    async def verify(
        self, *, progress: Callable[[str, int, int], None] | None = None
    ) -> VerifyReport:
        """Scrub the store: re-hash every indexed chunk.

        Corrupt chunks are quarantined and dropped from the index; rows whose file is gone are
        dropped. Runs in batches of about ``VERIFY_BATCH_BYTES`` per thread hop; if cancelled,
        what was checked so far has been handled. ``progress(phase, done, total)`` is called
        after each batch of phase ``"hashing"`` (bytes re-hashed of the bytes stored), then once
        as each later phase (``"spares"``, ``"rebuilding"``) begins, with ``0, 0``.
        """
        report = progress or (lambda _phase, _done, _total: None)
        stored_at_start = self.stored_bytes
        ids = await trio.to_thread.run_sync(self._index.all_chunk_ids)
        corrupt: list[bytes] = []
        missing: list[bytes] = []
        checked = 0
        nbytes = 0

        def batch(start: int) -> int:
            nonlocal checked, nbytes
            budget = VERIFY_BATCH_BYTES
            i = start
            while i < len(ids) and budget > 0:
                cid = ids[i]
                i += 1
                size = self._index.chunk_size(cid)
                if size is None:  # removed meanwhile (gc, a concurrent read found it bad)
                    continue
                checked += 1
                try:
                    data = _read_chunk_file(self.chunk_path(cid), size)
                except FileNotFoundError:
                    self._index.delete_chunks([cid])
                    self._index.mark_damaged([cid], "missing")
                    missing.append(cid)
                    continue
                nbytes += len(data)
                budget -= len(data) + 1
                if len(data) != size or hashlib.sha256(data).digest() != cid:
                    self._quarantine_sync(cid)
                    corrupt.append(cid)
            return i

        pos = 0
        report("hashing", 0, stored_at_start)
        while pos < len(ids):
            pos = await trio.to_thread.run_sync(batch, pos, limiter=self._limiter)
            report("hashing", nbytes, max(nbytes, stored_at_start))

        def spares() -> tuple[int, int, list[bytes]]:
            return self._check_spares_sync(corrupt, missing)

        report("spares", 0, 0)

        spare_count, spare_bytes, repaired = await trio.to_thread.run_sync(
            spares, limiter=self._limiter
        )
        report("rebuilding", 0, 0)
        repaired += await self._repair_stripes()
        damaged = await trio.to_thread.run_sync(self._index.damaged, limiter=self._limiter)
        by_file = await trio.to_thread.run_sync(self._index.damaged_by_file, limiter=self._limiter)
        names = {f.file_id: f.name for f in self.list_files() if f.file_id in by_file}
        return VerifyReport(
            checked=checked + spare_count,
            bytes_checked=nbytes + spare_bytes,
            corrupt=corrupt,
            missing=missing,
            repaired=repaired,
            damaged=sorted(damaged),
            damaged_files=[
                DamagedFile(fid, names.get(fid, ""), len(cids)) for fid, cids in by_file.items()
            ],
        )

    def _check_spares_sync(
        self, corrupt: list[bytes], missing: list[bytes]
    ) -> tuple[int, int, list[bytes]]:
        """Check both copies of every manifest chunk and restore either from the other.

        Returns (copies checked, bytes, IDs repaired). A bad spare is reported as corrupt (or
        missing) like a bad chunk.
        """
        repaired: list[bytes] = []
        checked = nbytes = 0
        for cid, size in self._index.spares():
            checked += 1
            nbytes += size
            spare = self._read_spare_sync(cid)
            if spare is None:
                (missing if not self.spare_path(cid).exists() else corrupt).append(cid)
                try:
                    primary = self._read_verified_sync(cid)
                except (ChunkNotFoundError, CorruptChunkError):
                    self._index.mark_damaged([cid], "corrupt")
                    continue
                self._write_spare_sync(cid, primary)
                repaired.append(cid)
            elif not self._index.present([cid]):
                self._restore_from_spare_sync(cid)
                repaired.append(cid)
        return checked, nbytes, repaired

    async def _repair_stripes(self) -> list[bytes]:
        """Rebuild damaged data and parity chunks from their stripe's other local shares, where
        at least ``k`` of them are here; returns the IDs stored again."""
        by_file = await trio.to_thread.run_sync(self._index.damaged_by_file, limiter=self._limiter)
        repaired: list[bytes] = []
        for file_id, lost_ids in by_file.items():
            try:
                manifest = await self.load_manifest(file_id)
            except (ChunkNotFoundError, CorruptChunkError, ManifestError):
                continue  # its manifest is gone too: a get of the file restores everything
            lost = set(lost_ids)
            rs = ReedSolomon(manifest.k, manifest.m) if manifest.m else None
            for s, ids in enumerate(manifest.stripes):
                positions = [p for p, cid in enumerate(ids) if cid in lost]
                if positions:
                    repaired += await self._rebuild_stripe(manifest, s, positions, rs)
        return repaired

    async def _rebuild_stripe(
        self, manifest: Manifest, s: int, positions: list[int], rs: ReedSolomon | None
    ) -> list[bytes]:
        d = manifest.data_chunk_count(s)
        if sum(self.has_chunks(manifest.stripes[s])) < d or (rs is None and positions[-1] >= d):
            return []
        try:
            data = await fetch_stripe(manifest, self, s, rs or ReedSolomon(1, 0), self._limiter)
        except (ChunkNotFoundError, CorruptChunkError, FileUnavailableError):
            return []
        ids = manifest.stripes[s]

        def rebuild() -> list[tuple[bytes, bytes]]:
            chunks = list(data)
            if rs is not None:
                length = manifest.share_length(s)
                shares = [c + bytes(length - len(c)) for c in data]
                shares += [bytes(length)] * (manifest.k - d)
                parity = rs.encode(shares)
                chunks += [c[: manifest.chunk_length(s, d + j)] for j, c in enumerate(parity)]
            return [(ids[p], chunks[p]) for p in positions if _sha(chunks[p]) == ids[p]]

        items = await trio.to_thread.run_sync(rebuild, limiter=self._limiter)
        if items:
            await self.put_chunks(items)
        return [cid for cid, _ in items]
