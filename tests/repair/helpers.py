"""Manifests for the repair core's tests: random IDs (health, placement) or real shares."""

from __future__ import annotations

import hashlib
import random

from hypothesis import strategies as st

from p2pstore.erasure import ReedSolomon
from p2pstore.manifest import Manifest

CHUNK = 64 * 1024


@st.composite
def id_manifests(draw: st.DrawFn) -> Manifest:
    """A manifest of random chunk IDs: 0-6 stripes, the last maybe short, k 1-6, m 0-4."""
    k = draw(st.integers(1, 6))
    m = draw(st.integers(0, 4))
    size = draw(st.integers(0, 6 * k * CHUNK))
    seed = draw(st.integers(0, 2**32))
    count = Manifest.from_table("f", 0, CHUNK, k, m, b"").layout.total_chunks(size)
    table = random.Random(seed).randbytes(32 * count)
    return Manifest.from_table("f", size, CHUNK, k, m, table)


def coded_file(k: int, m: int, size: int, seed: int) -> tuple[Manifest, dict[bytes, bytes]]:
    """A real file's manifest and every chunk (data and parity), as ``put`` would make them."""
    data = random.Random(seed).randbytes(size)
    rs = ReedSolomon(k, m)
    layout = Manifest.from_table("f", 0, CHUNK, k, m, b"").layout
    stripes = []
    chunks: dict[bytes, bytes] = {}
    for s in range(layout.stripe_count(size)):
        part = data[s * k * CHUNK : (s + 1) * k * CHUNK]
        pieces = [part[i : i + CHUNK] for i in range(0, len(part), CHUNK)]
        length = len(pieces[0])
        padded = [p + bytes(length - len(p)) for p in pieces]
        padded += [bytes(length)] * (k - len(padded))
        shares = pieces + (rs.encode(padded) if m else [])
        ids = []
        for share in shares:
            cid = hashlib.sha256(share).digest()
            chunks[cid] = share
            ids.append(cid)
        stripes.append(tuple(ids))
    return Manifest("f", size, CHUNK, k, m, tuple(stripes)), chunks
