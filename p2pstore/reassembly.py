"""Stream a file back out of its chunks, rebuilding stripes that lack up to m chunks.

:func:`reassemble` takes a :class:`~p2pstore.manifest.Manifest` and any :class:`ChunkSource`
(the local store, or a downloader fetching from peers). It fetches a few stripes at a time
(``REASSEMBLY_WINDOW``), data chunks first; for each data chunk that is missing or bad it fetches
a parity chunk instead and decodes. Every chunk is checked against its ID and expected length
before use. Output goes to a temp file beside the destination, which is fsynced and renamed into
place only once complete: ``dest`` is either the whole, correct file or untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import trio

from ._groups import collapse_exception_groups
from .erasure import ReedSolomon
from .errors import ChunkNotFoundError, CorruptChunkError, FileUnavailableError
from .manifest import Manifest

__all__ = [
    "REASSEMBLY_WINDOW",
    "ChunkSource",
    "ProgressCallback",
    "fetch_stripe",
    "finish_temp_file",
    "naming_file",
    "reassemble",
]

#: Threads verifying/decoding/writing for one reassembly (the source has its own): about the
#: number of cores; more only adds per-thread malloc arenas holding freed buffers.
REASSEMBLY_THREADS = 2
#: Stripes fetched/decoded ahead of the writer: overlaps I/O and hashing while keeping memory
#: bounded at about this many stripes of k+m chunks.
REASSEMBLY_WINDOW = 4

ProgressCallback = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``, called in the Trio thread."""


class ChunkSource(Protocol):
    """Anything chunks can be fetched from by ID.

    ``get_chunk`` returns the chunk's bytes, or raises :class:`ChunkNotFoundError` (not
    available) or :class:`CorruptChunkError` (bytes did not match). Any other exception aborts
    the reassembly. :class:`p2pstore.store.ChunkStore` satisfies it.
    """

    async def get_chunk(self, chunk_id: bytes) -> bytes: ...


class _StripeUnavailable(FileUnavailableError):
    def __init__(self, missing: list[bytes]) -> None:
        super().__init__(f"a stripe lacks {len(missing)} chunk(s) and cannot be rebuilt")
        self.stripe_missing = missing


@dataclass
class _Slot:
    index: int
    done: trio.Event = field(default_factory=trio.Event)
    data: list[bytes] | None = None
    missing: list[bytes] | None = None


def _verify(items: dict[int, tuple[bytes, bytes, int]]) -> dict[int, bytes | None]:
    """position -> bytes if (id, bytes, expected length) matches, else None."""
    out: dict[int, bytes | None] = {}
    for pos, (cid, data, length) in items.items():
        ok = len(data) == length and hashlib.sha256(data).digest() == cid
        out[pos] = data if ok else None
    return out


async def fetch_stripe(
    manifest: Manifest,
    source: ChunkSource,
    stripe: int,
    rs: ReedSolomon,
    limiter: trio.CapacityLimiter,
) -> list[bytes]:
    """The stripe's data chunks (exact lengths), fetched from ``source`` and rebuilt as needed.

    Raises :class:`FileUnavailableError` if fewer than ``k`` good shares can be obtained.
    """
    ids = manifest.stripes[stripe]
    d = manifest.data_chunk_count(stripe)
    k = manifest.k
    good: dict[int, bytes] = {}
    failed: list[int] = []
    untried_parity = list(range(d, len(ids)))

    async def fetch(positions: list[int]) -> None:
        raw: dict[int, tuple[bytes, bytes, int]] = {}

        async def one(pos: int) -> None:
            try:
                data = await source.get_chunk(ids[pos])
            except (ChunkNotFoundError, CorruptChunkError):
                failed.append(pos)
                return
            raw[pos] = (ids[pos], data, manifest.chunk_length(stripe, pos))

        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for pos in positions:
                    nursery.start_soon(one, pos)
        checked = await trio.to_thread.run_sync(_verify, raw, limiter=limiter)
        for pos, data in checked.items():
            if data is None:
                failed.append(pos)
            else:
                good[pos] = data

    await fetch(list(range(d)))
    # Decoding needs k shares: the good chunks plus the k - d implicit all-zero data shares.
    while len(good) < d:
        if not untried_parity:
            raise _StripeUnavailable([ids[p] for p in sorted(failed)])
        want = d - len(good)
        batch, untried_parity = untried_parity[:want], untried_parity[want:]
        await fetch(batch)
    if all(p in good for p in range(d)):
        return [good[p] for p in range(d)]

    length = manifest.share_length(stripe)

    def decode() -> list[bytes]:
        shares: dict[int, bytes] = {}
        for pos, data in good.items():
            shares[manifest.erasure_index(stripe, pos)] = data + bytes(length - len(data))
        zeros = bytes(length)
        for i in range(d, k):
            shares[i] = zeros
        rebuilt = rs.decode(shares)
        return [rebuilt[p][: manifest.chunk_length(stripe, p)] for p in range(d)]

    return await trio.to_thread.run_sync(decode, limiter=limiter)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", fn)


_sync_file_range = _libc_sync_file_range()  # (Python's os module does not expose it)
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages in ``[offset, offset + length)``
    (``length`` 0: to the end) now, without waiting for them (Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``), so a later fsync finds most of its data already on the disk.
    Not a durability step (no metadata, no flush): the fsync is still needed. A no-op where the
    call does not exist; its errors are ignored (the fsync reports real ones)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


@contextlib.contextmanager
def naming_file(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised inside that names no file (``os.write``, ``os.pwrite`` and
    ``os.fsync`` on a full disk) the file ``path``, so a user's error says where it happened."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise type(exc)(exc.errno, exc.strerror, os.fspath(path)) from exc


def finish_temp_file(fd: int, tmp: Path, dest: Path) -> None:
    """Fsync and close ``fd`` (the temp file ``tmp``), rename it to ``dest``, fsync its dir."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def reassemble(
    manifest: Manifest,
    source: ChunkSource,
    dest: Path,
    *,
    progress: ProgressCallback | None = None,
    window: int = REASSEMBLY_WINDOW,
) -> None:
    """Write the file described by ``manifest`` to ``dest``, from chunks of ``source``.

    Each stripe needs any ``k`` of its shares (data chunks preferred; a short last stripe's
    absent data chunks count as known zeros). Every chunk is verified (SHA-256 and length);
    a bad one counts as missing. The output is written to a temp file in ``dest``'s directory,
    fsynced and atomically renamed to ``dest`` (replacing it) only when complete.
    ``progress(done_bytes, size)`` is called after each stripe is written.

    Raises :class:`FileUnavailableError` if some stripe lacks more than ``m`` chunks; its
    ``missing`` maps each such stripe (those found before stopping, at least one) to the chunk IDs
    that could not be obtained. On that, on any error from ``source`` other than not-found/corrupt,
    and on cancellation, the temp file is removed and ``dest`` is left as it was. Memory: at
    most about ``window`` stripes.
    """
    dest = Path(dest)
    rs = ReedSolomon(manifest.k, manifest.m)
    n = len(manifest.stripes)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
    fd = await trio.to_thread.run_sync(
        os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
    )
    fd_open = True
    try:
        missing: dict[int, list[bytes]] = {}
        written = 0
        limiter = trio.CapacityLimiter(REASSEMBLY_THREADS)
        sem = trio.Semaphore(max(1, window))
        send, recv = trio.open_memory_channel[_Slot](max(1, window))

        async def fill(slot: _Slot) -> None:
            try:
                slot.data = await fetch_stripe(manifest, source, slot.index, rs, limiter)
            except _StripeUnavailable as exc:
                slot.missing = exc.stripe_missing
            finally:
                slot.done.set()

        async def produce(nursery: trio.Nursery) -> None:
            async with send:
                for s in range(n):
                    await sem.acquire()
                    if missing:
                        sem.release()
                        return
                    slot = _Slot(s)
                    nursery.start_soon(fill, slot)
                    await send.send(slot)

        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, nursery)
                async with recv:
                    async for slot in recv:
                        await slot.done.wait()
                        if slot.missing is not None:
                            missing[slot.index] = slot.missing
                        elif not missing and slot.data is not None:
                            with naming_file(tmp):
                                await trio.to_thread.run_sync(
                                    _write_all, fd, slot.data, limiter=limiter
                                )
                            written += manifest.stripe_data_size(slot.index)
                            if progress is not None:
                                progress(written, manifest.size)
                        slot.data = None
                        sem.release()
        if missing:
            stripes = ", ".join(str(s) for s in sorted(missing))
            ids = ", ".join(c.hex() for s in sorted(missing) for c in missing[s])
            raise FileUnavailableError(
                f"file {manifest.name!r} ({manifest.file_id.hex()}) is unavailable: stripe(s)"
                f" {stripes} lack more than m={manifest.m} chunks; missing chunk(s): {ids}",
                missing,
            )
        fd_open = False
        with naming_file(tmp):
            await trio.to_thread.run_sync(finish_temp_file, fd, tmp, dest)
        if progress is not None and n == 0:
            progress(0, 0)
    except BaseException:
        if fd_open:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
