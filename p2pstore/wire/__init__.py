"""The chunk protocol over TCP: length-prefixed msgpack frames on an encrypted, authenticated
channel.

Layers, bottom up (each sans-IO except the last three): :mod:`.framing` (length prefix),
:mod:`.messages` (schema-checked msgpack codec), :mod:`.seal` (per-direction ChaCha20-Poly1305 with
counter nonces), :mod:`.handshake` (X25519 + Ed25519 transcript signatures + HKDF),
:mod:`.channel` (the Trio pump), :mod:`.server` and :mod:`.client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import SecureChannel, accept, initiate
    from .client import ConnectionPool, PeerAddress, PeerConnection
    from .config import MAX_CHUNK_BYTES, MAX_GET_BATCH, WireConfig
    from .framing import FrameDecoder, encode_frame
    from .handshake import (
        FEATURES,
        PROTOCOL_VERSION,
        SUPPORTED_VERSIONS,
        HandshakeRefused,
        HandshakeResult,
        InitiatorHandshake,
        ResponderHandshake,
    )
    from .messages import (
        Ack,
        Auth,
        Bitmap,
        Bye,
        Chunk,
        Error,
        ErrorCode,
        Get,
        Have,
        Hello,
        Message,
        MessageCodec,
        MessageFramer,
        Missing,
        Put,
    )
    from .seal import Opener, Sealer
    from .server import ChunkServer, ServerStore

# Imported on first use (PEP 562): ``p2pstore.control`` needs only ``.framing``, and importing it
# must not load the channel's cryptography (the CLI's start-up time).
_LAZY: dict[str, str] = {
    "SecureChannel": ".channel",
    "accept": ".channel",
    "initiate": ".channel",
    "ConnectionPool": ".client",
    "PeerAddress": ".client",
    "PeerConnection": ".client",
    "MAX_CHUNK_BYTES": ".config",
    "MAX_GET_BATCH": ".config",
    "WireConfig": ".config",
    "FrameDecoder": ".framing",
    "encode_frame": ".framing",
    "FEATURES": ".handshake",
    "PROTOCOL_VERSION": ".handshake",
    "SUPPORTED_VERSIONS": ".handshake",
    "HandshakeRefused": ".handshake",
    "HandshakeResult": ".handshake",
    "InitiatorHandshake": ".handshake",
    "ResponderHandshake": ".handshake",
    "Ack": ".messages",
    "Auth": ".messages",
    "Bitmap": ".messages",
    "Bye": ".messages",
    "Chunk": ".messages",
    "Error": ".messages",
    "ErrorCode": ".messages",
    "Get": ".messages",
    "Have": ".messages",
    "Hello": ".messages",
    "Message": ".messages",
    "MessageCodec": ".messages",
    "MessageFramer": ".messages",
    "Missing": ".messages",
    "Put": ".messages",
    "Opener": ".seal",
    "Sealer": ".seal",
    "ChunkServer": ".server",
    "ServerStore": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "FEATURES",
    "MAX_CHUNK_BYTES",
    "MAX_GET_BATCH",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Ack",
    "Auth",
    "Bitmap",
    "Bye",
    "Chunk",
    "ChunkServer",
    "ConnectionPool",
    "Error",
    "ErrorCode",
    "FrameDecoder",
    "Get",
    "HandshakeRefused",
    "HandshakeResult",
    "Have",
    "Hello",
    "InitiatorHandshake",
    "Message",
    "MessageCodec",
    "MessageFramer",
    "Missing",
    "Opener",
    "PeerAddress",
    "PeerConnection",
    "Put",
    "ResponderHandshake",
    "Sealer",
    "SecureChannel",
    "ServerStore",
    "WireConfig",
    "accept",
    "encode_frame",
    "initiate",
]
