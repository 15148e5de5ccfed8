"""The destination file of a download, written in whatever order chunks arrive.

A download writes each verified data chunk straight to its offset in a temporary file beside the
destination, and rebuilds from the local store only the stripes whose data chunks did not all
arrive over the network (those completed with parity, or already stored by an earlier run). So
when the last chunk lands, only an fsync and a rename remain: there is no second pass that reads
the whole file back. Each write also starts its own writeback, so that fsync is short.

The temporary file is ``.<name>.<random>.part`` in the destination's directory; :meth:`finish`
fsyncs it and renames it into place, :meth:`abort` removes it. Either way nothing half-written is
ever visible under the destination name. While a download runs it holds an exclusive ``flock``
on its temporary file, so one left by a download that died (``kill -9``, power loss) is told
apart from a live one: :func:`remove_dead_parts` deletes the dead ones beside a destination.
Nothing in them is lost: every verified chunk also went to the store, which is what a new
download resumes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import stat
from pathlib import Path

import trio

from ..erasure import ReedSolomon
from ..errors import CorruptChunkError, FileUnavailableError
from ..manifest import Manifest
from ..reassembly import (
    ChunkSource,
    fetch_stripe,
    finish_temp_file,
    naming_file,
    start_writeback,
)

__all__ = ["REBUILD_CONCURRENCY", "LocalChunksLostError", "OutputFile", "remove_dead_parts"]

_RANDOM_HEX = 8  # secrets.token_hex(4) in the temporary file's name

#: Stripes rebuilt from the store at once: each holds up to k chunks in memory.
REBUILD_CONCURRENCY = 4
#: Worker threads for writes and rebuilds of one download (about the number of cores).
OUTPUT_THREADS = 2


class LocalChunksLostError(FileUnavailableError):
    """A stripe the download counted as complete from the local store could not be rebuilt: some
    of its stored chunks turned out corrupt or gone when read (they are quarantined and dropped
    from the index by that read). Running the download again fetches them from the network."""


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write ``data`` at ``offset`` and start its writeback at once (:func:`start_writeback`):
    the output is then written to disk while the download runs, so the final fsync has little
    left to wait for (at 40 MB/s the page cache would otherwise hold the whole file until then)."""
    view = memoryview(data)
    start = offset
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    start_writeback(fd, start, offset - start)


class OutputFile:
    """A file being assembled for ``manifest`` at ``dest``; see the module docstring.

    Use ``await open()`` first, then :meth:`write_chunk` / :meth:`complete_stripe` from any number
    of tasks, then :meth:`finish`, or :meth:`abort` on failure.
    """

    def __init__(self, manifest: Manifest, dest: Path) -> None:
        self.manifest = manifest
        self.dest = Path(dest)
        self.tmp = self.dest.parent / f".{self.dest.name}.{secrets.token_hex(4)}.part"
        self._fd: int | None = None
        self._written: list[set[int]] = [set() for _ in manifest.stripes]
        self._rs = ReedSolomon(manifest.k, manifest.m)
        self._threads = trio.CapacityLimiter(OUTPUT_THREADS)
        self._rebuilds = trio.Semaphore(REBUILD_CONCURRENCY)

    async def open(self) -> None:
        """Create the temporary file, sized to the whole file (sparse until written)."""

        def create() -> int:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.tmp, flags, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "alive": see remove_dead_parts
                os.ftruncate(fd, self.manifest.size)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.tmp)
                raise
            return fd

        self._fd = await trio.to_thread.run_sync(create)

    def _offset(self, stripe: int, share: int) -> int:
        return self.manifest.layout.stripe_offset(stripe) + share * self.manifest.chunk_size

    def is_data(self, stripe: int, share: int) -> bool:
        """Whether ``share`` of ``stripe`` is a data chunk (the others are parity)."""
        return share < self.manifest.data_chunk_count(stripe)

    async def write_chunk(self, stripe: int, share: int, data: bytes) -> None:
        """Write a verified data chunk at its place; parity chunks are ignored."""
        if not self.is_data(stripe, share) or share in self._written[stripe]:
            return
        assert self._fd is not None, "open() first"
        fd = self._fd
        with naming_file(self.tmp):  # a full disk names the output (its temp file), not nothing
            await trio.to_thread.run_sync(
                _pwrite_all, fd, data, self._offset(stripe, share), limiter=self._threads
            )
        self._written[stripe].add(share)

    async def complete_stripe(self, stripe: int, source: ChunkSource) -> None:
        """Write the data chunks of ``stripe`` not written yet, from ``source`` (the store),
        decoding from parity where needed. Rebuilt chunks are checked against their IDs.

        Raises :class:`LocalChunksLostError` if ``source`` lacks what the stripe needs (chunks
        it was believed to hold were found corrupt or missing).
        """
        missing = [
            j
            for j in range(self.manifest.data_chunk_count(stripe))
            if j not in self._written[stripe]
        ]
        if not missing:
            return
        async with self._rebuilds:
            try:
                data = await fetch_stripe(self.manifest, source, stripe, self._rs, self._threads)
            except FileUnavailableError as exc:
                raise LocalChunksLostError(
                    f"stripe {stripe}: {exc} from the local store", exc.missing
                ) from exc
            ids = self.manifest.stripes[stripe]

            def check_and_write() -> None:
                assert self._fd is not None
                for j in missing:
                    if hashlib.sha256(data[j]).digest() != ids[j]:
                        raise CorruptChunkError(ids[j], f"rebuilt chunk {ids[j].hex()} is wrong")
                    _pwrite_all(self._fd, data[j], self._offset(stripe, j))

            with naming_file(self.tmp):
                await trio.to_thread.run_sync(check_and_write, limiter=self._threads)
        self._written[stripe].update(missing)

    def all_written(self) -> bool:
        """Whether every data chunk of every stripe is in the file."""
        return all(
            len(self._written[s]) == self.manifest.data_chunk_count(s)
            for s in range(len(self.manifest.stripes))
        )

    async def finish(self) -> None:
        """Fsync and rename into place. Raises if some data chunk was never written."""
        if not self.all_written():
            raise FileUnavailableError("internal error: the output is incomplete")
        fd, self._fd = self._fd, None
        assert fd is not None
        with naming_file(self.tmp):
            await trio.to_thread.run_sync(finish_temp_file, fd, self.tmp, self.dest)

    def abort(self) -> None:
        """Remove the temporary file (safe to call at any time; does not block on anything
        slower than an unlink, so it is fine on the cleanup path of a cancelled task)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _part_pattern(dest: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{dest.name}.") + f"[0-9a-f]{{{_RANDOM_HEX}}}" + r"\.part")


def remove_dead_parts(dest: Path) -> list[Path]:
    """Delete the temporary files of downloads to ``dest`` that are no longer running; returns
    them. Blocking (a directory scan). A temporary file whose ``flock`` is held (a download in
    progress, in this process or another) is left alone, as is anything that is not a regular
    file of this user's (a link is never followed)."""
    dest = Path(dest)
    pattern = _part_pattern(dest)
    removed: list[Path] = []
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        path = dest.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
