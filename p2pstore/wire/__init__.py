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
    from .client import ConnectionPool, PeerAddress, PeerBusyError, PeerConnection, WatchHandle
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
        Busy,
        Bye,
        Chunk,
        Error,
        ErrorCode,
        Get,
        Have,
        HaveUpdate,
        Hello,
        Message,
        MessageCodec,
        MessageFramer,
        Missing,
        Put,
        Watch,
    )
    from .seal import Opener, Sealer
    from .server import ChunkServer, ServerStore
    from .uploads import FairShare, UploadBusy, UploadGate

# Imported on first use (PEP 562): ``p2pstore.control`` needs only ``.framing``, and importing it
# must not load the channel's cryptography (the CLI's start-up time).
_LAZY: dict[str, str] = {
    "SecureChannel": ".channel",
    "accept": ".channel",
    "initiate": ".channel",
    "ConnectionPool": ".client",
    "PeerAddress": ".client",
    "PeerBusyError": ".client",
    "PeerConnection": ".client",
    "WatchHandle": ".client",
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
    "Busy": ".messages",
    "Bye": ".messages",
    "Chunk": ".messages",
    "Error": ".messages",
    "ErrorCode": ".messages",
    "Get": ".messages",
    "Have": ".messages",
    "HaveUpdate": ".messages",
    "Hello": ".messages",
    "Message": ".messages",
    "MessageCodec": ".messages",
    "MessageFramer": ".messages",
    "Missing": ".messages",
    "Put": ".messages",
    "Watch": ".messages",
    "Opener": ".seal",
    "Sealer": ".seal",
    "ChunkServer": ".server",
    "ServerStore": ".server",
    "FairShare": ".uploads",
    "UploadBusy": ".uploads",
    "UploadGate": ".uploads",
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
    "Busy",
    "Bye",
    "Chunk",
    "ChunkServer",
    "ConnectionPool",
    "Error",
    "ErrorCode",
    "FairShare",
    "FrameDecoder",
    "Get",
    "HandshakeRefused",
    "HandshakeResult",
    "Have",
    "HaveUpdate",
    "Hello",
    "InitiatorHandshake",
    "Message",
    "MessageCodec",
    "MessageFramer",
    "Missing",
    "Opener",
    "PeerAddress",
    "PeerBusyError",
    "PeerConnection",
    "Put",
    "ResponderHandshake",
    "Sealer",
    "SecureChannel",
    "ServerStore",
    "UploadBusy",
    "UploadGate",
    "Watch",
    "WatchHandle",
    "WireConfig",
    "accept",
    "encode_frame",
    "initiate",
]
