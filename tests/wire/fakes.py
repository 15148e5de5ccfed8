"""An in-memory stand-in for ``p2pstore.store.ChunkStore`` (the part the server uses)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from p2pstore.errors import ChunkNotFoundError, CorruptChunkError, QuotaExceededError


def chunk_id_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class FakeStore:
    """Chunks in a dict; ``quota_bytes`` caps the total size; ``files`` maps file ID -> chunk IDs.

    ``delays`` (chunk ID -> seconds) makes reading some chunks slow (``read_chunk_into`` blocks
    its worker thread), to make replies come back out of order.
    ``reads`` lists the chunk IDs ``read_chunk_into`` finished reading, in order.
    """

    def __init__(self, quota_bytes: int | None = None) -> None:
        self.chunks: dict[bytes, bytes] = {}
        self.files: dict[bytes, list[bytes]] = {}
        self.quota_bytes = quota_bytes
        self.delays: dict[bytes, float] = {}
        self.reads: list[bytes] = []

    def add(self, data: bytes) -> bytes:
        cid = chunk_id_of(data)
        self.chunks[cid] = data
        return cid

    def read_chunk_into(
        self, chunk_id: bytes, buffer_for: Callable[[int], memoryview]
    ) -> memoryview:
        time.sleep(self.delays.get(chunk_id, 0))
        try:
            data = self.chunks[chunk_id]
        except KeyError:
            raise ChunkNotFoundError(chunk_id) from None
        buffer = buffer_for(len(data))
        buffer[:] = data
        self.reads.append(chunk_id)
        if chunk_id_of(data) != chunk_id:
            raise CorruptChunkError(chunk_id)
        return buffer

    def chunk_size(self, chunk_id: bytes) -> int | None:
        data = self.chunks.get(chunk_id)
        return None if data is None else len(data)

    async def put_chunk(self, chunk_id: bytes, data: bytes, *, enforce_quota: bool = False) -> bool:
        if chunk_id_of(data) != chunk_id:
            raise CorruptChunkError(chunk_id)
        if chunk_id in self.chunks:
            return False
        used = sum(len(d) for d in self.chunks.values())
        if enforce_quota and self.quota_bytes is not None and used + len(data) > self.quota_bytes:
            raise QuotaExceededError(f"{used} + {len(data)} > {self.quota_bytes}")
        self.chunks[chunk_id] = data
        return True

    def has_chunks(self, ids: list[bytes]) -> list[bool]:
        return [cid in self.chunks for cid in ids]

    async def have_bitmap(self, file_id: bytes) -> bytes | None:
        ids = self.files.get(file_id)
        if ids is None:
            return None
        bits = bytearray((len(ids) + 7) // 8)
        for i, cid in enumerate(ids):
            if cid in self.chunks:
                bits[i // 8] |= 1 << (i % 8)
        return bytes(bits)
