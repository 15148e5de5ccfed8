"""Issue 15: a node whose disk is full when another node pushes it a share (PUT, from a
dispersal or a repair) logs one line naming the full directory, no traceback, and refuses the
PUT cleanly (``QUOTA_EXCEEDED``: the pusher places the share elsewhere); the channel carries on."""

from __future__ import annotations

import errno
import logging
import os

import pytest
import trio

from p2pstore.errors import QuotaExceededError
from p2pstore.identity import Identity
from p2pstore.wire import ChunkServer, ConnectionPool, PeerAddress, WireConfig

from .fakes import FakeStore, chunk_id_of

CONFIG = WireConfig(handshake_timeout=2, idle_timeout=10, frame_timeout=5, request_timeout=5)
FULL_DIR = "/srv/p2pstore/chunks/tmp"


class FullDiskStore(FakeStore):
    """Refuses every new chunk as the real store does when the disk is full: ``ENOSPC``, naming
    the directory it was writing into."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    async def put_chunk(self, chunk_id: bytes, data: bytes, *, enforce_quota: bool = False) -> bool:
        if chunk_id in self.chunks:
            return False
        raise OSError(self.code, os.strerror(self.code), FULL_DIR)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
async def test_a_full_disk_refuses_pushed_shares_with_one_clean_line(
    code: int, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    store = FullDiskStore(code)
    kept = store.add(b"already here")
    identity = Identity.generate()
    server = ChunkServer(identity, store, CONFIG)
    host, port = await nursery.start(server.serve)
    data = os.urandom(5000)
    with caplog.at_level(logging.WARNING, logger="p2pstore"):
        async with ConnectionPool(Identity.generate(), CONFIG) as pool:
            conn = await pool.connect(PeerAddress(identity.node_id, host, port))
            with pytest.raises(QuotaExceededError) as refused:
                await conn.put(chunk_id_of(data), data)
            assert await conn.get([kept]) == [(kept, b"already here")]  # the channel carries on
    assert os.strerror(code) in str(refused.value)
    assert FULL_DIR not in str(refused.value)  # the local path is none of the pusher's business
    records = [r for r in caplog.records if r.name.startswith("p2pstore.wire")]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    message = record.getMessage()
    assert "\n" not in message
    assert FULL_DIR in message
    assert os.strerror(code) in message
    assert chunk_id_of(data).hex()[:16] in message
