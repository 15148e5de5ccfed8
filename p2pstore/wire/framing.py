"""Sans-IO length-prefixed framing: a 4-byte big-endian length, then that many bytes.

No sockets here: :class:`FrameDecoder` is fed bytes and hands back whole frames;
:func:`encode_frame` turns a payload into bytes to write.
"""

from __future__ import annotations

import struct

from ..errors import ProtocolError

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit big-endian."""

HEADER_BYTES = HEADER.size


def encode_frame(payload: bytes) -> bytes:
    """The frame carrying ``payload``: its length (4 bytes, big-endian) followed by it.

    Raises :class:`ValueError` if the payload does not fit a 32-bit length (a local bug, not a
    peer's fault).
    """
    if len(payload) >= 2**32:
        raise ValueError("frame payload too large for the 4-byte length prefix")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frames, refusing any frame longer than ``max_frame_bytes``.

    The length of each frame is checked as soon as its 4-byte header has arrived, before its body is
    buffered: an oversized length raises :class:`ProtocolError` and the decoder stays failed (every
    later call raises too), since the stream can no longer be resynchronised. ``max_frame_bytes``
    may be raised between frames (the handshake uses a small limit, the channel a large one): a
    header is checked when it arrives in :meth:`receive_data` if it is the first pending one, else
    when :meth:`next_frame` reaches it, always before its body is returned or waited for.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived but not all of it (a frame is being delivered)."""
        return bool(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the stream; :class:`ProtocolError` on an oversized frame."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        self._check_header()

    def next_frame(self) -> bytes | None:
        """The next whole frame's payload, or ``None`` until more bytes arrive."""
        if self._error is not None:
            raise self._error
        self._check_header()
        buffer = self._buffer
        if len(buffer) < HEADER_BYTES:
            return None
        (length,) = HEADER.unpack_from(buffer)
        end = HEADER_BYTES + length
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:
            payload = bytes(view[HEADER_BYTES:end])
        del buffer[:end]
        return payload

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return every frame now complete, in order."""
        self.receive_data(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def _check_header(self) -> None:
        if len(self._buffer) >= HEADER_BYTES:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                self._error = ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
                self._buffer.clear()
                raise self._error
