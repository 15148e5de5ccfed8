"""A manifest whose chunk IDs name chunks of other lengths than its layout gives them.

Such a manifest cannot come from an honest ``put`` (each ID is the hash of a chunk of the layout's
length), but anyone can write one: a download must not write a file of another size than the
manifest states. Every peer would send the same bytes for that ID, so the manifest is at fault,
not the peer: the download fails with a :class:`ManifestError` and leaves nothing at ``dest``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from p2pstore.errors import ManifestError
from p2pstore.manifest import Manifest

from .swarm import Swarm

CS = 64 * 1024


@pytest.mark.parametrize(
    "length",
    [
        200_000,  # the reported case: `get` wrote a 265,536-byte file
        1_000,  # a file of the stated size, with 64,536 zero bytes where data should be
    ],
)
async def test_a_chunk_of_another_length_than_its_manifest_says_fails_the_download(
    tmp_path: Path, length: int
) -> None:
    # The layout of a 131,072-byte file (k = 2, m = 0): two data chunks of 64 KiB; the second
    # ID names a chunk of ``length`` bytes instead.
    first, second = bytes(CS), hashlib.shake_256(b"wrong length").digest(length)
    ids = [hashlib.sha256(first).digest(), hashlib.sha256(second).digest()]
    manifest = Manifest.from_table("bad.bin", 2 * CS, CS, 2, 0, b"".join(ids))
    assert manifest.chunk_length(0, 1) == CS
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder, getter = await swarm.start(), await swarm.start()
        await holder.store.put_chunk(ids[0], first)
        await holder.store.put_chunk(ids[1], second)
        await holder.store.add_manifest(manifest)
        await holder.announce(manifest.file_id)
        dest = tmp_path / "out.bin"
        says = f"is {length} bytes, its layout says {CS}"
        with trio.fail_after(20), pytest.raises(ManifestError, match=says):
            await getter.get(manifest.file_id, dest)
        assert not dest.exists()
        assert list(tmp_path.glob(".*.part")) == []
        # The inconsistent chunk was not kept either (only what the manifest allows is stored).
        assert not getter.store.has_chunk(ids[1])
        nursery.cancel_scope.cancel()
