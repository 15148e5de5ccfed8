"""Reuse of big frame buffers, so that moving a chunk does not allocate and fault in fresh memory.

A 1 MiB ``bytearray`` is zero-filled by Python and, being above glibc's mmap threshold, usually
mapped fresh from the kernel and faulted in page by page; then it is unmapped again once the frame
is written or decoded. Measured on the wire benchmark, that was about a sixth of the serving side's
CPU per chunk beside the hash and the AEAD. A :class:`FramePool` keeps a bounded number of
buffers that were handed back, by exact length (chunks of a file share one size, so their frames
do too), and hands them out again.
"""

from __future__ import annotations

import threading

from .framing import OWN_BUFFER_BYTES

DEFAULT_POOL_BYTES = 32 * 1024 * 1024
"""Bytes of idle buffers one pool keeps: enough for the frames several busy connections have in
flight at 1 MiB chunks, small beside a node's page cache."""


class FramePool:
    """A bounded, thread-safe pool of frame buffers of at least ``OWN_BUFFER_BYTES``.

    :meth:`take` returns a buffer of exactly the length asked for, reused when one of that length
    was handed back, else new. A reused buffer still holds the bytes of its last frame: the taker
    must write every byte before it reads or sends any. :meth:`give` hands a buffer back; the giver
    must not use it (or any view of it) afterwards. At most ``max_bytes`` of idle buffers are kept;
    giving one more drops the longest-idle ones. Smaller buffers are neither kept nor worth it.
    """

    def __init__(self, max_bytes: int = DEFAULT_POOL_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # Oldest first. A short list (32 MiB of 1 MiB frames is 32 entries): scanning it for a
        # length costs less than keeping a second index in step with it.
        self._idle: list[bytearray] = []
        self._idle_bytes = 0
        self.reused = 0
        """How many :meth:`take` / :meth:`take_idle` calls were served with an idle buffer."""

    @property
    def idle_bytes(self) -> int:
        """Bytes held in idle buffers."""
        return self._idle_bytes

    def take(self, length: int) -> bytearray:
        """A buffer of ``length`` bytes: a reused one (stale contents) or a new, zeroed one."""
        reused = self.take_idle(length)
        return reused if reused is not None else bytearray(length)

    def take_idle(self, length: int) -> bytearray | None:
        """A reused buffer of ``length`` bytes if one is idle, else ``None`` (allocates nothing)."""
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):  # the most recently idle first
                if len(self._idle[index]) == length:
                    self._idle_bytes -= length
                    self.reused += 1
                    return self._idle.pop(index)
            return None

    def give(self, buffer: bytearray) -> None:
        """Hand ``buffer`` back for reuse (ignored if it is small or bigger than the pool)."""
        length = len(buffer)
        if length < OWN_BUFFER_BYTES or length > self.max_bytes:
            return
        with self._lock:
            while self._idle_bytes + length > self.max_bytes:
                self._idle_bytes -= len(self._idle.pop(0))
            self._idle.append(buffer)
            self._idle_bytes += length


SHARED_FRAME_POOL = FramePool()
"""The process's pool, used by every channel unless given another: buffers freed by one
connection serve the next, and the bound holds for the whole process."""
