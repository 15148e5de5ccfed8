"""The chunk protocol's messages and their schema-checked msgpack codec (sans-IO).

Every message is a msgpack map with a type ``t`` (a short string) and a request ID ``id`` (an
unsigned 32-bit integer: replies carry the ID of their request, so requests can be pipelined and
answered out of order). :class:`MessageCodec` turns messages into bytes and back; decoding checks
the exact set of keys and every field's type and size, so any malformed input is a
:class:`~p2pstore.errors.ProtocolError` and nothing else. :class:`MessageFramer` adds the framing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgpack

from ..errors import ProtocolError
from .config import (
    MAX_CHUNK_BYTES,
    MAX_FEATURES,
    MAX_GET_BATCH,
    MAX_TEXT_CHARS,
    MAX_VERSIONS,
)
from .framing import FrameDecoder, encode_frame

ID_BYTES = 32
"""Chunk, file and node IDs are SHA-256 digests."""

KEY_BYTES = 32
"""X25519 and Ed25519 public keys."""

SIGNATURE_BYTES = 64
"""Ed25519 signatures."""

MAX_REQUEST_ID = 2**32 - 1
"""Request IDs are unsigned 32-bit integers (a client wraps around long before reuse matters)."""

MAX_RETRY_MS = 60_000
"""The longest retry hint a BUSY may carry: a minute; a client never waits longer on one hint."""

MAX_UPDATE_INDICES = MAX_GET_BATCH
"""Chunk indices in one HAVE_UPDATE (256, the array limit of every message)."""

MAX_MAP_KEYS = 16
"""No message has more fields than this; a bigger map is refused before it is built."""


class ErrorCode(enum.IntEnum):
    """The ``code`` of an ERROR message."""

    BAD_REQUEST = 1
    """The request was understood but not acceptable (e.g. unexpected message type)."""
    UNSUPPORTED_VERSION = 2
    """No protocol version in common (handshake)."""
    QUOTA_EXCEEDED = 3
    """A PUT would exceed the receiver's storage quota."""
    CORRUPT_CHUNK = 4
    """A PUT's bytes do not hash to its chunk ID."""
    INTERNAL = 5
    """The receiver failed for a reason of its own."""
    TOO_MANY_WATCHES = 6
    """A WATCH beyond the receiver's limit of watches per connection."""


@dataclass(frozen=True, slots=True)
class Hello:
    """Handshake: who I am, what I speak, my ephemeral key. ``version`` is set only in the reply."""

    request_id: int
    versions: tuple[int, ...]
    features: tuple[str, ...]
    node_id: bytes
    public_key: bytes
    ephemeral: bytes
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    """Handshake: a signature of the transcript so far by the sender's identity key."""

    request_id: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Get:
    """Ask for a batch of chunks; answered by one CHUNK or MISSING per ID, in any order."""

    request_id: int
    chunk_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk's bytes, answering a GET.

    ``intact`` is not on the wire: the secure channel sets it on receipt to whether ``data`` hashes
    to ``chunk_id`` (checked in the worker thread that opened the frame); ``None`` = not checked.
    """

    request_id: int
    chunk_id: bytes
    data: bytes
    intact: bool | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Missing:
    """The sender does not have (a verified copy of) this chunk, answering a GET."""

    request_id: int
    chunk_id: bytes


@dataclass(frozen=True, slots=True)
class Have:
    """Ask which chunks of a file the receiver holds; answered by BITMAP."""

    request_id: int
    file_id: bytes


@dataclass(frozen=True, slots=True)
class Bitmap:
    """Answer to HAVE: bit i (LSB-first in each byte) = chunk i of the manifest; None = unknown."""

    request_id: int
    file_id: bytes
    bitmap: bytes | None


@dataclass(frozen=True, slots=True)
class Put:
    """Offer a chunk for the receiver to keep; answered by ACK or ERROR. ``intact``: as CHUNK's."""

    request_id: int
    chunk_id: bytes
    data: bytes
    intact: bool | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ack:
    """A PUT was accepted; ``stored`` is False if the chunk was already there."""

    request_id: int
    chunk_id: bytes
    stored: bool


@dataclass(frozen=True, slots=True)
class Error:
    """A request (or the handshake, ``request_id`` 0) failed."""

    request_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """The client no longer wants the replies to request ``request_id`` (a GET it abandoned).

    The server stops serving it; replies already on their way are discarded by the client. Sent
    only when both sides announced the ``cancel`` feature. Never answered.
    """

    request_id: int


@dataclass(frozen=True, slots=True)
class Busy:
    """The server cannot send this chunk of a GET soon: ask again after ``retry_ms`` ms (or ask
    another holder). One of the replies of a GET, in place of CHUNK or MISSING (``swarm``)."""

    request_id: int
    chunk_id: bytes
    retry_ms: int


@dataclass(frozen=True, slots=True)
class Watch:
    """Ask which chunks of a file the receiver holds *and* to be told of the ones it stores later.

    Answered by one BITMAP (as HAVE is), then any number of HAVE_UPDATEs with the same request ID
    until the client sends CANCEL for it or the channel ends. ``port`` is the TCP port of the
    sender's own chunk server (0: none), so the receiver may download from it too (``swarm``).
    """

    request_id: int
    file_id: bytes
    port: int


@dataclass(frozen=True, slots=True)
class HaveUpdate:
    """Chunks of a watched file the sender has stored since its last BITMAP or HAVE_UPDATE:
    global indices in the manifest's ``chunk_ids()`` order (1..256 of them)."""

    request_id: int
    file_id: bytes
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    """The sender is closing the channel in an orderly way."""

    request_id: int = 0


Message: TypeAlias = (
    Hello
    | Auth
    | Get
    | Chunk
    | Missing
    | Have
    | Bitmap
    | Put
    | Ack
    | Error
    | Cancel
    | Busy
    | Watch
    | HaveUpdate
    | Bye
)

_Check = Callable[[Any, int], Any]


def _fail(what: str) -> ProtocolError:
    return ProtocolError(f"malformed message: {what}")


def _uint(value: Any, _limit: int) -> int:
    if type(value) is not int or not 0 <= value <= MAX_REQUEST_ID:
        raise _fail("expected an unsigned 32-bit integer")
    return value


def _id(value: Any, _limit: int) -> bytes:
    if type(value) is not bytes or len(value) != ID_BYTES:
        raise _fail(f"expected a {ID_BYTES}-byte ID")
    return value


def _key(value: Any, _limit: int) -> bytes:
    if type(value) is not bytes or len(value) != KEY_BYTES:
        raise _fail(f"expected a {KEY_BYTES}-byte key")
    return value


def _signature(value: Any, _limit: int) -> bytes:
    if type(value) is not bytes or len(value) != SIGNATURE_BYTES:
        raise _fail(f"expected a {SIGNATURE_BYTES}-byte signature")
    return value


def _data(value: Any, limit: int) -> bytes:
    if type(value) is not bytes or len(value) > limit:
        raise _fail(f"expected at most {limit} bytes of chunk data")
    return value


def _bitmap(value: Any, limit: int) -> bytes | None:
    if value is None:
        return None
    return _data(value, limit)


def _text(value: Any, _limit: int) -> str:
    if type(value) is not str or len(value) > MAX_TEXT_CHARS:
        raise _fail(f"expected a string of at most {MAX_TEXT_CHARS} characters")
    return value


def _bool(value: Any, _limit: int) -> bool:
    if type(value) is not bool:
        raise _fail("expected a boolean")
    return value


def _versions(value: Any, limit: int) -> tuple[int, ...]:
    if type(value) is not list or not 1 <= len(value) <= MAX_VERSIONS:
        raise _fail(f"expected 1..{MAX_VERSIONS} versions")
    return tuple(_uint(v, limit) for v in value)


def _features(value: Any, limit: int) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_FEATURES:
        raise _fail(f"expected at most {MAX_FEATURES} features")
    return tuple(_text(v, limit) for v in value)


def _retry_ms(value: Any, _limit: int) -> int:
    if type(value) is not int or not 0 <= value <= MAX_RETRY_MS:
        raise _fail(f"expected a retry hint of 0..{MAX_RETRY_MS} ms")
    return value


def _port(value: Any, _limit: int) -> int:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise _fail("expected a TCP port 0..65535")
    return value


def _indices(value: Any, _limit: int) -> tuple[int, ...]:
    if type(value) is not list or not 1 <= len(value) <= MAX_UPDATE_INDICES:
        raise _fail(f"expected 1..{MAX_UPDATE_INDICES} chunk indices")
    return tuple(_uint(v, _limit) for v in value)


def _chunk_ids(value: Any, limit: int) -> tuple[bytes, ...]:
    if type(value) is not list or not 1 <= len(value) <= MAX_GET_BATCH:
        raise _fail(f"expected 1..{MAX_GET_BATCH} chunk IDs")
    return tuple(_id(v, limit) for v in value)


# Wire type name -> (class, {wire key: (attribute, check)}); "t" and "id" are common to all.
_SCHEMAS: dict[str, tuple[type[Any], dict[str, tuple[str, _Check]]]] = {
    "HELLO": (
        Hello,
        {
            "versions": ("versions", _versions),
            "features": ("features", _features),
            "node_id": ("node_id", _id),
            "public_key": ("public_key", _key),
            "ephemeral": ("ephemeral", _key),
        },
    ),
    "AUTH": (Auth, {"sig": ("signature", _signature)}),
    "GET": (Get, {"ids": ("chunk_ids", _chunk_ids)}),
    "CHUNK": (Chunk, {"cid": ("chunk_id", _id), "data": ("data", _data)}),
    "MISSING": (Missing, {"cid": ("chunk_id", _id)}),
    "HAVE": (Have, {"file": ("file_id", _id)}),
    "BITMAP": (Bitmap, {"file": ("file_id", _id), "bits": ("bitmap", _bitmap)}),
    "PUT": (Put, {"cid": ("chunk_id", _id), "data": ("data", _data)}),
    "ACK": (Ack, {"cid": ("chunk_id", _id), "stored": ("stored", _bool)}),
    "ERROR": (Error, {"code": ("code", _uint), "msg": ("message", _text)}),
    "CANCEL": (Cancel, {}),
    "BUSY": (Busy, {"cid": ("chunk_id", _id), "retry": ("retry_ms", _retry_ms)}),
    "WATCH": (Watch, {"file": ("file_id", _id), "port": ("port", _port)}),
    "HAVE_UPDATE": (HaveUpdate, {"file": ("file_id", _id), "idx": ("indices", _indices)}),
    "BYE": (Bye, {}),
}
_TYPE_NAMES: dict[type[Any], str] = {cls: name for name, (cls, _) in _SCHEMAS.items()}
_HELLO_REPLY_FIELDS = {**_SCHEMAS["HELLO"][1], "version": ("version", _uint)}


class MessageCodec:
    """Encodes messages to msgpack and decodes them with a full schema check.

    ``decode`` raises :class:`ProtocolError` for anything but a well-formed message: bad msgpack,
    trailing bytes, unknown type, missing or extra keys, wrong types, oversized fields.
    """

    def __init__(self, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        self.max_chunk_bytes = max_chunk_bytes

    def encode(self, message: Message) -> bytes:
        """The msgpack bytes of ``message`` (a bug, not a peer, if it does not fit the schema)."""
        head, data = self.encode_parts(message)
        return head + data if data else head

    def encode_parts(self, message: Message) -> tuple[bytes, bytes]:
        """``(head, data)`` such that ``head + data`` is :meth:`encode`'s result, where ``data``
        is a CHUNK's or PUT's bytes (empty for other messages): a sender can then place the data
        in its frame without building the message's bytes first (see :func:`data_message_head`)."""
        if isinstance(message, Chunk | Put):
            head = data_message_head(
                type(message), message.request_id, message.chunk_id, len(message.data)
            )
            return head, message.data
        name = _TYPE_NAMES[type(message)]
        fields = _HELLO_REPLY_FIELDS if isinstance(message, Hello) else _SCHEMAS[name][1]
        body: dict[str, Any] = {"t": name, "id": message.request_id}
        for key, (attribute, _) in fields.items():
            value = getattr(message, attribute)
            if isinstance(value, tuple):
                value = list(value)
            if key == "version" and value is None:
                continue
            body[key] = value
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed, b""

    def decode(self, payload: bytes | bytearray | memoryview) -> Message:
        """The message in ``payload``; raises :class:`ProtocolError` if it is not exactly one."""
        try:
            body = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_bin_len=self.max_chunk_bytes,
                max_str_len=MAX_TEXT_CHARS * 4,
                max_array_len=MAX_GET_BATCH,
                max_map_len=MAX_MAP_KEYS,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types on hostile input
            raise ProtocolError(f"undecodable message: {type(exc).__name__}") from None
        if type(body) is not dict:
            raise _fail("not a map")
        name = body.get("t")
        if type(name) is not str or name not in _SCHEMAS:
            raise _fail("unknown message type")
        cls, fields = _SCHEMAS[name]
        if name == "HELLO" and "version" in body:
            fields = _HELLO_REPLY_FIELDS
        if set(body) != {"t", "id", *fields}:
            raise _fail(f"wrong keys for {name}")
        values = {"request_id": _uint(body["id"], 0)}
        for key, (attribute, check) in fields.items():
            values[attribute] = check(body[key], self.max_chunk_bytes)
        message: Message = cls(**values)
        return message


def data_message_head(
    kind: type[Chunk] | type[Put], request_id: int, chunk_id: bytes, size: int
) -> bytes:
    """The msgpack bytes of a CHUNK or PUT message up to its ``size`` bytes of data, which follow.

    The data is the map's last value, so the head is the map with an empty ``data`` and that
    ``bin`` header swapped for one of ``size`` bytes.
    """
    body = {"t": _TYPE_NAMES[kind], "id": request_id, "cid": chunk_id, "data": b""}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    assert packed.endswith(_EMPTY_BIN)
    return packed[: -len(_EMPTY_BIN)] + _bin_header(size)


_EMPTY_BIN = b"\xc4\x00"


def _bin_header(size: int) -> bytes:
    """msgpack's ``bin 8/16/32`` header for ``size`` bytes (the smallest that fits, as msgpack
    itself writes it)."""
    if size < 2**8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 2**16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


class MessageFramer:
    """Framing plus codec, without encryption: ``feed(bytes) -> messages``, ``send(msg) -> bytes``.

    Used for the plaintext handshake messages and in tests; the secure channel seals the payloads
    between the two layers. A :class:`ProtocolError` leaves the framer failed.
    """

    def __init__(self, max_frame_bytes: int, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        self.decoder = FrameDecoder(max_frame_bytes)
        self.codec = MessageCodec(max_chunk_bytes)

    def send(self, message: Message) -> bytes:
        """The framed bytes of ``message``."""
        return encode_frame(self.codec.encode(message))

    def feed(self, data: bytes) -> list[Message]:
        """Append ``data``; every message now complete, in order."""
        return [self.codec.decode(frame) for frame in self.decoder.feed(data)]
