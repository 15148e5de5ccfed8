"""The package's exception hierarchy.

Every error a caller can act on derives from :class:`P2PStoreError`, so ``except P2PStoreError``
catches everything the library raises on purpose. Misbehaviour of a remote peer is a
:class:`ProtocolError`: it closes that peer's connection (or drops its datagram) and never the node.
"""

from __future__ import annotations


class P2PStoreError(Exception):
    """Base class of every error raised on purpose by p2pstore."""


class ConfigError(P2PStoreError):
    """A parameter or setting is out of range or inconsistent (chunk size, k, m, ports...)."""


class BootstrapError(P2PStoreError):
    """A DHT node could not join: no bootstrap address (and no saved contact) answered."""


class ProtocolError(P2PStoreError):
    """A peer sent something malformed, oversized, forged or out of order.

    The connection or datagram it arrived on is discarded; the node carries on.
    """


class HandshakeError(ProtocolError):
    """The secure-channel handshake failed: wrong identity, bad signature, unknown version..."""


class NotEnoughSharesError(P2PStoreError):
    """Fewer than k shares of a stripe are available, so it cannot be rebuilt."""


class CorruptChunkError(P2PStoreError):
    """A chunk's bytes do not hash to its ID (on disk or from a peer)."""

    def __init__(self, chunk_id: bytes, message: str | None = None) -> None:
        self.chunk_id = chunk_id
        default = f"chunk {chunk_id.hex()} is corrupt: its bytes do not match its ID"
        super().__init__(message or default)


class ChunkNotFoundError(P2PStoreError):
    """A chunk asked for is not in the store."""

    def __init__(self, chunk_id: bytes) -> None:
        self.chunk_id = chunk_id
        super().__init__(f"chunk {chunk_id.hex()} is not in the store")


class UnknownFileError(ChunkNotFoundError):
    """A file ID this node has no record of (neither put, fetched nor held here)."""

    def __init__(self, file_id: bytes) -> None:
        P2PStoreError.__init__(self, f"file {file_id.hex()} is not known to this node")
        self.chunk_id = file_id


class ManifestError(P2PStoreError):
    """A manifest is malformed, or does not hash to the file ID it was fetched for."""


class FileUnavailableError(P2PStoreError):
    """A file cannot be fetched: not enough shares of some stripe are reachable.

    ``missing`` maps stripe index -> the chunk IDs that could not be obtained.
    """

    def __init__(self, message: str, missing: dict[int, list[bytes]] | None = None) -> None:
        self.missing = missing or {}
        super().__init__(message)


class QuotaExceededError(P2PStoreError):
    """Storing a chunk would exceed the node's storage quota."""


class NotDispersedError(P2PStoreError):
    """A put asked to disperse the file could place no share on any other peer.

    The file *is* stored (and announced) on this node: ``file_id`` names it, and putting it
    again once peers are reachable disperses it (nothing is stored twice). ``reason`` says why
    nothing was dispersed (no peer found, or every peer failed).
    """

    def __init__(self, file_id: bytes, reason: str) -> None:
        self.file_id = file_id
        self.reason = reason
        super().__init__(
            f"stored locally only, not dispersed: {reason} (file ID {file_id.hex()}; run put"
            " again once peers are reachable, or use --no-disperse to keep files local)"
        )


class TransferCancelledError(P2PStoreError):
    """A running transfer was stopped by ``p2pstore cancel`` (``Node.cancel_transfer``).

    The operation cleaned up as a failed one does (a put removes what it wrote; a get keeps its
    verified chunks, so running it again resumes)."""


class NoSuchTransferError(P2PStoreError):
    """``cancel``: no running transfer has that number, or it cannot be cancelled."""
