"""Limits and timeouts of the chunk protocol, as one frozen :class:`WireConfig`.

Every limit is a named constant with the reason for its value; :class:`WireConfig` gathers the ones
an operator may want to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

MAX_CHUNK_BYTES = 16 * 1024 * 1024
"""The largest chunk the protocol carries: the store's largest chunk size (16 MiB)."""

FRAME_OVERHEAD_BYTES = 64 * 1024
"""Room for the msgpack envelope, request ID and AEAD tag around the largest chunk."""

HANDSHAKE_MAX_FRAME_BYTES = 1024
"""Handshake messages are a few hundred bytes; an unauthenticated peer may not make us buffer more.
"""

MAX_GET_BATCH = 256
"""Chunk IDs in one GET: 8 KiB of IDs; bounds the work one request can ask for."""

MAX_FEATURES = 32
"""Feature names a HELLO may list."""

MAX_VERSIONS = 16
"""Protocol versions a HELLO may list."""

MAX_TEXT_CHARS = 1024
"""Longest string field (error messages, feature names): enough to explain, too short to abuse."""

DEFAULT_MAX_CONNECTIONS = 256
"""Concurrent inbound connections (each costs a task, buffers and a file descriptor)."""

DEFAULT_MAX_IN_FLIGHT = 32
"""Requests one connection may have in flight before the server stops reading from it."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds for a whole handshake: three round trips on a slow link, far less than a stalled peer."""

DEFAULT_IDLE_TIMEOUT = 120.0
"""Seconds a connection may go without a frame in either direction before it is closed."""

DEFAULT_FRAME_TIMEOUT = 30.0
"""Seconds to deliver a frame once its first byte arrived (allows 16 MiB at 560 KB/s);
stops slow-loris senders and readers."""

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a client waits for the whole answer to one request."""

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds for the TCP connect plus the handshake, on the dialling side."""

DEFAULT_POOL_SIZE = 64
"""Open outbound channels one pool keeps (one per peer)."""

RECEIVE_SIZE = 1024 * 1024
"""Bytes asked of the socket per read: large reads keep per-call overhead low on MiB frames."""

OUTBOUND_QUEUE = 4
"""Outbound frames of a channel being sealed or waiting for the writer before senders wait: bounds
memory per connection, and the served chunks read and sealed at once (in worker threads)."""

PIPELINE_DEPTH = 1
"""Received frames waiting to be opened: one is enough for crypto and I/O to overlap; more only
adds memory."""

THREAD_THRESHOLD_BYTES = 64 * 1024
"""Frames at least this big are sealed, opened and hashed in a worker thread (they release the GIL);
smaller ones are faster inline than the thread hand-off."""


@dataclass(frozen=True)
class WireConfig:
    """Settings of the chunk protocol, shared by the server and the client.

    Raises :class:`~p2pstore.errors.ConfigError` from the constructor if a value is out of range.
    """

    max_chunk_bytes: int = MAX_CHUNK_BYTES
    max_frame_bytes: int = MAX_CHUNK_BYTES + FRAME_OVERHEAD_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE

    def __post_init__(self) -> None:
        if not 1 <= self.max_chunk_bytes <= self.max_frame_bytes - FRAME_OVERHEAD_BYTES:
            raise ConfigError("max_frame_bytes must leave FRAME_OVERHEAD_BYTES around a chunk")
        if self.max_frame_bytes >= 2**32:
            raise ConfigError("max_frame_bytes must fit the 4-byte length prefix")
        for name in ("max_connections", "max_in_flight", "pool_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "handshake_timeout",
            "idle_timeout",
            "frame_timeout",
            "request_timeout",
            "connect_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
