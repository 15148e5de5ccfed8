"""The secure channel on a Trio stream: handshake drivers and the sealed message pump.

:func:`initiate` and :func:`accept` run the sans-IO handshake over a :class:`trio.abc.Stream` and
return a :class:`SecureChannel`. The channel's :meth:`~SecureChannel.run` moves messages: a reader
task opens, decodes and hands each inbound message to a handler; a writer task encodes, seals and
writes queued outbound messages. AEAD work on big frames runs in worker threads (it releases the
GIL); nonces are taken in send order and frames written in that order by the single writer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import HandshakeError, ProtocolError
from ..identity import Identity
from .config import (
    OUTBOUND_QUEUE,
    PIPELINE_DEPTH,
    RECEIVE_SIZE,
    THREAD_THRESHOLD_BYTES,
    WireConfig,
)
from .framing import FrameDecoder
from .handshake import (
    FEATURES,
    SUPPORTED_VERSIONS,
    HandshakeRefused,
    HandshakeResult,
    InitiatorHandshake,
    ResponderHandshake,
)
from .messages import Bye, Message, MessageCodec
from .seal import Opener, Sealer

log = logging.getLogger(__name__)

HANDSHAKE_RECEIVE_SIZE = 4096
"""Bytes read per call during the handshake (its frames are a few hundred bytes)."""

BYE_TIMEOUT = 1.0
"""Seconds :meth:`SecureChannel.aclose` waits to flush queued messages and BYE before cutting."""

Handler = Callable[[Message], Awaitable[None]]

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _drive(
    stream: trio.abc.Stream,
    handshake: InitiatorHandshake | ResponderHandshake,
    first: bytes,
    config: WireConfig,
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
        return SecureChannel(stream, handshake.result, handshake.decoder, config)
    raise HandshakeError(f"handshake not complete within {config.handshake_timeout} s")


async def initiate(
    stream: trio.abc.Stream,
    identity: Identity,
    expected_node_id: bytes | None,
    config: WireConfig,
    *,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    features: tuple[str, ...] = FEATURES,
) -> SecureChannel:
    """Run the dialling side of the handshake on ``stream`` within ``config.handshake_timeout``.

    With ``expected_node_id`` set, the peer must prove it is that node; with ``None`` any peer is
    accepted and ``channel.peer.authenticated_as_expected`` is False. Raises
    :class:`HandshakeError` on any failure (timeout, wrong node, bad signature, no common version,
    connection lost); the caller closes the stream, also on cancellation.
    """
    handshake = InitiatorHandshake(identity, expected_node_id, versions=versions, features=features)
    return await _drive(stream, handshake, handshake.initial_bytes(), config)


async def accept(
    stream: trio.abc.Stream,
    identity: Identity,
    config: WireConfig,
    *,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
    features: tuple[str, ...] = FEATURES,
) -> SecureChannel:
    """Run the listening side of the handshake on ``stream`` (same contract as :func:`initiate`).

    Any peer proving its identity is accepted; its verified ID is ``channel.peer.peer_node_id``.
    """
    handshake = ResponderHandshake(identity, versions=versions, features=features)
    return await _drive(stream, handshake, b"", config)


class SecureChannel:
    """An authenticated, encrypted message channel on a stream, after a successful handshake.

    ``peer`` describes the other side. Messages go out through :meth:`send` and come in through the
    handler given to :meth:`run`, which must be running for either to make progress. Any protocol
    violation, timeout or transport error ends :meth:`run` and closes the stream; the channel is
    never reused after that.

    Inside :meth:`run`, four tasks form two pipelines so that AEAD work (in worker threads) overlaps
    with socket I/O: reader (socket -> frames) -> opener (open, decode, handler) and sealer (encode,
    take nonce, seal) -> writer (socket). One sealer and one opener keep nonces in stream order.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: HandshakeResult,
        decoder: FrameDecoder,
        config: WireConfig,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.config = config
        self.close_reason = ""
        self.bye_received = False
        decoder.max_frame_bytes = config.max_frame_bytes
        self._decoder = decoder
        self._codec = MessageCodec(config.max_chunk_bytes)
        self._sealer = Sealer(peer.send_key)
        self._opener = Opener(peer.receive_key)
        self._out_send, self._out_receive = trio.open_memory_channel[Message](OUTBOUND_QUEUE)
        self._sealed_send, self._sealed_receive = trio.open_memory_channel[tuple[bytearray, bool]](
            PIPELINE_DEPTH
        )
        self._frames_send, self._frames_receive = trio.open_memory_channel[bytes](PIPELINE_DEPTH)
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

    async def send(self, message: Message) -> None:
        """Queue ``message`` for the writer; waits while the queue is full (backpressure).

        Returns once queued, not once written. Raises :class:`ProtocolError` if the channel is
        closed. Cancellation before it returns means the message was not queued.
        """
        if self._closed:
            raise ProtocolError(f"channel closed: {self.close_reason or 'closed'}")
        try:
            await self._out_send.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ProtocolError(f"channel closed: {self.close_reason or 'closed'}") from None

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
                nursery.start_soon(self._guard, self._sealer_task, False)
                nursery.start_soon(self._guard, self._writer_task, True)
                nursery.start_soon(self._guard, self._reader_task, False)
                task_status.started()
                await self._guard(self._opener_task, True, handler)
        finally:
            self._closed = True
            self._out_send.close()
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
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                await self._out_send.send(Bye())
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
        """Socket -> whole frames, with the idle and per-frame deadlines; EOF ends the input."""
        decoder = self._decoder
        frame_started = trio.current_time()
        # Closed synchronously (not ``async with``) so that an error here is recorded before the
        # opener, seeing the end of its input, can end the channel as if it were an orderly close.
        with self._frames_send:
            while True:
                payload = decoder.next_frame()
                if payload is not None:
                    await self._frames_send.send(payload)
                    frame_started = trio.current_time()  # time spent blocked is not the peer's
                    continue
                if decoder.in_frame:
                    deadline = frame_started + self.config.frame_timeout
                else:
                    deadline = self._last_activity + self.config.idle_timeout
                with trio.CancelScope(deadline=deadline) as scope:
                    self._receive_scope = scope
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                self._receive_scope = None
                if scope.cancelled_caught:
                    if decoder.in_frame:
                        raise ProtocolError(
                            f"frame not delivered within {self.config.frame_timeout} s"
                        )
                    self._end_of_input = "idle timeout"
                    return self._end_of_input
                if not data:
                    if decoder.in_frame:
                        raise ProtocolError("connection closed in the middle of a frame")
                    return self._end_of_input
                if not decoder.in_frame:
                    frame_started = trio.current_time()
                decoder.receive_data(bytes(data))
                self._touch()

    async def _opener_task(self, handler: Handler) -> str:
        """Frames -> open (in a thread if big) -> decode -> handler, in nonce order."""
        codec = self._codec
        opener = self._opener
        async for payload in self._frames_receive:
            counter = opener.next_nonce()
            if len(payload) >= THREAD_THRESHOLD_BYTES:
                message = await trio.to_thread.run_sync(
                    _open_and_decode, opener, codec, counter, payload
                )
            else:
                message = _open_and_decode(opener, codec, counter, payload)
            if isinstance(message, Bye):
                self.bye_received = True
                return "BYE from peer"
            await handler(message)
        return self._end_of_input

    async def _sealer_task(self) -> str:
        """Queued messages -> encode, take the next nonce, seal (in a thread if big)."""
        codec = self._codec
        sealer = self._sealer
        with self._sealed_send:
            async for message in self._out_receive:
                counter = sealer.next_nonce()
                if len(getattr(message, "data", b"")) >= THREAD_THRESHOLD_BYTES:
                    frame = await trio.to_thread.run_sync(
                        _encode_and_seal, sealer, codec, counter, message
                    )
                else:
                    frame = _encode_and_seal(sealer, codec, counter, message)
                await self._sealed_send.send((frame, isinstance(message, Bye)))
        return "closed locally"

    async def _writer_task(self) -> str:
        """Sealed frames -> socket, in order, each within the frame timeout."""
        async for frame, is_bye in self._sealed_receive:
            with trio.move_on_after(self.config.frame_timeout) as scope:
                await self.stream.send_all(frame)
            if scope.cancelled_caught:
                raise ProtocolError(
                    f"peer did not take a frame within {self.config.frame_timeout} s"
                )
            self._touch()
            if is_bye:
                break
        return "closed locally"


def _encode_and_seal(
    sealer: Sealer, codec: MessageCodec, counter: int, message: Message
) -> bytearray:
    return sealer.seal_with(counter, codec.encode(message))


def _open_and_decode(opener: Opener, codec: MessageCodec, counter: int, payload: bytes) -> Message:
    return codec.decode(opener.open_with(counter, payload))
