"""ChunkStore: put/reassemble roundtrips, verification, gc, pins, quota, bitmaps."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.chunking import Layout
from p2pstore.errors import (
    ChunkNotFoundError,
    ConfigError,
    CorruptChunkError,
    FileUnavailableError,
    QuotaExceededError,
)
from p2pstore.manifest import Manifest
from p2pstore.store import ChunkStore, StoreInUseError

from .helpers import (
    CS,
    assert_store_consistent,
    boundary_sizes,
    random_bytes,
    reference_encode,
    sha,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore.open(tmp_path / "store") as s:
        yield s


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@st.composite
def put_cases(draw: st.DrawFn) -> tuple[Layout, bytes]:
    k = draw(st.integers(1, 8))
    m = draw(st.integers(0, 4))
    layout = Layout(CS, k, m)
    size = draw(boundary_sizes(layout, stripes=2))
    if draw(st.booleans()):
        content = random_bytes(draw(st.integers(0, 2**32)), size)
    else:  # repetitive content: identical chunks are stored once
        content = bytes([draw(st.integers(0, 255))]) * size
    return layout, content


@settings(max_examples=max(1, settings().max_examples // 2))  # disk-heavy: half
@given(put_cases())
def test_put_then_reassemble_roundtrip(case: tuple[Layout, bytes]) -> None:
    layout, content = case

    async def main(tmp: Path) -> None:
        src = write(tmp / "in.bin", content)
        with ChunkStore.open(tmp / "store") as store:
            manifest = await store.put_file(src, chunk_size=CS, k=layout.k, m=layout.m)
            expected, chunks = reference_encode(
                content, "in.bin", CS, layout.k, layout.m, as_stored=True
            )
            assert manifest == expected
            assert manifest.file_id == expected.file_id
            for cid, data in chunks.items():
                assert await store.get_chunk(cid) == data
            assert await store.load_manifest(manifest.file_id) == manifest
            await store.reassemble(manifest, tmp / "out.bin")
            assert (tmp / "out.bin").read_bytes() == content
            [listed] = store.list_files()
            assert (listed.file_id, listed.size, listed.pinned) == (
                manifest.file_id,
                len(content),
                True,
            )
            assert listed.chunks_present == listed.chunks_total == len(set(manifest.chunk_ids()))
        assert_store_consistent(tmp / "store")

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


async def test_extreme_k_plus_m(tmp_path: Path, store: ChunkStore) -> None:
    content = random_bytes(1, 3 * CS + 7)
    src = write(tmp_path / "f", content)
    manifest = await store.put_file(src, chunk_size=CS, k=250, m=5)
    # Shorter than a stripe: stored with k = 4 and m = max(1, ceil(5 * 4 / 250)) = 1.
    assert (manifest.k, manifest.m, [len(s) for s in manifest.stripes]) == (4, 1, [4 + 1])
    os.unlink(store.chunk_path(manifest.stripes[0][2]))  # rebuilt from the parity chunk
    await store.reassemble(manifest, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == content
    # The short last stripe of a bigger file keeps m = 5 (here k=6, so no 16 MiB test file).
    big = random_bytes(11, 6 * CS + 3 * CS + 7)
    manifest = await store.put_file(write(tmp_path / "g", big), chunk_size=CS, k=6, m=5)
    assert [len(s) for s in manifest.stripes] == [11, 4 + 5]
    for cid in manifest.stripes[1][:4]:  # lose every data chunk of the short last stripe
        os.unlink(store.chunk_path(cid))
    await store.reassemble(manifest, tmp_path / "out2")
    assert (tmp_path / "out2").read_bytes() == big


@pytest.mark.parametrize(
    ("size", "shape", "overhead"),
    [
        (2048, (4, 2), 3.0),  # one chunk: 1 + m copies' worth, the least surviving m losses
        (2 * CS, (2, 1), 1.5),  # 2 chunks: was 2x
        (3 * CS, (3, 2), 5 / 3),
        (4 * CS, (4, 2), 1.5),  # a full stripe: as configured
        (9 * CS, (4, 2), None),  # several stripes: as configured
    ],
)
async def test_small_files_get_parity_in_proportion(
    tmp_path: Path, store: ChunkStore, size: int, shape: tuple[int, int], overhead: float | None
) -> None:
    """Issue 13 item 9: one-chunk files stored two full-size parity chunks (3x their size)."""
    manifest = await store.put_file(write(tmp_path / "f", random_bytes(12, size)), chunk_size=CS)
    assert (manifest.k, manifest.m) == shape
    if overhead is not None:
        shares = manifest.chunk_ids()
        assert sum(store.chunk_size(c) or 0 for c in shares) == pytest.approx(size * overhead)
    for cid in manifest.stripes[0][: manifest.m]:  # still survives losing m chunks of a stripe
        os.unlink(store.chunk_path(cid))
    await store.reassemble(manifest, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "f").read_bytes()


async def test_same_file_same_id_on_two_stores(tmp_path: Path) -> None:
    src = write(tmp_path / "f", random_bytes(2, 9 * CS + 3))
    with ChunkStore.open(tmp_path / "a") as a, ChunkStore.open(tmp_path / "b") as b:
        ma = await a.put_file(src, chunk_size=CS)
        mb = await b.put_file(src, chunk_size=CS)
        assert ma.file_id == mb.file_id
        assert a.list_files()[0].file_id == b.list_files()[0].file_id


async def test_put_is_idempotent(tmp_path: Path, store: ChunkStore) -> None:
    src = write(tmp_path / "f", random_bytes(3, 5 * CS))
    m1 = await store.put_file(src, chunk_size=CS, name="x")
    used = store.stored_bytes
    m2 = await store.put_file(src, chunk_size=CS, name="x")
    assert m1 == m2
    assert store.stored_bytes == used
    assert len(store.list_files()) == 1


async def test_bad_parameters(tmp_path: Path, store: ChunkStore) -> None:
    src = write(tmp_path / "f", b"abc")
    with pytest.raises(ConfigError):
        await store.put_file(src, chunk_size=CS + 1)
    with pytest.raises(ConfigError):
        await store.put_file(src, chunk_size=CS, k=200, m=60)
    with pytest.raises(ConfigError):
        await store.put_file(src, chunk_size=CS, name="a/b")
    with pytest.raises(FileNotFoundError):
        await store.put_file(tmp_path / "nope", chunk_size=CS)
    assert store.list_files() == []


async def test_flipped_bit_is_detected_on_read_and_verify(
    tmp_path: Path, store: ChunkStore
) -> None:
    content = random_bytes(4, 8 * CS)
    manifest = await store.put_file(write(tmp_path / "f", content), chunk_size=CS)
    victim, other = manifest.stripes[0][1], manifest.stripes[1][0]
    for cid in (victim, other):
        path = store.chunk_path(cid)
        raw = bytearray(path.read_bytes())
        raw[1234] ^= 0x10
        path.write_bytes(raw)
    with pytest.raises(CorruptChunkError) as info:
        await store.get_chunk(victim)
    assert info.value.chunk_id == victim
    assert not store.has_chunk(victim)
    with pytest.raises(ChunkNotFoundError):
        await store.get_chunk(victim)
    assert len(list((store.data_dir / "quarantine").iterdir())) == 1
    report = await store.verify()
    assert report.corrupt == [other]
    assert report.missing == []
    assert not report.ok
    # +root and its spare copy, -victim
    assert report.checked == len(set(manifest.chunk_ids())) + 2 - 1
    assert sorted(report.repaired) == sorted([victim, other]), "rebuilt from their stripes"
    # Both stripes lost one chunk of m=2: the file still reassembles.
    await store.reassemble(manifest, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == content
    assert (await store.verify()).ok
    assert_store_consistent(store.data_dir)


async def test_verify_reports_missing_files(tmp_path: Path, store: ChunkStore) -> None:
    manifest = await store.put_file(write(tmp_path / "f", random_bytes(5, 2 * CS)), chunk_size=CS)
    gone = manifest.stripes[0][0]
    os.unlink(store.chunk_path(gone))
    report = await store.verify()
    assert report.missing == [gone]
    assert report.repaired == [gone], "rebuilt from the stripe's other chunks"
    assert store.has_chunk(gone)


async def test_put_chunk(tmp_path: Path) -> None:
    data = random_bytes(6, 1000)
    cid = sha(data)
    with ChunkStore.open(tmp_path / "s", quota_bytes=2500) as store:
        with pytest.raises(CorruptChunkError):
            await store.put_chunk(cid, data + b"!")
        with pytest.raises(CorruptChunkError):
            await store.put_chunk(cid[:31], data)
        assert not store.has_chunk(cid)
        assert await store.put_chunk(cid, data) is True
        assert await store.put_chunk(cid, data, enforce_quota=True) is False
        assert store.stored_bytes == 1000
        more = [random_bytes(i, 1000) for i in (7, 8)]
        with pytest.raises(QuotaExceededError):
            await store.put_chunks([(sha(b), b) for b in more], enforce_quota=True)
        assert store.has_chunks([sha(b) for b in more]) == [False, False]
        assert await store.put_chunks([(sha(more[0]), more[0])] * 2, enforce_quota=True) == [
            True,
            False,
        ]
        assert await store.get_chunk(cid) == data
        assert store.has_chunks([cid, sha(more[1])]) == [True, False]
        with pytest.raises(ChunkNotFoundError):
            await store.get_chunk(sha(b"nothing"))


async def test_have_bitmap(tmp_path: Path, store: ChunkStore) -> None:
    manifest = await store.put_file(write(tmp_path / "f", random_bytes(9, 9 * CS)), chunk_size=CS)
    n = manifest.chunk_count  # 3 stripes: 6 + 6 + 3 = 15
    assert n == 15
    assert await store.have_bitmap(manifest.file_id) == b"\xff\x7f"
    assert await store.have_bitmap(sha(b"unknown")) is None
    for i in (0, 9, 14):
        os.unlink(store.chunk_path(manifest.chunk_ids()[i]))
        with pytest.raises(ChunkNotFoundError):  # a read notices (verify would rebuild them)
            await store.get_chunk(manifest.chunk_ids()[i])
    assert await store.have_bitmap(manifest.file_id) == bytes([0xFE, 0x7F & ~(1 << 1) & ~(1 << 6)])


async def test_manifest_on_another_store_and_held_chunks(tmp_path: Path) -> None:
    content = random_bytes(10, 6 * CS + 11)
    with ChunkStore.open(tmp_path / "a") as a, ChunkStore.open(tmp_path / "b") as b:
        manifest = await a.put_file(write(tmp_path / "f", content), chunk_size=CS)
        # b holds the shares of stripe 0 for others, before knowing the manifest
        items = [(cid, await a.get_chunk(cid)) for cid in manifest.stripes[0]]
        assert all(await b.put_chunks(items, file_id=manifest.file_id))
        assert b.list_files() == []
        assert await b.have_bitmap(manifest.file_id) is None
        assert b.gc() == 0  # held: kept
        assert all(b.has_chunks(manifest.stripes[0]))
        await b.add_manifest(manifest)
        assert await b.load_manifest(manifest.file_id) == manifest
        [listed] = b.list_files()
        assert (listed.chunks_present, listed.chunks_total) == (6, manifest.chunk_count)
        with pytest.raises(FileUnavailableError) as info:
            await b.reassemble(manifest, tmp_path / "out")
        assert 1 in info.value.missing
        assert not (tmp_path / "out").exists()
        for cid in manifest.chunk_ids()[6:]:
            await b.put_chunk(cid, await a.get_chunk(cid))
        await b.reassemble(manifest, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == content


async def test_gc_and_pins(tmp_path: Path, store: ChunkStore) -> None:
    shared = random_bytes(11, 4 * CS)
    m1 = await store.put_file(write(tmp_path / "one", shared), chunk_size=CS)
    m2 = await store.put_file(write(tmp_path / "two", shared + b"tail"), chunk_size=CS)
    stray = b"stray chunk"
    await store.put_chunk(sha(stray), stray)
    assert store.gc() == len(stray)
    assert not store.has_chunk(sha(stray))
    store.unpin(m1.file_id)
    assert {f.file_id: f.pinned for f in store.list_files()} == {
        m1.file_id: False,
        m2.file_id: True,
    }
    freed = store.gc()
    assert freed > 0  # m1's parity and manifest; its data chunks are shared with m2
    assert all(store.has_chunks(m1.stripes[0][:4]))
    assert not store.has_chunk(m1.file_id)
    store.unpin(m2.file_id)
    before = store.stored_bytes
    assert store.gc() == before
    assert store.stored_bytes == 0
    assert_store_consistent(store.data_dir)
    with pytest.raises(ChunkNotFoundError):
        store.pin(sha(b"unknown file"))
    # Issue 15: gc forgets the unpinned files whose chunks it freed (no "0/N" rows in ls).
    assert store.list_files() == []
    with pytest.raises(ChunkNotFoundError):
        store.pin(m2.file_id)


async def test_gc_removes_orphan_files(tmp_path: Path, store: ChunkStore) -> None:
    orphan = b"orphan"
    path = store.chunk_path(sha(orphan))
    path.write_bytes(orphan)
    assert store.gc() == len(orphan)
    assert not path.exists()


async def test_large_manifest_through_the_store(tmp_path: Path, store: ChunkStore) -> None:
    layout = Layout(CS, 4, 2)
    size = 200 * layout.stripe_bytes  # 1200 IDs: more than a 64 KiB root holds
    table = os.urandom(32 * layout.total_chunks(size))
    manifest = Manifest.from_table("big", size, CS, 4, 2, table)
    assert manifest.index_chunks()
    await store.add_manifest(manifest)
    store._manifests.clear()  # force a reload from the stored chunks
    assert await store.load_manifest(manifest.file_id) == manifest
    assert await store.have_bitmap(manifest.file_id) == bytes(150)
    [listed] = store.list_files()
    assert (listed.chunks_present, listed.chunks_total) == (0, 1200)


def test_open_locks_and_cleans_temp_files(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path / "s") as store:
        with pytest.raises(StoreInUseError):
            ChunkStore.open(tmp_path / "s")
        (store.data_dir / "tmp" / "leftover.tmp").write_bytes(b"x")
    with ChunkStore.open(tmp_path / "s") as store:
        assert list((store.data_dir / "tmp").iterdir()) == []
    with pytest.raises(ConfigError):
        ChunkStore.open(tmp_path / "q", quota_bytes=-1)


async def test_progress_is_reported(tmp_path: Path, store: ChunkStore) -> None:
    size = 10 * CS + 5
    seen: list[tuple[int, int]] = []
    await store.put_file(
        write(tmp_path / "f", random_bytes(12, size)),
        chunk_size=CS,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (size, size)
    assert len(seen) == 3


async def test_read_chunk_into_fills_the_callers_buffer_verified(
    tmp_path: Path, store: ChunkStore
) -> None:
    content = random_bytes(9, 3 * CS)
    manifest = await store.put_file(write(tmp_path / "f", content), chunk_size=CS)
    good, shorter, flipped = manifest.stripes[0][0], manifest.stripes[0][1], manifest.stripes[0][2]
    frame = bytearray(10 + CS)
    buffer = store.read_chunk_into(good, lambda size: memoryview(frame)[10 : 10 + size])
    assert bytes(buffer) == await store.get_chunk(good)
    assert frame[10:] == await store.get_chunk(good)
    with pytest.raises(ValueError, match="buffer of"):
        store.read_chunk_into(good, lambda size: memoryview(bytearray(size + 1)))
    with pytest.raises(ChunkNotFoundError):
        store.read_chunk_into(os.urandom(32), lambda size: memoryview(bytearray(size)))
    store.chunk_path(shorter).write_bytes(store.chunk_path(shorter).read_bytes()[:-1])
    raw = bytearray(store.chunk_path(flipped).read_bytes())
    raw[7] ^= 1
    store.chunk_path(flipped).write_bytes(raw)
    for cid in (shorter, flipped):
        with pytest.raises(CorruptChunkError):
            store.read_chunk_into(cid, lambda size: memoryview(bytearray(size)))
        assert not store.has_chunk(cid)  # quarantined, as get_chunk does
    assert len(list((store.data_dir / "quarantine").iterdir())) == 2
    assert_store_consistent(store.data_dir)
