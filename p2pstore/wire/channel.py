"""The secure channel on a Trio stream: handshake drivers and the sealed message pump.

:func:`initiate` and :func:`accept` run the sans-IO handshake over a :class:`trio.abc.Stream` and
return a :class:`SecureChannel`. The channel's :meth:`~SecureChannel.run` moves messages: reader
and opener tasks read, open, decode and hand each inbound message to a handler; senders seal their
own outbound frames and a writer task writes them in nonce order. AEAD and hashing of big frames
run in worker threads (they release the GIL), and chunk bytes are copied as little as possible:
read from the socket into their frame's buffer and opened there; read from the store into the frame
that is sealed in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import trio

from ..errors import HandshakeError, ProtocolError
from ..identity import Identity
from .buffers import SHARED_FRAME_POOL, FramePool
from .config import (
    OUTBOUND_QUEUE,
    PIPELINE_DEPTH,
    THREAD_THRESHOLD_BYTES,
    WireConfig,
)
from .framing import HEADER_BYTES, OWN_BUFFER_BYTES, FrameDecoder
from .handshake import (
    FEATURES,
    SUPPORTED_VERSIONS,
    HandshakeRefused,
    HandshakeResult,
    InitiatorHandshake,
    ResponderHandshake,
)
from .messages import Bye, Chunk, Message, MessageCodec, Missing, Put, data_message_head
from .seal import TAG_BYTES, Opener, Sealer

log = logging.getLogger(__name__)

HANDSHAKE_RECEIVE_SIZE = 4096
"""Bytes read per call during the handshake (its frames are a few hundred bytes)."""

RECEIVE_LOW_WATER = 256 * 1024
"""While a big frame is open, a read waits until this many of its bytes (or the rest of its
buffer, if less) are in the socket (``SO_RCVLOWAT``), so a paced download wakes the event loop
a few times per MiB instead of once per packet (measured: 4.3 s of CPU per 64 MiB from one
40 Mbit/s peer, 1.1 s from eight). Between frames every byte is read at once."""

BYE_TIMEOUT = 1.0
"""Seconds :meth:`SecureChannel.aclose` waits to flush queued messages and BYE before cutting."""

Handler = Callable[[Message], Awaitable[None]]


class _SealFailed(Exception):
    """Sealing failed after the frame's nonce was taken (the cause is chained)."""


def _always() -> bool:
    return True


@dataclass(frozen=True)
class DeferredChunk:
    """A CHUNK reply whose bytes are read only when its frame is built, in the worker thread that
    seals it: one thread hop per chunk, and the bytes go straight into the frame (no copy).

    ``read(buffer_for)`` runs in that worker thread: it must call ``buffer_for(size)`` with the
    chunk's size, fill the buffer it gets with the chunk's verified bytes and return True, or
    return False if it cannot (the chunk is gone or corrupt), and then MISSING is sent in its
    place. It must not raise. ``wanted()`` is asked after the read (from that thread): if False
    (the request was cancelled meanwhile), nothing is sent.
    """

    request_id: int
    chunk_id: bytes
    read: Callable[[Callable[[int], memoryview]], bool]
    wanted: Callable[[], bool] = _always
    limiter: trio.CapacityLimiter | None = None
    """Bounds the worker threads reading at once (e.g. the server's disk readers); ``None`` is
    trio's default limiter."""


Outbound: TypeAlias = Message | DeferredChunk

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _drive(
    stream: trio.abc.Stream,
    handshake: InitiatorHandshake | ResponderHandshake,
    first: bytes,
    config: WireConfig,
    pool: FramePool,
) -> SecureChannel:
    with trio.move_on_after(config.handshake_timeout):
        try:
            if first:
                await stream.send_all(first)
            while handshake.result is None:
                data = await stream.receive_some(HANDSHAKE_RECEIVE_SIZE)
                if not data:
                    raise HandshakeError("peer closed the connection during the handshake")
                try:
                    out = handshake.receive_data(bytes(data))
                except HandshakeRefused as exc:
                    with trio.move_on_after(BYE_TIMEOUT):
                        await stream.send_all(exc.reply)
                    raise
                if out:
                    await stream.send_all(out)
        except _TRANSPORT_ERRORS as exc:
            raise HandshakeError(f"connection lost during the handshake: {exc!r}") from exc
        return SecureChannel(stream, handshake.result, handshake.decoder, config, pool)
    raise HandshakeError(f"handshake not complete within {config.handshake_timeout} s")


async def initiate(
    stream: trio.abc.Stream,
    identity: Identity,
    expected_node_id: bytes | None,
    config: WireConfig,
    *,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    features: tuple[str, ...] = FEATURES,
    pool: FramePool = SHARED_FRAME_POOL,
) -> SecureChannel:
    """Run the dialling side of the handshake on ``stream`` within ``config.handshake_timeout``.

    With ``expected_node_id`` set, the peer must prove it is that node; with ``None`` any peer is
    accepted and ``channel.peer.authenticated_as_expected`` is False. Raises
    :class:`HandshakeError` on any failure (timeout, wrong node, bad signature, no common version,
    connection lost); the caller closes the stream, also on cancellation. The channel's big frame
    buffers come from and go back to ``pool``.
    """
    handshake = InitiatorHandshake(identity, expected_node_id, versions=versions, features=features)
    return await _drive(stream, handshake, handshake.initial_bytes(), config, pool)


async def accept(
    stream: trio.abc.Stream,
    identity: Identity,
    config: WireConfig,
    *,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    features: tuple[str, ...] = FEATURES,
    pool: FramePool = SHARED_FRAME_POOL,
) -> SecureChannel:
    """Run the listening side of the handshake on ``stream`` (same contract as :func:`initiate`).

    Any peer proving its identity is accepted; its verified ID is ``channel.peer.peer_node_id``.
    """
    handshake = ResponderHandshake(identity, versions=versions, features=features)
    return await _drive(stream, handshake, b"", config, pool)


class SecureChannel:
    """An authenticated, encrypted message channel on a stream, after a successful handshake.

    ``peer`` describes the other side. Messages go out through :meth:`send` and come in through the
    handler given to :meth:`run`, which must be running for either to make progress. Any protocol
    violation, timeout or transport error ends :meth:`run` and closes the stream; the channel is
    never reused after that.

    Inbound, two tasks inside :meth:`run` form a pipeline so that AEAD work (in worker threads)
    overlaps with socket I/O: reader (socket -> frames, big ones read into their own buffers) ->
    opener (open in place, decode, hash chunk data, handler), one frame at a time in nonce order.
    Outbound, each :meth:`send` call builds and seals its own frame (big ones in a worker thread,
    so several at once), taking the next nonce once the frame is built; the writer task puts the
    frames on the socket in nonce order.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: HandshakeResult,
        decoder: FrameDecoder,
        config: WireConfig,
        pool: FramePool = SHARED_FRAME_POOL,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.config = config
        self.close_reason = ""
        self.bye_received = False
        decoder.max_frame_bytes = config.max_frame_bytes
        decoder.pool = pool
        self._decoder = decoder
        self._pool = pool
        self._codec = MessageCodec(config.max_chunk_bytes)
        self._sealer = Sealer(peer.send_key)
        self._opener = Opener(peer.receive_key)
        # Outbound frames are sealed by the tasks that send them (big ones in worker threads, so
        # several at once), each taking the next nonce once its frame is built; the writer puts
        # them on the wire in nonce order. ``_unwritten`` counts frames being sealed or waiting.
        self._nonce_lock = threading.Lock()
        self._sealed: dict[int, tuple[bytearray, bool]] = {}
        self._next_to_write = 0
        self._unwritten = 0
        self._room = trio.Event()
        self._frame_sealed = trio.Event()
        self._frames_send, self._frames_receive = trio.open_memory_channel[bytes | bytearray](
            PIPELINE_DEPTH
        )
        self._cancel_scope: trio.CancelScope | None = None
        self._receive_scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._finished = trio.Event()
        self._last_activity = trio.current_time()
        self._end_of_input = "closed by peer"

    @property
    def closed(self) -> bool:
        """Whether the channel has stopped (no more messages in or out)."""
        return self._closed

    async def send(self, message: Outbound) -> None:
        """Seal ``message`` and queue it for the writer; waits while ``OUTBOUND_QUEUE`` frames are
        already unwritten (backpressure).

        Big messages are sealed in a worker thread (a :class:`DeferredChunk` is read there too),
        so several senders' frames are sealed at once; frames are written in the order they
        finish sealing. Returns once queued, not once written. Raises :class:`ProtocolError` if the
        channel is closed. Cancelled while waiting for room, the message is not sent; cancelled
        while its frame is being sealed, it is still sent (a sealed frame must be written: its
        nonce is taken), except that a DeferredChunk no longer ``wanted`` is dropped unsent.
        """
        while True:
            if self._closed:
                raise ProtocolError(f"channel closed: {self.close_reason or 'closed'}")
            if self._unwritten < OUTBOUND_QUEUE:
                break
            await self._room.wait()
        self._unwritten += 1
        try:
            if _payload_size(message) >= THREAD_THRESHOLD_BYTES or isinstance(
                message, DeferredChunk
            ):
                limiter = message.limiter if isinstance(message, DeferredChunk) else None
                sealed = await trio.to_thread.run_sync(self._seal, message, limiter=limiter)
            else:
                sealed = self._seal(message)
        except _SealFailed as failed:
            # Its nonce is taken: the writer would wait for that frame forever.
            error = ProtocolError(f"sealing a frame failed: {failed.__cause__!r}")
            self._stop(str(error), error)
            self._frame_written()
            raise error from failed.__cause__
        except BaseException:
            self._frame_written()
            raise
        if sealed is None:  # a DeferredChunk abandoned while it was read
            self._frame_written()
            return
        counter, frame = sealed
        self._sealed[counter] = (frame, isinstance(message, Bye))
        self._frame_sealed.set()

    def _seal(self, item: Outbound) -> tuple[int, bytearray] | None:
        """Build ``item``'s frame, take the next nonce and seal it (maybe in a worker thread)."""
        frame = _build_frame(self._codec, item, self._pool)
        if frame is None:
            return None
        with self._nonce_lock:
            counter = self._sealer.next_nonce()
        try:
            self._sealer.seal_in_place(counter, frame)
        except BaseException as exc:
            raise _SealFailed from exc
        return counter, frame

    def _frame_written(self) -> None:
        self._unwritten -= 1
        self._room.set()
        self._room = trio.Event()

    async def run(
        self,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Pump messages until the channel ends, then close the stream.

        Calls ``await handler(message)`` for each inbound message, in order, from one task (a slow
        handler stops reading: that is the backpressure). Returns normally on an orderly end (BYE,
        end of stream between frames, idle timeout or :meth:`aclose`); raises
        :class:`ProtocolError` if the peer misbehaved or the transport failed, and re-raises what
        ``handler`` raised. On cancellation the stream is closed and the cancellation propagates.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._guard, self._writer_task, True)
                nursery.start_soon(self._guard, self._reader_task, False)
                task_status.started()
                await self._guard(self._opener_task, True, handler)
        finally:
            self._closed = True
            self._room.set()  # senders waiting for room see the channel closed
            self._finished.set()
            await trio.aclose_forcefully(self.stream)
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        """End the channel: flush queued messages and a BYE (within ``BYE_TIMEOUT``), then stop.

        Idempotent. :meth:`run` returns normally afterwards.
        """
        if self._closed:
            return
        with trio.move_on_after(BYE_TIMEOUT):
            with contextlib.suppress(ProtocolError):
                await self.send(Bye())
            await self._finished.wait()
        self._stop("closed locally")

    def _stop(self, reason: str, error: BaseException | None = None) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if error is not None and self._error is None:
            self._error = error
        self._closed = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _guard(
        self, pump: Callable[..., Awaitable[str]], stop_on_return: bool, *args: Any
    ) -> None:
        try:
            reason = await pump(*args)
        except ProtocolError as exc:
            self._stop(str(exc), exc)
        except _TRANSPORT_ERRORS as exc:
            self._stop(f"connection lost: {exc!r}", ProtocolError(f"connection lost: {exc!r}"))
        except Exception as exc:
            self._stop(f"handler failed: {exc!r}", exc)
        else:
            if stop_on_return:
                self._stop(reason)

    def _touch(self) -> None:
        self._last_activity = now = trio.current_time()
        scope = self._receive_scope
        if scope is not None and not self._decoder.in_frame:
            scope.deadline = now + self.config.idle_timeout

    async def _reader_task(self) -> str:
        """Socket -> whole frames, with the idle and per-frame deadlines; EOF ends the input.

        Reads go through :func:`receive_into`: on a socket, the rest of a big frame is read
        straight into its own buffer.
        """
        decoder = self._decoder
        frame_started = trio.current_time()
        scratch = memoryview(bytearray(OWN_BUFFER_BYTES))
        low_water = LowWater()
        # Closed synchronously (not ``async with``) so that an error here is recorded before the
        # opener, seeing the end of its input, can end the channel as if it were an orderly close.
        with self._frames_send:
            while True:
                payload = decoder.next_frame()
                if payload is not None:
                    await self._frames_send.send(payload)
                    frame_started = trio.current_time()  # time spent blocked is not the peer's
                    continue
                in_frame = decoder.in_frame
                if in_frame:
                    deadline = frame_started + self.config.frame_timeout
                else:
                    deadline = self._last_activity + self.config.idle_timeout
                count = 0
                with trio.CancelScope(deadline=deadline) as scope:
                    self._receive_scope = scope
                    count = await receive_into(self.stream, decoder, scratch, low_water)
                self._receive_scope = None
                if scope.cancelled_caught:
                    if in_frame:
                        raise ProtocolError(
                            f"frame not delivered within {self.config.frame_timeout} s"
                        )
                    self._end_of_input = "idle timeout"
                    return self._end_of_input
                if not count:
                    if in_frame:
                        raise ProtocolError("connection closed in the middle of a frame")
                    return self._end_of_input
                if not in_frame:
                    frame_started = trio.current_time()
                self._touch()

    async def _opener_task(self, handler: Handler) -> str:
        """Frames -> open (in a thread if big) -> decode -> handler, in nonce order."""
        codec = self._codec
        opener = self._opener
        async for payload in self._frames_receive:
            counter = opener.next_nonce()
            if len(payload) >= THREAD_THRESHOLD_BYTES:
                message = await trio.to_thread.run_sync(
                    _open_and_decode, opener, codec, counter, payload, self._pool
                )
            else:
                message = _open_and_decode(opener, codec, counter, payload, self._pool)
            if isinstance(message, Bye):
                self.bye_received = True
                return "BYE from peer"
            await handler(message)
        return self._end_of_input

    async def _writer_task(self) -> str:
        """Sealed frames -> socket, in nonce order, each within the frame timeout."""
        while True:
            entry = self._sealed.pop(self._next_to_write, None)
            if entry is None:
                self._frame_sealed = trio.Event()
                await self._frame_sealed.wait()
                continue
            self._next_to_write += 1
            frame, is_bye = entry
            with trio.move_on_after(self.config.frame_timeout) as scope:
                await self.stream.send_all(frame)
            if scope.cancelled_caught:
                raise ProtocolError(
                    f"peer did not take a frame within {self.config.frame_timeout} s"
                )
            self._frame_written()
            self._pool.give(frame)
            self._touch()
            if is_bye:
                return "closed locally"


class LowWater:
    """The ``SO_RCVLOWAT`` of one socket as last set (a syscall only when it changes); gives up
    quietly on a socket that refuses it (reads then wake on every byte, as without it)."""

    def __init__(self) -> None:
        self.value = 1
        self.works = True

    def set(self, sock: trio.socket.SocketType, value: int) -> None:
        if value == self.value or not self.works:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
        except OSError:
            self.works = False
            return
        self.value = value


async def receive_into(
    stream: trio.abc.Stream,
    decoder: FrameDecoder,
    scratch: memoryview,
    low_water: LowWater | None = None,
) -> int:
    """Read once from ``stream`` into ``decoder``; the number of bytes read (0 at end of stream).

    On a :class:`trio.SocketStream` the bytes go straight into the open frame's own buffer when
    the decoder offers one (``recv_into``), else into ``scratch`` and are copied in; other
    streams are read with ``receive_some`` (at most ``len(scratch)`` bytes). With ``low_water``,
    a read into a frame's buffer waits for ``RECEIVE_LOW_WATER`` bytes (at most the buffer's
    free room, so it always wakes). Raises what the read or
    :meth:`FrameDecoder.receive_data` raises.
    """
    if not isinstance(stream, trio.SocketStream):
        data = await stream.receive_some(len(scratch))
        decoder.receive_data(data)
        return len(data)
    target = decoder.receive_buffer()
    if target is None:
        if low_water is not None:
            low_water.set(stream.socket, 1)
        count = await stream.socket.recv_into(scratch)
        decoder.receive_data(scratch[:count])
    else:
        if low_water is not None:
            low_water.set(stream.socket, min(len(target), RECEIVE_LOW_WATER))
        count = await stream.socket.recv_into(target)
        decoder.received_into(count)
    return count


def _payload_size(item: Outbound) -> int:
    return len(item.data) if isinstance(item, Chunk | Put) else 0


def _build_frame(codec: MessageCodec, item: Outbound, pool: FramePool) -> bytearray | None:
    """``item``'s frame ready to seal in place (room for the length prefix and the tag), its
    data written once, into the frame (from ``pool``); ``None`` for a DeferredChunk no longer
    wanted."""
    if isinstance(item, DeferredChunk):
        read = _read_deferred(item, pool)
        if not isinstance(read, Missing):
            return read
        item = read
    head, data = codec.encode_parts(item)
    start = HEADER_BYTES + len(head)
    frame = pool.take(start + len(data) + TAG_BYTES)
    frame[HEADER_BYTES:start] = head
    frame[start : start + len(data)] = data
    return frame


def _read_deferred(item: DeferredChunk, pool: FramePool) -> bytearray | Missing | None:
    """A DeferredChunk's frame (from ``pool``) with the chunk read into it, MISSING if it could
    not be read, or ``None`` if it is no longer wanted."""
    request_id, chunk_id = item.request_id, item.chunk_id
    frames: list[bytearray] = []

    def buffer_for(size: int) -> memoryview:
        head = data_message_head(Chunk, request_id, chunk_id, size)
        start = HEADER_BYTES + len(head)
        frame = pool.take(start + size + TAG_BYTES)
        frame[HEADER_BYTES:start] = head
        frames.append(frame)
        return memoryview(frame)[start : start + size]

    found = item.read(buffer_for)
    wanted = item.wanted()
    if found and len(frames) == 1 and wanted:
        return frames[0]
    for frame in frames:
        pool.give(frame)
    return Missing(request_id, chunk_id) if wanted else None


def _open_and_decode(
    opener: Opener, codec: MessageCodec, counter: int, payload: bytes | bytearray, pool: FramePool
) -> Message:
    """Open and decode a frame; a CHUNK's or PUT's data is hashed here too, in the same thread,
    and the result recorded as its ``intact``. A ``bytearray`` frame goes back to ``pool`` once
    decoded (the message holds copies of its fields, never views of the frame)."""
    plaintext = opener.open_with(counter, payload)
    try:
        message = codec.decode(plaintext)
    finally:
        if isinstance(plaintext, memoryview):
            plaintext.release()
    if isinstance(payload, bytearray):
        pool.give(payload)
    if isinstance(message, Chunk | Put):
        intact = hashlib.sha256(message.data).digest() == message.chunk_id
        message = dataclasses.replace(message, intact=intact)
    return message
