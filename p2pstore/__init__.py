"""p2pstore: a peer-to-peer, content-addressed, erasure-coded file store built on Trio.

The entry point is :func:`open_node`; everything else here is what its users handle (the node,
its configuration and results, the store and manifest types, the erasure code, the errors).
Internals live in submodules and may change.
"""

from ._version import __version__
from .dht import Contact, DhtConfig, ProviderRecord
from .erasure import ReedSolomon
from .errors import (
    BootstrapError,
    ChunkNotFoundError,
    ConfigError,
    CorruptChunkError,
    FileUnavailableError,
    HandshakeError,
    ManifestError,
    NotDispersedError,
    NotEnoughSharesError,
    P2PStoreError,
    ProtocolError,
    QuotaExceededError,
    UnknownFileError,
)
from .identity import Identity
from .manifest import Manifest
from .node import (
    DownloadProgress,
    GetResult,
    Node,
    NodeConfig,
    NodeStatus,
    PutProgress,
    open_node,
)
from .store import ChunkStore, StoredFile, VerifyReport
from .transfer.download import DownloadConfig
from .wire.config import WireConfig

__all__ = [
    "BootstrapError",
    "ChunkNotFoundError",
    "ChunkStore",
    "ConfigError",
    "Contact",
    "CorruptChunkError",
    "DhtConfig",
    "DownloadConfig",
    "DownloadProgress",
    "FileUnavailableError",
    "GetResult",
    "HandshakeError",
    "Identity",
    "Manifest",
    "ManifestError",
    "Node",
    "NodeConfig",
    "NodeStatus",
    "NotDispersedError",
    "NotEnoughSharesError",
    "P2PStoreError",
    "ProtocolError",
    "ProviderRecord",
    "PutProgress",
    "QuotaExceededError",
    "ReedSolomon",
    "StoredFile",
    "UnknownFileError",
    "VerifyReport",
    "WireConfig",
    "__version__",
    "open_node",
]
