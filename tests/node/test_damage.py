"""Issue 13 items 4 and 5 with real nodes on 127.0.0.1: damage in a store never loses a file
that is still recoverable, on the holder or on the downloader."""

from __future__ import annotations

from pathlib import Path

import trio

from .swarm import Swarm, random_file, sha256_file

MiB = 1 << 20


def _flip(path: Path, at: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0x01
    path.write_bytes(raw)


async def test_flipped_root_on_the_only_holder_is_served_from_its_spare(tmp_path: Path) -> None:
    """As reported: a --no-disperse file became unrecoverable from one flipped byte in its root,
    although all 96 shares were intact, and the holder's verify exited 0."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 5 * MiB + 1, seed=21)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder, getter = await swarm.start(), await swarm.start()
        file_id = await holder.put(src, disperse=False)
        _flip(holder.store.chunk_path(file_id))
        with trio.fail_after(20):
            await getter.get(file_id, tmp_path / "out.bin")
        assert sha256_file(tmp_path / "out.bin") == digest
        report = await holder.verify()
        assert report.damaged == []
        assert (await holder.verify()).ok
        nursery.cancel_scope.cancel()


async def test_get_fetches_chunks_its_own_store_has_damaged(tmp_path: Path) -> None:
    """As reported: damaged chunks in the downloader's own store failed its get
    ("a stripe lacks 3 chunk(s) and cannot be rebuilt") while healthy holders were online."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 8 * MiB, seed=22)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder, getter = await swarm.start(), await swarm.start()
        file_id = await holder.put(src, disperse=False)
        await getter.get(file_id, tmp_path / "first.bin")
        manifest = await getter.store.load_manifest(file_id)
        # Stripe 0 beyond local repair (3 > m), and one chunk of stripe 1.
        for cid in (*manifest.stripes[0][:3], manifest.stripes[1][2]):
            _flip(getter.store.chunk_path(cid))
        with trio.fail_after(30):
            result = await getter.get(file_id, tmp_path / "again.bin")
        assert sha256_file(tmp_path / "again.bin") == digest
        assert result.bytes_from_peers, "the damaged chunks came from the holder"
        assert len(list((getter.data_dir / "quarantine").iterdir())) >= 3
        assert [p.name for p in tmp_path.glob(".*.part")] == []
        nursery.cancel_scope.cancel()
