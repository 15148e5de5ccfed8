"""The chunk client: a bounded pool of secure channels, one per peer, with pipelined requests."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

import trio

from ..errors import CorruptChunkError, P2PStoreError, ProtocolError, QuotaExceededError
from ..identity import Identity
from .channel import SecureChannel, initiate
from .config import MAX_GET_BATCH, WireConfig
from .messages import MAX_REQUEST_ID as _MAX_REQUEST_ID
from .messages import (
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
from .server import data_intact, sha256_digest

log = logging.getLogger(__name__)

#: Seconds an abandoned request may spend queueing its CANCEL: it only saves the peer work.
CANCEL_SEND_TIMEOUT = 1.0
#: HAVE_UPDATEs of one watch received and not yet consumed before the peer counts as flooding
#: (a well-behaved peer batches its updates every 50 ms; the consumer drains them at once).
MAX_QUEUED_UPDATES = 1024


class PeerBusyError(P2PStoreError):
    """The peer answered BUSY for some chunks of a GET: ask again after ``retry_after`` seconds
    (or ask another holder). ``found`` holds the chunks it did answer (bytes, or None = MISSING).
    """

    def __init__(
        self, peer: str, busy: dict[bytes, float], found: dict[bytes, bytes | None]
    ) -> None:
        self.retry_after = max(busy.values())
        super().__init__(f"{peer} is busy; retry after {self.retry_after:.2f} s")
        self.busy = busy
        self.found = found


@dataclass(frozen=True)
class PeerAddress:
    """Where to dial a peer, and (if known) the node ID it must prove it has."""

    node_id: bytes | None
    host: str
    port: int


class _Slot:
    """The replies expected for one request; filled by the dispatcher, drained by the caller."""

    def __init__(self, kind: type[Message], chunk_ids: Iterable[bytes] = ()) -> None:
        self.kind = kind
        self.remaining = set(chunk_ids)
        self.done = False
        self.bitmap_seen = False
        self.send, self.receive = trio.open_memory_channel[Message](math.inf)

    def accept(self, message: Message) -> None:
        if self.done:
            raise ProtocolError("more replies than the request asked for")
        if isinstance(message, Error):
            self.done = True
        elif self.kind is Watch:
            # One BITMAP, then any number of HAVE_UPDATEs; a watch ends only by CANCEL.
            if isinstance(message, Bitmap) and not self.bitmap_seen:
                self.bitmap_seen = True
            elif not (isinstance(message, HaveUpdate) and self.bitmap_seen):
                raise ProtocolError(f"{type(message).__name__} is not a reply to WATCH")
            if self.send.statistics().current_buffer_used >= MAX_QUEUED_UPDATES:
                raise ProtocolError("peer floods HAVE_UPDATEs")
        elif self.kind is Get and isinstance(message, Chunk | Missing | Busy):
            if message.chunk_id not in self.remaining:
                raise ProtocolError("reply for a chunk that was not asked for (or twice)")
            self.remaining.discard(message.chunk_id)
            self.done = not self.remaining
        elif (self.kind is Have and isinstance(message, Bitmap)) or (
            self.kind is Put and isinstance(message, Ack)
        ):
            self.done = True
        else:
            raise ProtocolError(f"{type(message).__name__} is not a reply to {self.kind.__name__}")
        self.send.send_nowait(message)


class PeerConnection:
    """One pooled channel to a peer; its request methods are safe to call from many tasks at once.

    ``peer_node_id`` is always verified; ``authenticated_as_expected`` is True only if the dial
    named that node ID. Requests are pipelined on the one channel and matched by request ID.
    Each request raises :class:`trio.TooSlowError` past its deadline (``config.request_timeout``;
    wrap a call in ``trio.fail_after`` for a shorter one) and :class:`ProtocolError` if the channel
    fails or the peer misbehaves; a timed-out or cancelled request's late replies are discarded.
    """

    def __init__(self, channel: SecureChannel, address: PeerAddress, config: WireConfig) -> None:
        self.channel = channel
        self.address = address
        self.config = config
        self.peer_node_id = channel.peer.peer_node_id
        self.authenticated_as_expected = channel.peer.authenticated_as_expected
        self.late_replies = 0
        """Replies that came after their request timed out or was cancelled (and were dropped)."""
        self._pending: dict[int, _Slot] = {}
        self._last_id = 0
        self._wrapped = False

    @property
    def closed(self) -> bool:
        """Whether the channel has ended; requests then fail at once."""
        return self.channel.closed

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet fully answered."""
        return len(self._pending)

    def _peer_name(self) -> str:
        return f"peer {self.peer_node_id.hex()[:16]}... at {self.address.host}:{self.address.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the channel until it ends; never raises (but Cancelled). Fails pending requests."""
        try:
            await self.channel.run(self._dispatch, task_status=task_status)
        except Exception as exc:
            log.debug("channel to %s closed: %s", self._peer_name(), exc)
        finally:
            for slot in self._pending.values():
                slot.send.close()

    async def aclose(self) -> None:
        """Close the channel politely (BYE); pending requests fail with :class:`ProtocolError`."""
        await self.channel.aclose()

    async def _dispatch(self, message: Message) -> None:
        slot = self._pending.get(message.request_id)
        if slot is None:
            if 0 < message.request_id <= (_MAX_REQUEST_ID if self._wrapped else self._last_id):
                self.late_replies += 1  # to a request that timed out or was cancelled
                return
            raise ProtocolError(f"{self._peer_name()} replied to a request never made")
        slot.accept(message)

    def _open_slot(self, slot: _Slot) -> int:
        if self.channel.closed:
            raise ProtocolError(f"channel to {self._peer_name()} is closed")
        while True:
            self._last_id += 1
            if self._last_id > _MAX_REQUEST_ID:
                self._last_id, self._wrapped = 1, True
            if self._last_id not in self._pending:
                break
        self._pending[self._last_id] = slot
        return self._last_id

    async def _next_reply(self, slot: _Slot) -> Message:
        try:
            message = await slot.receive.receive()
        except trio.EndOfChannel:
            raise ProtocolError(
                f"channel to {self._peer_name()} closed: {self.channel.close_reason}"
            ) from None
        if isinstance(message, Error):
            if message.code == ErrorCode.QUOTA_EXCEEDED:
                raise QuotaExceededError(f"{self._peer_name()} refused: {message.message}")
            if message.code == ErrorCode.TOO_MANY_WATCHES:
                raise WatchRefusedError(f"{self._peer_name()} refused: {message.message}")
            raise ProtocolError(f"{self._peer_name()} refused ({message.code}): {message.message}")
        return message

    async def get(
        self, chunk_ids: Iterable[bytes], *, patience: float | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """Fetch chunks: ``(chunk_id, bytes)`` if the peer sent it, ``(chunk_id, None)`` if missing.

        Results are in the order asked. Every chunk's SHA-256 is checked (by the channel, in the
        worker thread that opened its frame): a
        mismatch raises :class:`CorruptChunkError` naming the peer (drop that peer). Batches larger
        than ``MAX_GET_BATCH`` are sent as several requests. If the peer answers BUSY for any
        chunk, :class:`PeerBusyError` is raised once every reply is in (with the others' results).
        ``patience`` (seconds) replaces ``config.request_timeout`` as this call's deadline.
        """
        ids = list(chunk_ids)
        unique = list(dict.fromkeys(ids))
        found: dict[bytes, bytes | None] = {}
        busy: dict[bytes, float] = {}
        with trio.fail_after(self.config.request_timeout if patience is None else patience):
            for start in range(0, len(unique), MAX_GET_BATCH):
                batch = unique[start : start + MAX_GET_BATCH]
                slot = _Slot(Get, batch)
                rid = self._open_slot(slot)
                try:
                    await self.channel.send(Get(rid, tuple(batch)))
                    for _ in batch:
                        reply = await self._next_reply(slot)
                        assert isinstance(reply, Chunk | Missing | Busy)
                        if isinstance(reply, Busy):
                            busy[reply.chunk_id] = reply.retry_ms / 1000
                            continue
                        if isinstance(reply, Missing):
                            found[reply.chunk_id] = None
                            continue
                        if not await data_intact(reply):
                            raise CorruptChunkError(
                                reply.chunk_id,
                                f"{self._peer_name()} sent chunk {reply.chunk_id.hex()} "
                                "whose bytes do not match its ID",
                            )
                        found[reply.chunk_id] = reply.data
                finally:
                    del self._pending[rid]
                    if not slot.done:
                        await self._cancel_remotely(rid)
        if busy:
            raise PeerBusyError(self._peer_name(), busy, found)
        return [(chunk_id, found[chunk_id]) for chunk_id in ids]

    async def _cancel_remotely(self, rid: int) -> None:
        """Tell the peer to stop serving an abandoned request (best effort, briefly shielded,
        so a cancelled caller still spares the peer's upload)."""
        if "cancel" not in self.channel.peer.features or self.channel.closed:
            return
        quiet = contextlib.suppress(
            ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
        )
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_SEND_TIMEOUT), quiet:
            await self.channel.send(Cancel(rid))

    async def have(self, file_id: bytes) -> bytes | None:
        """Which chunks of ``file_id`` the peer holds, as its bitmap (bit i, LSB-first, = chunk i
        of the manifest order), or ``None`` if it does not know the file."""
        slot = _Slot(Have)
        with trio.fail_after(self.config.request_timeout):
            rid = self._open_slot(slot)
            try:
                await self.channel.send(Have(rid, file_id))
                reply = await self._next_reply(slot)
            finally:
                del self._pending[rid]
        assert isinstance(reply, Bitmap)
        if reply.file_id != file_id:
            raise ProtocolError(f"{self._peer_name()} answered HAVE for another file")
        return reply.bitmap

    @property
    def swarming(self) -> bool:
        """Whether both sides speak ``swarm`` (WATCH, HAVE_UPDATE, BUSY)."""
        return "swarm" in self.channel.peer.features

    async def watch(self, file_id: bytes, port: int = 0) -> WatchHandle:
        """Start watching ``file_id`` on the peer: its BITMAP now (``handle.bitmap``, ``None`` if
        it does not know the file yet), then ``await handle.next_update()`` for the chunk
        indices it stores later. ``port`` is our own chunk server's port (0: none), so the peer
        may download from us too. Close the handle (``aclose``) to stop: it sends CANCEL.

        Raises :class:`trio.TooSlowError` if the BITMAP is not in within
        ``config.request_timeout``, :class:`WatchRefusedError` if the peer has too many watches
        (it is still usable: ask it HAVE), :class:`ProtocolError` if the channel fails, the peer
        refuses otherwise or does not speak ``swarm``.
        """
        if not self.swarming:
            raise ProtocolError(f"{self._peer_name()} does not speak the swarm feature")
        slot = _Slot(Watch)
        rid = self._open_slot(slot)
        handle = WatchHandle(self, rid, slot, file_id)
        try:
            with trio.fail_after(self.config.request_timeout):
                await self.channel.send(Watch(rid, file_id, port))
                reply = await self._next_reply(slot)
            assert isinstance(reply, Bitmap)
            if reply.file_id != file_id:
                raise ProtocolError(f"{self._peer_name()} answered WATCH for another file")
            handle.bitmap = reply.bitmap
        except BaseException:
            await handle.aclose()
            raise
        return handle

    async def put(self, chunk_id: bytes, data: bytes) -> bool:
        """Offer a chunk for the peer to keep; True if it stored it, False if it already had it.

        Raises :class:`QuotaExceededError` if the peer's quota refuses it, :class:`ProtocolError`
        for any other refusal (e.g. a hash mismatch) and :class:`ValueError` (before sending) if
        ``data`` does not hash to ``chunk_id`` or is longer than ``config.max_chunk_bytes``.
        """
        if len(data) > self.config.max_chunk_bytes:
            raise ValueError(f"chunk of {len(data)} bytes exceeds {self.config.max_chunk_bytes}")
        if await sha256_digest(data) != chunk_id:
            raise ValueError("data does not hash to chunk_id")
        slot = _Slot(Put)
        with trio.fail_after(self.config.request_timeout):
            rid = self._open_slot(slot)
            try:
                await self.channel.send(Put(rid, chunk_id, data))
                reply = await self._next_reply(slot)
            finally:
                del self._pending[rid]
        assert isinstance(reply, Ack)
        if reply.chunk_id != chunk_id:
            raise ProtocolError(f"{self._peer_name()} acknowledged another chunk")
        return reply.stored


class WatchRefusedError(ProtocolError):
    """The peer refused a WATCH (``TOO_MANY_WATCHES``): a limit, not a fault; the channel
    stays open and HAVE/GET still work."""


class WatchHandle:
    """An open WATCH on one peer (see :meth:`PeerConnection.watch`)."""

    def __init__(self, conn: PeerConnection, rid: int, slot: _Slot, file_id: bytes) -> None:
        self.conn = conn
        self.file_id = file_id
        self.bitmap: bytes | None = None
        self._rid = rid
        self._slot = slot
        self._closed = False

    async def next_update(self) -> tuple[int, ...]:
        """The next batch of chunk indices the peer has stored (waits for it). Raises
        :class:`ProtocolError` when the channel ends or the peer ends the watch."""
        reply = await self.conn._next_reply(self._slot)
        if not isinstance(reply, HaveUpdate) or reply.file_id != self.file_id:
            raise ProtocolError("HAVE_UPDATE for another file")
        return reply.indices

    async def aclose(self) -> None:
        """Stop watching (CANCEL to the peer, best effort). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.conn._pending.pop(self._rid, None)
        await self.conn._cancel_remotely(self._rid)


_PoolKey = bytes | tuple[str, int]


class ConnectionPool:
    """Outbound channels, at most one per peer (keyed by node ID, else by address), reused.

    Use as ``async with ConnectionPool(identity, config) as pool``; leaving the block closes every
    channel (BYE) and cancels their tasks. At most ``config.pool_size`` channels are open: a new
    one evicts the least recently used idle channel, and :meth:`connect` raises
    :class:`P2PStoreError` if every channel is busy.
    """

    def __init__(self, identity: Identity, config: WireConfig | None = None) -> None:
        self.identity = identity
        self.config = config or WireConfig()
        self._connections: OrderedDict[_PoolKey, PeerConnection] = OrderedDict()
        self._connecting: dict[_PoolKey, trio.Event] = {}
        self._stack = AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> ConnectionPool:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            async with trio.open_nursery() as closer:
                for conn in list(self._connections.values()):
                    closer.start_soon(conn.aclose)
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
        finally:
            self._connections.clear()
            # The pool's tasks never raise, so the block's own exception (if any) propagates as is,
            # not wrapped in an ExceptionGroup by the nursery.
            await self._stack.__aexit__(None, None, None)
        return None

    def __len__(self) -> int:
        return len(self._connections)

    async def connect(self, address: PeerAddress) -> PeerConnection:
        """A live channel to ``address``: an open one if there is one, else a new one.

        TCP connect plus handshake must finish within ``config.connect_timeout``
        (:class:`trio.TooSlowError`). Raises :class:`OSError` if the TCP connection fails and
        :class:`HandshakeError` if the handshake does (including a peer whose identity does not
        hash to ``address.node_id``). Concurrent calls for the same peer share one dial.
        """
        if self._nursery is None:
            raise RuntimeError("use the pool inside 'async with'")
        key: _PoolKey = (
            address.node_id if address.node_id is not None else (address.host, address.port)
        )
        while True:
            conn = self._connections.get(key)
            if conn is not None and not conn.closed:
                self._connections.move_to_end(key)
                return conn
            if conn is not None:
                del self._connections[key]
            dialling = self._connecting.get(key)
            if dialling is None:
                break
            await dialling.wait()
        done = self._connecting[key] = trio.Event()
        try:
            await self._make_room()
            with trio.fail_after(self.config.connect_timeout):
                stream = await trio.open_tcp_stream(address.host, address.port)
                try:
                    channel = await initiate(stream, self.identity, address.node_id, self.config)
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            conn = PeerConnection(channel, address, self.config)
            await self._nursery.start(self._run_connection, key, conn)
            self._connections[key] = conn
            return conn
        finally:
            del self._connecting[key]
            done.set()

    async def _run_connection(
        self,
        key: _PoolKey,
        conn: PeerConnection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await conn.run(task_status=task_status)
        finally:
            if self._connections.get(key) is conn:
                del self._connections[key]

    async def _make_room(self) -> None:
        for key, conn in list(self._connections.items()):
            if conn.closed:
                del self._connections[key]
        while len(self._connections) + len(self._connecting) > self.config.pool_size:
            for key, conn in self._connections.items():
                if conn.in_flight == 0:
                    del self._connections[key]
                    await conn.aclose()
                    break
            else:
                raise P2PStoreError(
                    f"connection pool full: all {self.config.pool_size} channels are busy"
                )
