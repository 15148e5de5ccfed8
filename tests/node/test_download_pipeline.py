"""Issue 14: a chunk frees its request slot on arrival and is stored by a batched writer; a
stripe is rebuilt only once its chunks are in the store, however slow the store is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from .swarm import Swarm, random_file, sha256_file

MiB = 1 << 20


async def test_stripes_needing_parity_wait_for_a_slow_store(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    digest = random_file(src, 6 * MiB + 5, seed=41)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder, getter = await swarm.start(), await swarm.start()
        file_id = await holder.put(src, disperse=False)
        manifest = await holder.store.load_manifest(file_id)
        # The holder lost data chunk 0 of every stripe: each stripe needs a parity share, which
        # the output can only decode once that share is in the getter's store.
        for ids in manifest.stripes:
            holder.store.chunk_path(ids[0]).unlink()
        real = getter.store.put_chunks
        batches: list[int] = []

        async def slow_put_chunks(items: Sequence[tuple[bytes, bytes]], **kw: object) -> list[bool]:
            await trio.sleep(0.3)  # a slow disk: the slots are refilled meanwhile
            batches.append(len(items))
            return await real(items, **kw)  # type: ignore[arg-type]

        getter.store.put_chunks = slow_put_chunks  # type: ignore[method-assign]
        with trio.fail_after(60):
            result = await getter.get(file_id, tmp_path / "out.bin")
        assert sha256_file(tmp_path / "out.bin") == digest
        assert result.bytes_from_peers
        assert max(batches) > 1, "chunks that arrived while the store was busy went in one batch"
        stored = getter.store.has_chunks(manifest.chunk_ids())
        for s, ids in enumerate(manifest.stripes):
            offset = sum(len(x) for x in manifest.stripes[:s])
            have = sum(stored[offset : offset + len(ids)])
            assert have >= manifest.data_chunk_count(s), f"stripe {s} is not all stored"
        nursery.cancel_scope.cancel()
