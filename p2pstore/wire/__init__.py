"""The chunk protocol over TCP: length-prefixed msgpack frames on an encrypted, authenticated
channel.

Layers, bottom up (each sans-IO except the last three): :mod:`.framing` (length prefix),
:mod:`.messages` (schema-checked msgpack codec), :mod:`.seal` (per-direction ChaCha20-Poly1305 with
counter nonces), :mod:`.handshake` (X25519 + Ed25519 transcript signatures + HKDF),
:mod:`.channel` (the Trio pump), :mod:`.server` and :mod:`.client`.
"""

from __future__ import annotations

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
