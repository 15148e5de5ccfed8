"""p2pstore: a peer-to-peer, content-addressed, erasure-coded file store built on Trio."""

from ._version import __version__
from .errors import (
    ChunkNotFoundError,
    ConfigError,
    CorruptChunkError,
    FileUnavailableError,
    HandshakeError,
    ManifestError,
    NotEnoughSharesError,
    P2PStoreError,
    ProtocolError,
    QuotaExceededError,
)
from .identity import Identity

__all__ = [
    "ChunkNotFoundError",
    "ConfigError",
    "CorruptChunkError",
    "FileUnavailableError",
    "HandshakeError",
    "Identity",
    "ManifestError",
    "NotEnoughSharesError",
    "P2PStoreError",
    "ProtocolError",
    "QuotaExceededError",
    "__version__",
]
