"""Per-direction AEAD: ChaCha20-Poly1305 with an implicit counter nonce (sans-IO).

Each direction has its own key and its own counter starting at 0; the nonce is 4 zero bytes and the
counter as 8 bytes big-endian. The counter is never sent: the receiver expects exactly the next one,
so a replayed, reordered, dropped, truncated or altered frame fails authentication. The frame's
length prefix is the associated data.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import ProtocolError
from .framing import HEADER

TAG_BYTES = 16
"""Poly1305 tag appended to every sealed frame."""

MAX_COUNTER = 2**64 - 1
"""The 64-bit nonce counter; a channel is closed long before it could wrap (2^64 frames)."""

_NONCE = struct.Struct(">4xQ")


def _nonce(counter: int) -> bytes:
    return _NONCE.pack(counter)


class Sealer:
    """Seals outgoing frame payloads; frames must be written in the order their nonces were taken.

    :meth:`next_nonce` and :meth:`seal_with` split the work so the (thread-safe, GIL-releasing)
    encryption can run in a worker thread while the order is fixed on the event loop.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def next_nonce(self) -> int:
        """Take the next counter value (raises :class:`ProtocolError` when exhausted)."""
        counter = self._counter
        if counter > MAX_COUNTER:
            raise ProtocolError("nonce counter exhausted; the channel must be closed")
        self._counter = counter + 1
        return counter

    def seal_with(self, counter: int, plaintext: bytes | bytearray | memoryview) -> bytearray:
        """The whole frame (length prefix, ciphertext, tag) of ``plaintext`` under ``counter``."""
        frame = bytearray(HEADER.size + len(plaintext) + TAG_BYTES)
        frame[HEADER.size : HEADER.size + len(plaintext)] = plaintext
        self.seal_in_place(counter, frame)
        return frame

    def seal_in_place(self, counter: int, frame: bytearray) -> None:
        """Seal a frame built in place: ``frame`` is the plaintext with ``HEADER.size`` bytes of
        room before it and ``TAG_BYTES`` after it; the length prefix, ciphertext and tag are
        written over it. (Saves a copy of big payloads: they can be read straight into a frame.)"""
        size = len(frame) - HEADER.size
        if size < TAG_BYTES:
            raise ValueError("frame has no room for the tag")
        header = HEADER.pack(size)
        frame[: HEADER.size] = header
        with memoryview(frame) as view:
            plaintext, output = view[HEADER.size : len(frame) - TAG_BYTES], view[HEADER.size :]
            # In place: OpenSSL's AEAD allows the output to be the input exactly.
            self._aead.encrypt_into(_nonce(counter), plaintext, header, output)

    def seal(self, plaintext: bytes) -> bytearray:
        """Take the next nonce and seal ``plaintext`` into a frame."""
        return self.seal_with(self.next_nonce(), plaintext)


class Opener:
    """Opens incoming frame payloads, which must arrive in nonce order.

    Any failure raises :class:`ProtocolError`; the caller must then close the connection.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def next_nonce(self) -> int:
        """Take the counter the next frame must have been sealed with."""
        counter = self._counter
        if counter > MAX_COUNTER:
            raise ProtocolError("nonce counter exhausted")
        self._counter = counter + 1
        return counter

    def open_with(self, counter: int, payload: bytes | bytearray) -> bytes | memoryview:
        """The plaintext of a frame ``payload`` (ciphertext + tag) sealed under ``counter``.

        A ``bytearray`` payload is decrypted in place (saving a copy of big frames) and a view of
        its first ``len(payload) - TAG_BYTES`` bytes is returned; ``bytes`` give new ``bytes``.
        """
        if len(payload) < TAG_BYTES:
            raise ProtocolError("sealed frame shorter than its tag")
        nonce, associated = _nonce(counter), HEADER.pack(len(payload))
        try:
            if isinstance(payload, bytearray):
                view = memoryview(payload)
                self._aead.decrypt_into(nonce, view, associated, view[: len(payload) - TAG_BYTES])
                return view[: len(payload) - TAG_BYTES]
            return self._aead.decrypt(nonce, payload, associated)
        except InvalidTag:
            raise ProtocolError(
                "frame failed authentication (tampered, replayed, reordered or truncated)"
            ) from None

    def open(self, payload: bytes | bytearray) -> bytes | memoryview:
        """Open the next frame's payload."""
        return self.open_with(self.next_nonce(), payload)
