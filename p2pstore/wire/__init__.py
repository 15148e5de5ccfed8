"""The chunk protocol over TCP: length-prefixed msgpack frames on an encrypted, authenticated
channel.

Layers, bottom up (each sans-IO except the last three): :mod:`.framing` (length prefix),
:mod:`.messages` (schema-checked msgpack codec), :mod:`.seal` (per-direction ChaCha20-Poly1305 with
counter nonces), :mod:`.handshake` (X25519 + Ed25519 transcript signatures + HKDF),
:mod:`.channel` (the Trio pump), :mod:`.server` and :mod:`.client`.
"""

from __future__ import annotations

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
