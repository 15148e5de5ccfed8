"""p2pstore: a peer-to-peer, content-addressed, erasure-coded file store built on Trio.

The entry point is :func:`open_node`; everything else here is what its users handle (the node,
its configuration and results, the store and manifest types, the erasure code, the errors).
Internals live in submodules and may change.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
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

# The public names are imported on first use (PEP 562), so that ``import p2pstore.cli`` (every
# CLI command) does not pay for numpy, cryptography, trio and the node stack it may never need.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("Contact", "DhtConfig", "ProviderRecord"), ".dht"),
    "ReedSolomon": ".erasure",
    **dict.fromkeys(
        (
            "BootstrapError",
            "ChunkNotFoundError",
            "ConfigError",
            "CorruptChunkError",
            "FileUnavailableError",
            "HandshakeError",
            "ManifestError",
            "NotDispersedError",
            "NotEnoughSharesError",
            "P2PStoreError",
            "ProtocolError",
            "QuotaExceededError",
            "UnknownFileError",
        ),
        ".errors",
    ),
    "Identity": ".identity",
    "Manifest": ".manifest",
    **dict.fromkeys(
        (
            "DownloadProgress",
            "GetResult",
            "Node",
            "NodeConfig",
            "NodeStatus",
            "PutProgress",
            "open_node",
        ),
        ".node",
    ),
    **dict.fromkeys(("ChunkStore", "StoredFile", "VerifyReport"), ".store"),
    "DownloadConfig": ".transfer.download",
    "WireConfig": ".wire.config",
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
