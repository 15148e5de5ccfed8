"""Shared helpers for the store tests: a reference encoder, an in-memory chunk source, checks."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

from hypothesis import strategies as st

from p2pstore.chunking import MIN_CHUNK_SIZE, Layout
from p2pstore.erasure import ReedSolomon
from p2pstore.errors import ChunkNotFoundError, CorruptChunkError
from p2pstore.manifest import Manifest

CS = MIN_CHUNK_SIZE  # 64 KiB keeps the default suite fast


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def stored_params(size: int, chunk_size: int, k: int, m: int) -> tuple[int, int]:
    """The (k, m) a file is stored with, per the spec: a file of 2 <= d < k chunks gets k = d and
    m = max(1, ceil(m * d / k)) (issue 13: small files without wasteful parity); a one-chunk
    file keeps k and m (one XOR parity chunk would be the chunk itself)."""
    d = (size + chunk_size - 1) // chunk_size
    if d < 2 or d >= k or m == 0:
        return k, m
    return d, max(1, (m * d + k - 1) // k)


def reference_encode(
    data: bytes, name: str, chunk_size: int, k: int, m: int, *, as_stored: bool = False
) -> tuple[Manifest, dict[bytes, bytes]]:
    """The spec, written independently of the store: manifest and {id: chunk} of ``data``
    coded with exactly ``k`` and ``m``, or (``as_stored``) with what ``put_file`` uses for
    them (:func:`stored_params`)."""
    if as_stored:
        k, m = stored_params(len(data), chunk_size, k, m)
    rs = ReedSolomon(k, m)
    chunks: dict[bytes, bytes] = {}
    stripes = []
    stripe_bytes = chunk_size * k
    for off in range(0, len(data), stripe_bytes):
        part = data[off : off + stripe_bytes]
        dchunks = [part[i : i + chunk_size] for i in range(0, len(part), chunk_size)]
        length = len(dchunks[0])
        padded = [c.ljust(length, b"\0") for c in dchunks] + [bytes(length)] * (k - len(dchunks))
        parity = rs.encode(padded) if m else []
        ids = []
        for c in dchunks + parity:
            chunks[sha(c)] = c
            ids.append(sha(c))
        stripes.append(tuple(ids))
    return Manifest(name, len(data), chunk_size, k, m, tuple(stripes)), chunks


def boundary_sizes(layout: Layout, stripes: int = 3) -> st.SearchStrategy[int]:
    """Sizes around chunk and stripe boundaries, plus arbitrary small sizes."""
    cs, sb = layout.chunk_size, layout.stripe_bytes
    points = {0, 1, 2}
    for base in (cs, 2 * cs, sb, 2 * sb, sb + cs):
        points.update({base - 1, base, base + 1})
    return st.one_of(
        st.sampled_from(sorted(p for p in points if p >= 0)),
        st.integers(0, stripes * sb),
    )


class MemorySource:
    """A ChunkSource over a dict; chunks may be made missing, reported corrupt, or lied about."""

    def __init__(self, chunks: dict[bytes, bytes]) -> None:
        self.chunks = dict(chunks)
        self.missing: set[bytes] = set()
        self.report_corrupt: set[bytes] = set()
        self.lie: set[bytes] = set()
        self.requests: list[bytes] = []

    async def get_chunk(self, chunk_id: bytes) -> bytes:
        self.requests.append(chunk_id)
        if chunk_id in self.missing or chunk_id not in self.chunks:
            raise ChunkNotFoundError(chunk_id)
        if chunk_id in self.report_corrupt:
            raise CorruptChunkError(chunk_id)
        data = self.chunks[chunk_id]
        if chunk_id in self.lie:
            return bytes([data[0] ^ 1]) + data[1:] if data else b"x"
        return data


def assert_store_consistent(data_dir: Path) -> set[bytes]:
    """Every index row's chunk file exists and verifies; nothing but chunk files under chunks/.

    Reads the index directly (the store may be closed). Returns the indexed IDs.
    """
    db = sqlite3.connect(data_dir / "index.sqlite3")
    try:
        rows = db.execute("SELECT id, size FROM chunks").fetchall()
    finally:
        db.close()
    ids = set()
    for cid, size in rows:
        h = cid.hex()
        path = data_dir / "chunks" / h[:2] / h
        data = path.read_bytes()
        assert len(data) == size, h
        assert sha(data) == cid, h
        ids.add(cid)
    for path in (data_dir / "chunks").rglob("*"):
        if path.is_file():
            assert len(path.name) == 64, path
            bytes.fromhex(path.name)
    return ids
