"""Sans-IO length-prefixed framing: a 4-byte big-endian length, then that many bytes.

No sockets here: :class:`FrameDecoder` is fed bytes and hands back whole frames;
:func:`encode_frame` turns a payload into bytes to write.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..errors import ProtocolError

if TYPE_CHECKING:
    from .buffers import FramePool

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit big-endian."""

HEADER_BYTES = HEADER.size


def encode_frame(payload: bytes | bytearray) -> bytes:
    """The frame carrying ``payload``: its length (4 bytes, big-endian) followed by it.

    Raises :class:`ValueError` if the payload does not fit a 32-bit length (a local bug, not a
    peer's fault).
    """
    if len(payload) >= 2**32:
        raise ValueError("frame payload too large for the 4-byte length prefix")
    return HEADER.pack(len(payload)) + bytes(payload)


OWN_BUFFER_BYTES = 64 * 1024
"""Frames at least this long are received into a buffer of their own (a ``bytearray`` handed to the
caller as is, with no copy); shorter ones are sliced out of the pending bytes as ``bytes``."""

EAGER_BODY_BYTES = 2 * 1024 * 1024
"""A frame's own buffer is allocated whole when its header arrives if it is at most this long and
at most as long as all the peer has sent so far; other buffers start at ``OWN_BUFFER_BYTES`` and
grow (doubling) as their bytes arrive. A peer that announces big frames and sends nothing thus
never makes us hold more memory than it has sent (the first big frame of a connection pays a few
copies; later ones are received with none)."""


class FrameDecoder:
    """Splits a byte stream into frames, refusing any frame longer than ``max_frame_bytes``.

    The length of each frame is checked as soon as its 4-byte header has arrived, before its body is
    buffered: an oversized length raises :class:`ProtocolError` and the decoder stays failed (every
    later call raises too), since the stream can no longer be resynchronised. ``max_frame_bytes``
    may be raised between frames (the handshake uses a small limit, the channel a large one): a
    header is checked when it arrives in :meth:`receive_data` if it is the first pending one, else
    when :meth:`next_frame` reaches it, always before its body is returned or waited for.

    Bytes come in two ways. :meth:`receive_data` copies them in. To save that copy on big frames,
    a reader may first ask :meth:`receive_buffer` where the next bytes belong: while a frame of at
    least ``OWN_BUFFER_BYTES`` is being received it is the unfilled rest of that frame's own buffer,
    which the reader fills directly (``socket.recv_into``) and then reports with
    :meth:`received_into`. Frames from :meth:`next_frame` are ``bytes``, or for frames received
    into their own buffer a ``bytearray`` that belongs to the caller from then on.

    With a ``pool``, a frame's own buffer is an idle one of the pool when one of exactly the
    frame's length is there and the peer has sent at least that many bytes so far (the same bound
    as for allocating a buffer whole: a pooled buffer taken is memory the pool no longer holds, and
    a bare header must not pin it); the caller may hand such frames back with
    :meth:`FramePool.give` once done with them.
    """

    def __init__(self, max_frame_bytes: int, pool: FramePool | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.pool = pool
        self._pending = bytearray()  # received bytes not yet part of a returned or open frame
        self._body: bytearray | None = None  # the open frame's own buffer
        self._body_length = 0  # the open frame's length (its buffer may still be shorter)
        self._body_filled = 0
        self._received = 0  # all bytes ever received: bounds what a frame may commit up front
        self._error: ProtocolError | None = None

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived but not all of it (a frame is being delivered)."""
        return self._body is not None or bool(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._pending) + (self._body_filled if self._body is not None else 0)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the stream; :class:`ProtocolError` on an oversized frame."""
        if self._error is not None:
            raise self._error
        self._received += len(data)
        if self._body is not None and self._body_filled < self._body_length:
            take = min(len(data), self._body_length - self._body_filled)
            self._fill_body(data[:take])
            data = data[take:]
        self._pending += data
        if self._body is None:
            self._check_header()

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes of the stream may be written directly, or ``None`` (then use
        :meth:`receive_data`): the unfilled part of the open frame's own buffer, if any."""
        if self._error is not None or self._body is None:
            return None
        remaining = self._body_length - self._body_filled
        if remaining == 0:
            return None
        if self._body_filled == len(self._body):  # full: grow it (doubling) before reading on
            self._reserve(self._body_filled + min(remaining, OWN_BUFFER_BYTES))
        return memoryview(self._body)[self._body_filled :]

    def received_into(self, count: int) -> None:
        """Record that ``count`` bytes were written at the start of the view that
        :meth:`receive_buffer` returned."""
        if self._body is None or not 0 <= count <= len(self._body) - self._body_filled:
            raise ValueError("received_into() without a receive_buffer() of that size")
        self._body_filled += count
        self._received += count

    def next_frame(self) -> bytes | bytearray | None:
        """The next whole frame's payload, or ``None`` until more bytes arrive."""
        if self._error is not None:
            raise self._error
        body = self._body
        if body is not None:
            if self._body_filled < self._body_length:
                return None
            self._body = None
            return body
        self._check_header()
        pending = self._pending
        if len(pending) < HEADER_BYTES:
            return None
        (length,) = HEADER.unpack_from(pending)
        end = HEADER_BYTES + length
        if length >= OWN_BUFFER_BYTES and len(pending) < end:
            # Open the frame's own buffer; its bytes then go straight there.
            reused = None
            if self.pool is not None and length <= max(OWN_BUFFER_BYTES, self._received):
                reused = self.pool.take_idle(length)
            if reused is not None:
                self._body = reused
            else:
                eager = min(length, EAGER_BODY_BYTES, max(OWN_BUFFER_BYTES, self._received))
                self._body = bytearray(eager)
            self._body_length = length
            self._body_filled = 0
            with memoryview(pending) as view:
                self._fill_body(view[HEADER_BYTES:])
            del pending[:]
            return None
        if len(pending) < end:
            return None
        with memoryview(pending) as view:
            payload = bytes(view[HEADER_BYTES:end])
        del pending[:end]
        return payload

    def feed(self, data: bytes) -> list[bytes | bytearray]:
        """Append ``data`` and return every frame now complete, in order."""
        self.receive_data(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def _fill_body(self, data: bytes | bytearray | memoryview) -> None:
        self._reserve(self._body_filled + len(data))
        assert self._body is not None
        self._body[self._body_filled : self._body_filled + len(data)] = data
        self._body_filled += len(data)

    def _reserve(self, size: int) -> None:
        """Grow the open frame's buffer (doubling, up to the frame's length) to hold ``size``.

        A new buffer is made rather than the old one resized: views of it from
        :meth:`receive_buffer` may still exist."""
        body = self._body
        assert body is not None
        if size > len(body):
            grown = bytearray(min(self._body_length, max(size, 2 * len(body))))
            grown[: self._body_filled] = memoryview(body)[: self._body_filled]
            self._body = grown

    def _check_header(self) -> None:
        if len(self._pending) >= HEADER_BYTES:
            (length,) = HEADER.unpack_from(self._pending)
            if length > self.max_frame_bytes:
                self._error = ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
                self._pending.clear()
                raise self._error
