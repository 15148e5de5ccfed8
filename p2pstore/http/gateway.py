"""The gateway: ``GET``/``HEAD /files/{file_id}`` streamed in order, and ``POST /files`` uploads.

A read never waits for the whole file. Stripes already stored are read from the store; the
others come from a sequential-mode :class:`~p2pstore.transfer.download.Download` whose window
(:data:`DEFAULT_WINDOW_STRIPES` stripes from the reading position) moves forward as the client
consumes them, keeping the parallel fan-out to many peers inside the window. A ``Range`` read
sets the window to its own stripes, so only those are fetched.

**Nothing unverified is sent**: a stripe whose data chunks all arrived over the network is sent
from the chunks the download verified against their IDs on receipt (kept in memory only for the
stripes in the window, so at most ``window x k x chunk size`` bytes per read); any other stripe
(completed with parity, or partly stored already) is read back from the local store through
:func:`~p2pstore.reassembly.fetch_stripe`, which checks each chunk against its ID and rebuilds
from parity. If the file turns out to be unavailable mid-response, the connection is closed
before the promised ``Content-Length``: the client sees a short read, never wrong bytes.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import secrets
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio

from .._groups import collapse_exception_groups
from ..erasure import ReedSolomon
from ..errors import (
    ChunkNotFoundError,
    CorruptChunkError,
    NotDispersedError,
    P2PStoreError,
    TransferCancelledError,
)
from ..manifest import Manifest, validate_name
from ..reassembly import fetch_stripe
from ..transfer.progress import Progress
from .budget import ReadBudget
from .server import HttpError, Request, Response, parse_decimal

if TYPE_CHECKING:
    from ..node import Node, Transfer
    from ..store import ChunkStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW_STRIPES = 16
"""At most this many stripes fetched ahead of the reader (see :data:`DEFAULT_WINDOW_BYTES`)."""

DEFAULT_WINDOW_BYTES = 64 << 20
"""Bytes fetched ahead of the reader (at least one stripe): 16 stripes at 1 MiB x k=4, enough
to keep several peers' pipelines full, small enough that a client reading the start does not pull
the whole file. In bytes, not stripes, because the manifest (untrusted) sets the stripe size."""

LOCAL_CHECK_THREADS = 2
"""Threads one HTTP face uses at once to check whether a file is complete locally."""

READ_AHEAD_STRIPES = 3
"""Stripes read back from the store (and verified) ahead of the socket writer."""

MANIFEST_TIMEOUT = 60.0
"""Seconds to find a remote file's providers and manifest before answering 504."""

DEFAULT_MAX_UPLOAD_BYTES = 64 << 30
"""Largest ``POST /files`` body (64 GiB); raise it in the HTTP settings for bigger files."""

IMMUTABLE = "public, max-age=31536000, immutable"
"""Cache-Control of file responses: a file ID names one content forever."""


class RangeNotSatisfiable(Exception):
    """The ``Range`` header asks for bytes outside the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=...`` -> ``(start, end)`` (end exclusive), or ``None`` for the whole file.

    Only a single range is honoured; multiple ranges, other units and malformed ranges (non-ASCII
    digits included) are ignored (the whole file is sent, as RFC 9110 allows). Raises
    :class:`RangeNotSatisfiable` for a range outside the file.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    last_n = parse_decimal(last) if last else None
    if not first:  # suffix: the last N bytes
        if last_n is None:
            return None
        if last_n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - last_n), size
    start = parse_decimal(first)
    if start is None or (last and last_n is None):
        return None
    end = size if last_n is None else min(last_n + 1, size)
    if last_n is not None and last_n < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


def content_disposition(name: str, *, attachment: bool = False) -> str:
    """``inline``/``attachment`` with an ASCII fallback name and the UTF-8 ``filename*``."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def content_type(name: str) -> str:
    """The media type guessed from the file name (``application/octet-stream`` if unknown)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def stripes_for(manifest: Manifest, start: int, end: int) -> range:
    """The stripes holding bytes ``[start, end)`` of the file."""
    if end <= start:
        return range(0)
    per = manifest.layout.stripe_bytes
    return range(start // per, (end - 1) // per + 1)


@dataclass
class _Sink:
    """The download's sink for a gateway read: records stripes complete in the store, and keeps
    the verified data chunks of the stripes the reader still wants (those in its window), so a
    stripe whose data chunks all came over the network is sent without reading it back."""

    on_manifest: Callable[[Manifest], None]
    wanted: Callable[[int], bool] = lambda _stripe: False
    budget: ReadBudget = field(default_factory=ReadBudget)
    done: set[int] = field(default_factory=set)
    changed: trio.Event = field(default_factory=trio.Event)
    manifest: Manifest | None = None
    chunks: dict[int, dict[int, bytes]] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)  # stripes the budget had no room for

    def factory(self, manifest: Manifest, dest: Path) -> _Sink:
        self.on_manifest(manifest)
        return self

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def take(self, stripe: int) -> list[bytes] | None:
        """The stripe's data chunks in order if all were kept (their budget bytes pass to the
        caller, who gives them back), else ``None`` (any kept ones are given back); forgets them."""
        kept = self.chunks.pop(stripe, {})
        assert self.manifest is not None
        d = self.manifest.data_chunk_count(stripe)
        if len(kept) == d:
            return [kept[j] for j in range(d)]
        self.budget.give(sum(map(len, kept.values())))
        return None

    async def open(self) -> None:
        return None

    async def write_chunk(self, stripe: int, share: int, data: bytes) -> None:
        # Called by the download only with chunks it verified against their IDs.
        assert self.manifest is not None
        if (
            share < self.manifest.data_chunk_count(stripe)
            and stripe not in self.done  # a late endgame copy of a stripe already complete
            and stripe not in self.skipped
            and share not in self.chunks.get(stripe, {})
            and self.wanted(stripe)
        ):
            if self.budget.try_take(len(data)):
                self.chunks.setdefault(stripe, {})[share] = data
            else:  # no room: the stripe will be read back from the store
                self.skipped.add(stripe)

    async def complete_stripe(self, stripe: int, source: object) -> None:
        self.done.add(stripe)
        self.wake()

    async def finish(self) -> None:
        return None

    def abort(self) -> None:
        """Forget every kept chunk and give its bytes back (idempotent)."""
        self.budget.give(sum(len(c) for kept in self.chunks.values() for c in kept.values()))
        self.chunks.clear()


class FileRead:
    """One gateway read of ``file_id``: learns the manifest, then streams a byte range."""

    def __init__(
        self,
        node: Node,
        file_id: bytes,
        range_header: str | None,
        window: int,
        *,
        fetch_data: bool = True,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        budget: ReadBudget | None = None,
        check_limiter: trio.CapacityLimiter | None = None,
        peer_hint: tuple[str, int] | None = None,
    ) -> None:
        self.node = node
        self.fetch_data = fetch_data  # False for HEAD and conditional hits: the manifest only
        self.file_id = file_id
        self.range_header = range_header
        self.max_window_stripes = window
        self.window_bytes = window_bytes
        self.window_stripes = window  # narrowed to window_bytes once the manifest is known
        self.budget = budget or ReadBudget()
        self.check_limiter = check_limiter or trio.CapacityLimiter(LOCAL_CHECK_THREADS)
        self.too_large = False  # one stripe does not fit the budget: refused (507)
        self.manifest: Manifest | None = None
        self.span: tuple[int, int] | None = None  # bytes [start, end)
        self.unsatisfiable = False
        self.failure: BaseException | None = None
        self.finished = False
        self.was_local = False  # served from a complete local copy, without a download
        self._stripes = range(0)
        self._sink = _Sink(self._manifest_known, self._in_window, self.budget)
        self._window = (0, 0)
        self._manifest_event = trio.Event()
        self.local: Manifest | None = None  # set by :meth:`check_local` before the read runs
        # Unpinned cache: a read must not pin, record or announce a file (any web page may
        # trigger one); the chunks it fetches stay until the next gc.
        self.download = node.streaming_download(
            file_id, sink=self._sink.factory, window=(0, 0), cache_only=True, peer_hint=peer_hint
        )

    def _manifest_known(self, manifest: Manifest) -> None:
        """Called by the download (sink factory) before its scheduler exists."""
        self.manifest = self._sink.manifest = manifest
        per = manifest.layout.stripe_bytes
        self.window_stripes = max(1, min(self.max_window_stripes, self.window_bytes // per))
        self.too_large = not self.budget.fits(per)
        try:
            span = parse_range(self.range_header, manifest.size)
        except RangeNotSatisfiable:
            self.unsatisfiable = True
            span = (0, 0)
        self.span = span if span is not None else (0, manifest.size)
        self._stripes = stripes_for(manifest, *self.span)
        if self.fetch_data and not self.unsatisfiable and not self.too_large:
            self._set_window(self._stripes.start if self._stripes else 0)
        self._manifest_event.set()

    def _in_window(self, stripe: int) -> bool:
        return self._window[0] <= stripe < self._window[1]

    def _set_window(self, first: int) -> None:
        stop = self._stripes.stop if self._stripes else first
        end = max(first, min(first + self.window_stripes, stop))
        self._window = (first, end)
        # Endgame duplicates only for the tail of the read (see DownloadScheduler.set_window).
        self.download.set_window(first, end, endgame=end == stop)

    async def check_local(self) -> Manifest | None:
        """Set and return :attr:`local`: the manifest if the whole file is in the local store
        (no download needed), else ``None``."""
        self.local = await self._local_manifest()
        return self.local

    async def _local_manifest(self) -> Manifest | None:
        store = self.node.store
        if not store.has_chunk(self.file_id):
            return None
        try:
            manifest = await store.load_manifest(self.file_id)
        except (P2PStoreError, OSError):
            return None
        # Up to 2^21 IDs looked up in SQLite (under the index lock that the store's workers
        # also take) and counted: in a thread, never on the event loop, and at most
        # LOCAL_CHECK_THREADS at once, since any client can ask for it.
        complete = await trio.to_thread.run_sync(
            _complete_in, store, manifest, limiter=self.check_limiter
        )
        return manifest if complete else None

    async def run_download(self) -> None:
        """The download task: records a failure instead of raising (the reader reports it).

        A file already complete here is read from the store without a download (so reading it
        changes nothing about it, e.g. its pin)."""
        try:
            local = self.local
            if local is not None:
                self.was_local = True
                self._manifest_known(local)
                self._sink.done.update(range(len(local.stripes)))
                self.finished = True
                return
            await self.download.run()
            self.finished = True
        except (P2PStoreError, OSError) as exc:
            self.failure = exc
        finally:
            self._manifest_event.set()
            self._sink.wake()

    async def wait_manifest(self) -> Manifest:
        """The manifest, once the download has it; raises the download's failure."""
        await self._manifest_event.wait()
        if self.manifest is None:
            raise self.failure or P2PStoreError("the download ended without a manifest")
        return self.manifest

    async def changed(self) -> None:
        """Wait for the next stripe completion or the end of the download."""
        await self._sink.changed.wait()

    async def _stripe_ready(self, stripe: int) -> None:
        while stripe not in self._sink.done:
            if self.failure is not None:
                raise self.failure
            if self.finished:
                raise P2PStoreError(f"stripe {stripe} missing after the download finished")
            await self._sink.changed.wait()

    async def stream(self, send: Callable[[bytes], Awaitable[None]]) -> int:
        """Send bytes ``span`` in order as their stripes are verified; returns bytes sent."""
        manifest = self.manifest
        assert manifest is not None
        assert self.span is not None
        start, end = self.span
        rs = ReedSolomon(manifest.k, manifest.m)
        limiter = trio.CapacityLimiter(2)
        per = manifest.layout.stripe_bytes
        stripes = list(self._stripes)
        slots: dict[int, tuple[list[bytes], int]] = {}  # stripe -> (data chunks, budget bytes)
        ready: dict[int, trio.Event] = {s: trio.Event() for s in stripes}
        room = trio.Semaphore(READ_AHEAD_STRIPES)
        budget = self.budget
        sent = 0

        async def produce() -> None:
            for s in stripes:
                await room.acquire()
                await self._stripe_ready(s)
                kept = self._sink.take(s)
                if kept is not None:
                    slots[s] = (kept, sum(map(len, kept)))
                else:  # completed with parity or from the store: read it back there
                    if budget.used + per > budget.total:
                        self._sink.abort()  # never wait for room our own kept chunks fill
                    await budget.take(per)
                    try:
                        chunks = await fetch_stripe(manifest, self.node.store, s, rs, limiter)
                    except BaseException:
                        budget.give(per)
                        raise
                    slots[s] = (chunks, per)
                ready[s].set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for s in stripes:
                    self._set_window(s)
                    await ready[s].wait()
                    chunks, held = slots[s]
                    pos = s * per  # the file offset of the chunk being sent
                    for chunk in chunks:
                        lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
                        if lo < hi:
                            await send(chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi])
                            sent += hi - lo
                        pos += len(chunk)
                    del slots[s]
                    budget.give(held)
                    room.release()
                nursery.cancel_scope.cancel()
        finally:
            budget.give(sum(held for _, held in slots.values()))
            slots.clear()
            self._sink.abort()
        return sent


def _complete_in(store: ChunkStore, manifest: Manifest) -> bool:
    """Whether ``store`` holds enough data chunks of every stripe (blocking: runs in a thread)."""
    present = store.has_chunks(manifest.chunk_ids())
    pos = 0
    for s, ids in enumerate(manifest.stripes):
        if sum(present[pos : pos + len(ids)]) < manifest.data_chunk_count(s):
            return False
        pos += len(ids)
    return True


def _file_headers(manifest: Manifest, file_id: bytes, request: Request) -> list[tuple[str, str]]:
    return [
        ("etag", f'"{file_id.hex()}"'),
        ("cache-control", IMMUTABLE),
        ("accept-ranges", "bytes"),
        ("content-type", content_type(manifest.name)),
        (
            "content-disposition",
            content_disposition(manifest.name, attachment="download" in request.query),
        ),
        ("x-content-type-options", "nosniff"),
        # A stored HTML file must not run as this origin (it could drive the API).
        ("content-security-policy", "sandbox"),
    ]


def parse_file_id(text: str) -> bytes:
    """A 64-hex-digit file ID from a URL, or ``HttpError(400)``."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise HttpError(400, "bad_request", "a file ID is 64 hexadecimal characters")
    return value


async def serve_file(
    node: Node,
    request: Request,
    response: Response,
    file_id: bytes,
    *,
    window: int,
    window_bytes: int = DEFAULT_WINDOW_BYTES,
    budget: ReadBudget | None = None,
    check_limiter: trio.CapacityLimiter | None = None,
    refuse_remote: Callable[[Response], Awaitable[None]] | None = None,
) -> None:
    """Answer ``GET``/``HEAD /files/{file_id}`` (see the module docstring).

    ``refuse_remote``: answers (or raises :class:`HttpError`) instead of fetching a file that is
    not complete locally (the request may only read what is already stored)."""
    if_none_match = request.header("if-none-match")
    etag = f'"{file_id.hex()}"'
    conditional_hit = if_none_match is not None and etag in {
        t.strip() for t in if_none_match.split(",")
    }
    fetch = request.method == "GET" and not conditional_hit
    read = FileRead(
        node,
        file_id,
        request.header("range"),
        window,
        fetch_data=fetch,
        window_bytes=window_bytes,
        budget=budget,
        check_limiter=check_limiter,
    )
    if await read.check_local() is None and refuse_remote is not None:
        await refuse_remote(response)
        return
    name = file_id.hex()[:16]
    with _cancel_as_http(), node.tracked_transfer("gateway", file_id, name) as transfer:

        def on_progress(p: Progress, labels: dict[Hashable, str]) -> None:
            active = {labels[x]: pp.rate for x, pp in p.per_peer.items() if pp.active}
            transfer.peers, transfer.peer_rates = len(active), active

        read.download.progress_callback = on_progress
        with collapse_exception_groups():
            await _serve_read(read, request, response, transfer, file_id, conditional_hit)


async def _serve_read(
    read: FileRead,
    request: Request,
    response: Response,
    transfer: Transfer,
    file_id: bytes,
    conditional_hit: bool,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read.run_download)
        try:
            with trio.fail_after(MANIFEST_TIMEOUT):
                manifest = await read.wait_manifest()
        except trio.TooSlowError:
            raise HttpError(504, "timeout", "the file's manifest was not found in time") from None
        except P2PStoreError as exc:
            raise _error_for(exc) from None
        transfer.name = manifest.name
        headers = _file_headers(manifest, file_id, request)
        assert read.span is not None
        start, end = read.span
        whole = (start, end) == (0, manifest.size)
        if conditional_hit:
            await response.start(304, [h for h in headers if h[0] in ("etag", "cache-control")])
        elif read.unsatisfiable:
            await response.start(
                416, [("content-range", f"bytes */{manifest.size}"), ("content-length", "0")]
            )
        elif read.too_large and request.method == "GET":
            raise HttpError(
                507,
                "too_large",
                f"this file's stripes ({manifest.layout.stripe_bytes} bytes) exceed the gateway's "
                f"read budget ({read.budget.total} bytes); use p2pstore get",
            )
        elif request.method == "HEAD":
            await response.start(200, [*headers, ("content-length", str(manifest.size))])
        else:
            partial = request.header("range") is not None and not whole
            extra = [("content-length", str(end - start))]
            if partial:
                extra.append(("content-range", f"bytes {start}-{end - 1}/{manifest.size}"))
            transfer.bytes_total = end - start
            await response.start(206 if partial else 200, [*headers, *extra])

            async def send(data: bytes) -> None:
                await response.send(data)
                transfer.bytes_done += len(data)

            try:
                await read.stream(send)
            except (P2PStoreError, ChunkNotFoundError, CorruptChunkError) as exc:
                log.info("gateway: %s failed mid-response: %s", file_id.hex()[:16], exc)
                raise HttpError(502, "unavailable", str(exc)) from None
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def _cancel_as_http() -> Iterator[None]:
    """A transfer stopped by ``p2pstore cancel`` answers 503 ``cancelled`` (or, once the
    response has started, ends it early as any mid-response failure, without a traceback)."""
    try:
        yield
    except TransferCancelledError as exc:
        raise HttpError(503, "cancelled", str(exc)) from None


def _error_for(exc: BaseException) -> HttpError:
    from ..control import error_code, error_message

    code = error_code(exc)
    return HttpError(STATUS_FOR_CODE.get(code, 500), code, error_message(exc))


STATUS_FOR_CODE = {
    "not_found": 404,
    "unavailable": 404,
    "bad_manifest": 502,
    "quota": 507,
    "cancelled": 503,
    "config": 400,
    "protocol": 400,
    "bad_request": 400,
    "os": 500,
    "failed": 500,
    "internal": 500,
}
"""HTTP status for each control-protocol error code."""


async def receive_upload(
    node: Node, request: Request, response: Response, *, max_bytes: int
) -> None:
    """``POST /files?name=NAME&disperse=0|1``: store the body as a file and publish it."""
    name = request.query.get("name") or "upload"
    try:
        validate_name(name)
    except P2PStoreError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    disperse = request.query.get("disperse", "1").lower() not in ("0", "false", "no", "off")
    directory = node.data_dir / "http-uploads"
    await trio.to_thread.run_sync(lambda: directory.mkdir(mode=0o700, exist_ok=True))
    tmp = directory / f"{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    size = 0
    try:
        with (
            _cancel_as_http(),
            node.tracked_transfer("upload", None, name) as transfer,
            os.fdopen(fd, "wb") as fh,
        ):
            async for piece in request.body(max_bytes):
                await trio.to_thread.run_sync(fh.write, piece)
                size += len(piece)
                transfer.bytes_done = size
            await trio.to_thread.run_sync(fh.flush)
        not_dispersed: str | None = None
        try:
            file_id = await node.put(tmp, name=name, disperse=disperse)
        except NotDispersedError as exc:
            # Stored (and pinned) here but on no other peer: a result, as the control socket's
            # put answers it, not a failure without the file ID.
            file_id, not_dispersed = exc.file_id, str(exc)
        except (P2PStoreError, OSError) as exc:
            raise _error_for(exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    await response.json(
        {
            "file_id": file_id.hex(),
            "name": name,
            "size": size,
            "url": f"/files/{file_id.hex()}",
            "dispersed": disperse and not_dispersed is None,
            "not_dispersed": not_dispersed,
        },
        201,
        [("location", f"/files/{file_id.hex()}")],
    )
