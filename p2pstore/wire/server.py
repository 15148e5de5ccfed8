"""The chunk server: answers GET, HAVE and PUT on secure channels from a local store."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Protocol

import trio

from ..errors import (
    ChunkNotFoundError,
    CorruptChunkError,
    P2PStoreError,
    ProtocolError,
    QuotaExceededError,
)
from ..identity import Identity
from ..ratelimit import RateLimiter
from .channel import DeferredChunk, SecureChannel, accept
from .config import THREAD_THRESHOLD_BYTES, WireConfig
from .holdings import HoldingsHub, Subscription, host_key
from .messages import (
    MAX_RETRY_MS,
    MAX_UPDATE_INDICES,
    Ack,
    Bitmap,
    Busy,
    Cancel,
    Chunk,
    Error,
    ErrorCode,
    Get,
    Have,
    HaveUpdate,
    Message,
    Missing,
    Put,
    Watch,
)
from .uploads import UploadBusy, UploadGate

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A PUT that fails with one of these is refused as ``QUOTA_EXCEEDED`` (no room here)."""


class Seeding(Protocol):
    """Super-seeding (``p2pstore.transfer.superseed.SuperSeeder`` provides it): which chunks of
    a fully held file to offer each watcher. ``join`` returns ``(chunk count, offered indices)``
    or ``None`` (offer the plain bitmap); later offers are added to the watcher's subscription
    by ``served`` (a chunk is being sent to a peer) and ``tick`` (time passed; ``waiting``: the
    watcher has requests queued in this node's upload gate, so it is not idle)."""

    async def join(
        self, file_id: bytes, peer: bytes, sub: Subscription, now: float
    ) -> tuple[int, list[int]] | None: ...

    def leave(self, file_id: bytes, peer: bytes, sub: Subscription) -> None: ...

    def served(self, peer: bytes, chunk_id: bytes, now: float) -> None: ...

    def tick(self, file_id: bytes, peer: bytes, now: float, *, waiting: bool = False) -> None: ...


class ServerStore(Protocol):
    """What the server needs of the store (``p2pstore.store.ChunkStore`` provides it).

    ``chunk_size`` is the stored chunk's size or ``None``; ``read_chunk_into`` (blocking: it is
    called from a worker thread) fills ``buffer_for(size)`` with the chunk's verified bytes and
    returns it, or raises ``ChunkNotFoundError``/``CorruptChunkError``; ``put_chunk`` verifies,
    stores and returns whether the chunk was new, or raises ``QuotaExceededError`` or
    ``CorruptChunkError``; ``have_bitmap`` is ``None`` for an unknown file.
    """

    def chunk_size(self, chunk_id: bytes) -> int | None: ...

    def read_chunk_into(
        self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]
    ) -> memoryview: ...

    async def put_chunk(
        self, chunk_id: bytes, data: bytes, *, enforce_quota: bool = False
    ) -> bool: ...

    async def have_bitmap(self, file_id: bytes) -> bytes | None: ...


async def sha256_digest(data: bytes) -> bytes:
    """SHA-256 of ``data``, in a worker thread when it is big enough to be worth it."""
    if len(data) >= THREAD_THRESHOLD_BYTES:
        return await trio.to_thread.run_sync(_digest, data)
    return _digest(data)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def data_intact(message: Chunk | Put) -> bool:
    """Whether a CHUNK's or PUT's data hashes to its ID: as the channel found on receipt, or
    computed now for a message it did not check."""
    if message.intact is not None:
        return message.intact
    return hmac.compare_digest(await sha256_digest(message.data), message.chunk_id)


READ_THREADS = max(4, os.cpu_count() or 1)
"""Worker threads one server uses at once to read, verify and seal the chunks it serves."""

MAX_WATCHES_PER_CONNECTION = 8
"""WATCHes one connection may keep open (each holds one of its in-flight request slots)."""

UPDATE_BATCH_DELAY = 0.05
"""Seconds a HAVE_UPDATE waits after the first new chunk, so that chunks stored together (a
stripe's writes, a burst of arrivals) travel in one message."""

#: Seconds between a super-seeded watch's checks for an idle watcher (see ``Seeding.tick``).
SEED_TICK_INTERVAL = 0.5

WatchHook = Callable[[bytes, str, int, bytes], None]
"""``on_watch(peer_node_id, peer_host, peer_port, file_id)``: a verified peer WATCHes a file and
serves chunks on ``peer_host:peer_port`` (its connection's source IP and the port it named)."""


class _Request:
    """A request being served: its cancel scope, and a flag that worker threads may read."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.scope.cancel()

    def wanted(self) -> bool:
        return not self.cancelled


class ChunkServer:
    """Serves the chunk protocol from ``store`` to any peer that completes the handshake.

    Limits from ``config``: concurrent connections (extra ones are closed at once), requests in
    flight per connection (the server stops reading beyond it), handshake, idle and per-frame
    timeouts. An error on one connection closes that connection only and is logged at debug.
    Chunk bytes sent are charged to ``rate_limiter`` if given (share one between servers to cap a
    node's total upload). ``on_put(chunk_id)`` is called after every acknowledged PUT (new or
    already stored: announcing twice is harmless, missing one is not); it must not block (start a
    task from it if needed). PUTs are stored with ``enforce_quota=True``.

    Swarming (the ``swarm`` feature): with ``uploads``, chunk bytes wait for their peer's fair
    share of the node's upload rate (instead of ``rate_limiter``'s first come, first served), and
    a request that would queue too long is answered BUSY with a retry hint (to peers that speak
    ``swarm``; others just wait). WATCH is answered from the store's index and then from
    ``holdings``, where the node's downloads publish each chunk they store; ``on_watch`` (must not
    block) hears of every peer that watches a file and names its own port.
    """

    def __init__(
        self,
        identity: Identity,
        store: ServerStore,
        config: WireConfig | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        on_put: Callable[[bytes], None] | None = None,
        uploads: UploadGate | None = None,
        holdings: HoldingsHub | None = None,
        on_watch: WatchHook | None = None,
        seeding: Seeding | None = None,
    ) -> None:
        self.identity = identity
        self.store = store
        self.config = config or WireConfig()
        self.rate_limiter = rate_limiter
        self.on_put = on_put
        self.uploads = uploads
        self.holdings = holdings
        self.on_watch = on_watch
        self.seeding = seeding
        self.busy_replies = 0
        """BUSY replies sent (requests refused by the upload queue)."""
        self.active_connections = 0
        # Chunk reads (each also verifies and seals its frame) share a few threads, as the
        # store's own reads do: a slow disk then cannot tie up every worker thread.
        self._read_limiter = trio.CapacityLimiter(READ_THREADS)
        self.refused_connections = 0
        self.failed_connections = 0

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 = any free port) and serve until cancelled.

        Use ``address = await nursery.start(server.serve, host, port)``: it returns once listening,
        with the bound ``(host, port)``. Each connection is a task of this call's nursery, so
        cancelling it closes every connection.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self.handle_stream, listeners))
            task_status.started((str(sockname[0]), int(sockname[1])))

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one inbound connection to its end, then close it. Never raises (but Cancelled)."""
        if self.active_connections >= self.config.max_connections:
            self.refused_connections += 1
            await trio.aclose_forcefully(stream)
            return
        self.active_connections += 1
        try:
            channel = await accept(stream, self.identity, self.config)
            await self._serve_channel(channel)
        except (P2PStoreError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.failed_connections += 1
            log.debug("connection closed: %s", exc)
        except Exception:
            self.failed_connections += 1
            log.warning("connection closed by an unexpected error", exc_info=True)
        finally:
            self.active_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_channel(self, channel: SecureChannel) -> None:
        error: BaseException | None = None
        running: dict[int, _Request] = {}
        watches: set[int] = set()
        async with trio.open_nursery() as nursery:
            slots = trio.Semaphore(self.config.max_in_flight)

            async def dispatch(message: Message) -> None:
                if isinstance(message, Cancel):
                    cancelled = running.get(message.request_id)
                    if cancelled is not None:
                        cancelled.cancel()
                    return
                if not isinstance(message, Get | Have | Put | Watch):
                    raise ProtocolError(f"unexpected {type(message).__name__} from a client")
                if message.request_id in running:
                    # Replies are matched by ID: a reused one would make them ambiguous and let
                    # a connection hold more watches than it is allowed.
                    raise ProtocolError(f"request id {message.request_id} is already in flight")
                if isinstance(message, Watch):
                    if "swarm" not in channel.peer.features:
                        raise ProtocolError("WATCH was not negotiated")
                    if len(watches) >= MAX_WATCHES_PER_CONNECTION:
                        reply = Error(message.request_id, ErrorCode.TOO_MANY_WATCHES, "too many")
                        await channel.send(reply)
                        return
                    watches.add(message.request_id)
                await slots.acquire()
                state = running[message.request_id] = _Request()
                nursery.start_soon(
                    self._serve_request, channel, message, slots, state, running, watches
                )

            try:
                await channel.run(dispatch)
            except Exception as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _serve_request(
        self,
        channel: SecureChannel,
        request: Get | Have | Put | Watch,
        slots: trio.Semaphore,
        state: _Request,
        running: dict[int, _Request],
        watches: set[int],
    ) -> None:
        try:
            with state.scope:
                if isinstance(request, Get):
                    await self._serve_get(channel, request, state)
                elif isinstance(request, Watch):
                    await self._serve_watch(channel, request)
                elif isinstance(request, Have):
                    bitmap = await self.store.have_bitmap(request.file_id)
                    await channel.send(Bitmap(request.request_id, request.file_id, bitmap))
                else:
                    await self._serve_put(channel, request)
        except ProtocolError:
            pass  # the channel closed under us; its run() reports why
        except Exception as exc:
            log.warning("request %r failed", type(request).__name__, exc_info=True)
            reply = Error(request.request_id, ErrorCode.INTERNAL, f"internal error: {exc!r}"[:200])
            with contextlib.suppress(ProtocolError):
                await channel.send(reply)
        finally:
            if running.get(request.request_id) is state:
                del running[request.request_id]
            if isinstance(request, Watch):
                watches.discard(request.request_id)
            slots.release()

    async def _serve_get(self, channel: SecureChannel, request: Get, state: _Request) -> None:
        rid = request.request_id
        peer = channel.peer.peer_node_id
        may_refuse = "swarm" in channel.peer.features
        for chunk_id in dict.fromkeys(request.chunk_ids):
            if self.uploads is not None:
                size = self.store.chunk_size(chunk_id)
                if size is None:
                    await channel.send(Missing(rid, chunk_id))
                    continue
                try:
                    await self.uploads.acquire(peer, size, may_refuse=may_refuse)
                except UploadBusy as busy:
                    self.busy_replies += 1
                    retry_ms = min(MAX_RETRY_MS, max(1, round(busy.retry_after * 1000)))
                    await channel.send(Busy(rid, chunk_id, retry_ms))
                    continue
            elif self.rate_limiter is not None:
                # Tokens first, then the read: a rate-limited server then holds one chunk per
                # waiting request in memory, not a whole batch, and the first reply is not
                # queued behind the reads and hashes of chunks that may not be sent for seconds.
                size = self.store.chunk_size(chunk_id)
                if size is None:
                    await channel.send(Missing(rid, chunk_id))
                    continue
                await self.rate_limiter.acquire(size)
            if self.seeding is not None:
                # Every chunk sent counts, on every path: a watcher's window opens as fast as
                # it is served, whatever limits this server's uploads.
                self.seeding.served(peer, chunk_id, trio.current_time())
            # The chunk is looked up, read, verified and sealed in one worker thread, straight
            # into its frame; if the request is cancelled meanwhile, it is dropped there.
            await channel.send(
                DeferredChunk(
                    rid,
                    chunk_id,
                    partial(self._read_chunk, chunk_id),
                    wanted=state.wanted,
                    limiter=self._read_limiter,
                )
            )

    async def _serve_watch(self, channel: SecureChannel, request: Watch) -> None:
        """BITMAP now, then HAVE_UPDATE whenever this node stores more chunks of the file, until
        the client CANCELs the watch (or the channel ends)."""
        rid, file_id = request.request_id, request.file_id
        if self.holdings is None:
            bitmap = await self.store.have_bitmap(file_id)
            await channel.send(Bitmap(rid, file_id, bitmap))
            await trio.sleep_forever()  # nothing will ever be published; stay until cancelled
        host = _peer_host(channel)
        subscription = self.holdings.subscribe(
            file_id, channel.peer.peer_node_id, host_key(host) if host is not None else None
        )
        if subscription is None:
            await channel.send(Error(rid, ErrorCode.TOO_MANY_WATCHES, "file watched too much"))
            return
        with subscription:
            # Subscribed first, then the bitmap: a chunk stored in between is sent twice at
            # worst (harmless), never lost.
            peer = channel.peer.peer_node_id
            seeded = None
            if self.seeding is not None and self.uploads is not None:
                # Super-seed only when uploads are constrained (a fair upload gate): without a
                # limit, hiding chunks saves nothing and only slows every watcher but the first.
                seeded = await self.seeding.join(file_id, peer, subscription, trio.current_time())
            try:
                if seeded is not None:
                    count, offered = seeded
                    offer: bytes | None = _bitmap_of(offered, count)
                else:
                    offer = await self.store.have_bitmap(file_id)
                await channel.send(Bitmap(rid, file_id, offer))
                if self.on_watch is not None and request.port and host is not None:
                    self.on_watch(peer, host, request.port, file_id)
                while True:
                    if seeded is not None and self.seeding is not None:
                        with trio.move_on_after(SEED_TICK_INTERVAL):
                            await subscription.wait()
                        # A watcher with chunks queued here is waiting its turn, not idle.
                        waiting = (
                            self.uploads is not None and self.uploads.core.queued_bytes(peer) > 0
                        )
                        self.seeding.tick(file_id, peer, trio.current_time(), waiting=waiting)
                        if not subscription.pending:
                            continue
                    else:
                        await subscription.wait()
                    await trio.sleep(UPDATE_BATCH_DELAY)
                    while indices := subscription.take(MAX_UPDATE_INDICES):
                        await channel.send(HaveUpdate(rid, file_id, tuple(indices)))
            finally:
                if seeded is not None and self.seeding is not None:
                    self.seeding.leave(file_id, peer, subscription)

    def _read_chunk(self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]) -> bool:
        """Runs in a worker thread: fill ``buffer_for(size)``; False (logged) if it cannot."""
        try:
            self.store.read_chunk_into(chunk_id, buffer_for)
        except ChunkNotFoundError:
            return False
        except CorruptChunkError:
            log.warning("chunk %s is corrupt in the store; reported missing", chunk_id.hex())
            return False
        except Exception:
            log.warning("reading chunk %s failed; reported missing", chunk_id.hex(), exc_info=True)
            return False
        return True

    async def _serve_put(self, channel: SecureChannel, request: Put) -> None:
        rid, chunk_id = request.request_id, request.chunk_id
        if "put" not in channel.peer.features:
            await channel.send(Error(rid, ErrorCode.BAD_REQUEST, "PUT was not negotiated"))
            return
        if not await data_intact(request):
            await channel.send(Error(rid, ErrorCode.CORRUPT_CHUNK, "bytes do not hash to the ID"))
            return
        try:
            stored = await self.store.put_chunk(chunk_id, request.data, enforce_quota=True)
        except QuotaExceededError as exc:
            await channel.send(Error(rid, ErrorCode.QUOTA_EXCEEDED, str(exc)[:200]))
            return
        except CorruptChunkError:
            await channel.send(Error(rid, ErrorCode.CORRUPT_CHUNK, "bytes do not hash to the ID"))
            return
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            # A full disk is no bug: one line for the operator, a refusal the pusher acts on
            # (it places the share elsewhere), and no local path for the peer.
            where = f": {exc.filename}" if exc.filename else ""
            log.warning("refused a pushed chunk %s: %s%s", chunk_id.hex()[:16], exc.strerror, where)
            await channel.send(Error(rid, ErrorCode.QUOTA_EXCEEDED, str(exc.strerror)[:200]))
            return
        await channel.send(Ack(rid, chunk_id, stored))
        if self.on_put is not None:
            self.on_put(chunk_id)


def _peer_host(channel: SecureChannel) -> str | None:
    """The remote IP of a channel on a TCP socket, else ``None``."""
    stream = channel.stream
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None


def _bitmap_of(indices: list[int], count: int) -> bytes:
    """The BITMAP bytes (bit i, LSB first, of byte i // 8) with exactly ``indices`` set."""
    bitmap = bytearray((count + 7) // 8)
    for i in indices:
        bitmap[i >> 3] |= 1 << (i & 7)
    return bytes(bitmap)
