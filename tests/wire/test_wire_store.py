"""The chunk server on the real :class:`p2pstore.store.ChunkStore` (integration)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from p2pstore.errors import QuotaExceededError
from p2pstore.identity import Identity
from p2pstore.store import ChunkStore
from p2pstore.wire import ChunkServer, ConnectionPool, PeerAddress, WireConfig

CONFIG = WireConfig(request_timeout=10)


async def test_serve_file_chunks_have_and_put_from_real_store(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(os.urandom(5 * 64 * 1024 + 1234))
    with ChunkStore.open(tmp_path / "server", quota_bytes=3_000_000) as store:
        manifest = await store.put_file(source, chunk_size=64 * 1024, k=2, m=1)
        ids = manifest.chunk_ids()
        identity = Identity.generate()
        accepted: list[bytes] = []
        server = ChunkServer(identity, store, CONFIG, on_put=accepted.append)
        host, port = await nursery.start(server.serve)
        async with ConnectionPool(Identity.generate(), CONFIG) as pool:
            conn = await pool.connect(PeerAddress(identity.node_id, host, port))
            results = await conn.get(ids)
            assert [cid for cid, _ in results] == ids
            for cid, data in results:
                assert data is not None
                assert hashlib.sha256(data).digest() == cid
            bitmap = await conn.have(manifest.file_id)
            assert bitmap is not None
            assert all(bitmap[i // 8] >> (i % 8) & 1 for i in range(len(ids)))
            assert await conn.have(os.urandom(32)) is None
            assert await conn.get([b"\x00" * 32]) == [(b"\x00" * 32, None)]

            small = os.urandom(100_000)
            small_id = hashlib.sha256(small).digest()
            assert await conn.put(small_id, small) is True
            assert await store.get_chunk(small_id) == small
            assert accepted == [small_id]
            huge = os.urandom(4_000_000)
            with pytest.raises(QuotaExceededError):
                await conn.put(hashlib.sha256(huge).digest(), huge)
            assert not store.has_chunk(hashlib.sha256(huge).digest())
