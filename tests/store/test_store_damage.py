"""Issue 13 items 5 and 6: the manifest has a second copy on its holder, verify checks both,
and damage stays reported until something stores the chunk again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.store import ChunkStore

from .helpers import CS, assert_store_consistent, random_bytes, reference_encode


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore.open(tmp_path / "store") as s:
        yield s


def _flip(path: Path, at: int = 7) -> None:
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0x04
    path.write_bytes(raw)


async def test_flipped_root_manifest_is_recovered_and_reported(tmp_path: Path) -> None:
    """As reported: one flipped byte in the root of a --no-disperse file's only holder lost the
    whole file although every share was intact, and verify said nothing."""
    content = random_bytes(1, 5 * CS + 3)
    src = tmp_path / "f"
    src.write_bytes(content)
    with ChunkStore.open(tmp_path / "s") as store:
        manifest = await store.put_file(src, chunk_size=CS)
        file_id = manifest.file_id
        assert store.spare_path(file_id).read_bytes() == manifest.encode_root()
    _flip(tmp_path / "s" / "chunks" / file_id.hex()[:2] / file_id.hex())
    with ChunkStore.open(tmp_path / "s") as store:  # a fresh store: no manifest cached
        report = await store.verify()
        assert report.corrupt == [file_id]
        assert report.repaired == [file_id]
        assert report.damaged == []
        assert not report.ok, "damage found in this run is reported"
        await store.reassemble(await store.load_manifest(file_id), tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == content
        assert (await store.verify()).ok
        assert_store_consistent(store.data_dir)


async def test_reading_a_corrupt_root_restores_it_from_the_spare(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(random_bytes(2, 2 * CS))
    with ChunkStore.open(tmp_path / "s") as store:
        manifest = await store.put_file(src, chunk_size=CS)
        _flip(store.chunk_path(manifest.file_id))
    with ChunkStore.open(tmp_path / "s") as store:
        assert await store.load_manifest(manifest.file_id) == manifest
        assert store.has_chunk(manifest.file_id)
        assert await store.have_bitmap(manifest.file_id) is not None
        assert (await store.verify()).ok, "repaired at once: nothing left to report"


async def test_a_damaged_spare_is_reported_and_rewritten(store: ChunkStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(random_bytes(3, CS))
    manifest = await store.put_file(src, chunk_size=CS)
    _flip(store.spare_path(manifest.file_id))
    report = await store.verify()
    assert report.corrupt == [manifest.file_id]
    assert report.repaired == [manifest.file_id]
    assert store.spare_path(manifest.file_id).read_bytes() == manifest.encode_root()
    assert (await store.verify()).ok


async def test_both_copies_gone_stays_damaged(store: ChunkStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(random_bytes(4, CS))
    manifest = await store.put_file(src, chunk_size=CS)
    store.spare_path(manifest.file_id).unlink()
    store.chunk_path(manifest.file_id).unlink()
    first = await store.verify()
    assert manifest.file_id in first.damaged
    again = await store.verify()
    assert manifest.file_id in again.damaged
    assert not again.ok


async def test_unrepairable_damage_stays_reported_until_the_chunks_return(
    store: ChunkStore, tmp_path: Path
) -> None:
    """As reported: the next verify exited 0 with the file at 86/96 and nothing repaired."""
    content = random_bytes(5, 8 * CS)
    src = tmp_path / "f"
    src.write_bytes(content)
    manifest = await store.put_file(src, chunk_size=CS)  # k=4, m=2: 2 stripes of 6
    lost = list(manifest.stripes[0][:3])  # more than m: this stripe cannot be rebuilt here
    for cid in lost:
        store.chunk_path(cid).unlink()
    first = await store.verify()
    assert sorted(first.missing) == sorted(lost)
    assert sorted(first.damaged) == sorted(lost)
    assert [(d.file_id, d.name, d.chunks) for d in first.damaged_files] == [
        (manifest.file_id, "f", 3)
    ]
    second = await store.verify()
    assert second.missing == []
    assert second.corrupt == []
    assert sorted(second.damaged) == sorted(lost), "still damaged, still reported"
    assert not second.ok
    # What a get does: it stores chunks fetched from peers (here: one is enough, k=4 of 6).
    _, chunks = reference_encode(content, "f", CS, 4, 2)
    await store.put_chunk(lost[0], chunks[lost[0]])
    third = await store.verify()
    assert sorted(third.repaired) == sorted(lost[1:]), "the rest rebuilt from the stripe"
    assert third.damaged == []
    assert third.ok
    assert_store_consistent(store.data_dir)


async def test_repairable_damage_is_rebuilt_from_the_stripe(
    store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(random_bytes(6, 3 * CS + 5))  # one short stripe: 4 data, 2 parity
    manifest = await store.put_file(src, chunk_size=CS)
    data_chunk, parity_chunk = manifest.stripes[0][1], manifest.stripes[0][5]
    _flip(store.chunk_path(data_chunk))
    store.chunk_path(parity_chunk).unlink()
    report = await store.verify()
    assert report.corrupt == [data_chunk]
    assert report.missing == [parity_chunk]
    assert sorted(report.repaired) == sorted([data_chunk, parity_chunk])
    assert report.damaged == []
    assert (await store.verify()).ok
    assert_store_consistent(store.data_dir)


async def test_gc_forgets_damage_and_spares_of_unpinned_files(
    store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(random_bytes(7, 8 * CS))
    manifest = await store.put_file(src, chunk_size=CS)
    for cid in manifest.stripes[0][:3]:
        store.chunk_path(cid).unlink()
    assert not (await store.verify()).ok
    store.unpin(manifest.file_id)
    store.gc()
    assert not store.spare_path(manifest.file_id).exists()
    assert (await store.verify()).ok, "nobody needs those chunks any more"


def test_a_full_index_is_a_disk_full_oserror_naming_the_index(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (here: the index capped at its current size) is the
    same clean ENOSPC error as a full chunk directory, naming the index file."""
    import errno
    import sqlite3

    from p2pstore._index import Index

    index = Index(tmp_path / "index.sqlite3")
    try:
        pages = index._db.execute("PRAGMA page_count").fetchone()[0]
        index._db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(OSError, match=r"index\.sqlite3") as caught:
            index.insert_chunks([(bytes([i % 256, i // 256]) * 16, 1) for i in range(5000)])
        assert caught.value.errno == errno.ENOSPC
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        index.close()
