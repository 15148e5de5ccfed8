"""Reassembly from an in-memory chunk source: erasure patterns, failures, atomic output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.chunking import Layout
from p2pstore.errors import FileUnavailableError
from p2pstore.reassembly import reassemble

from .helpers import CS, MemorySource, boundary_sizes, random_bytes, reference_encode


@st.composite
def cases(draw: st.DrawFn) -> tuple[Layout, bytes]:
    k = draw(st.integers(1, 6))
    m = draw(st.integers(0, 3))
    layout = Layout(CS, k, m)
    size = draw(boundary_sizes(layout, stripes=3))
    return layout, random_bytes(draw(st.integers(0, 2**32)), size)


def run_reassemble(manifest, source, dest: Path, **kw):  # type: ignore[no-untyped-def]
    trio.run(lambda: reassemble(manifest, source, dest, **kw))


@given(cases(), st.data())
def test_up_to_m_erasures_per_stripe_rebuild_exactly(
    case: tuple[Layout, bytes], data: st.DataObject
) -> None:
    layout, content = case
    manifest, chunks = reference_encode(content, "f", layout.chunk_size, layout.k, layout.m)
    source = MemorySource(chunks)
    for ids in manifest.stripes:
        lost = data.draw(st.sets(st.integers(0, len(ids) - 1), max_size=layout.m))
        for pos in lost:
            how = data.draw(st.sampled_from(["missing", "corrupt", "lie"]))
            {"missing": source.missing, "corrupt": source.report_corrupt, "lie": source.lie}[
                how
            ].add(ids[pos])
    # An ID may occur twice in a stripe (k=1: the parity equals the data); losing it loses both.
    lost_ids = source.missing | source.report_corrupt | source.lie
    if any(sum(c in lost_ids for c in ids) > layout.m for ids in manifest.stripes):
        with tempfile.TemporaryDirectory() as tmp, pytest.raises(FileUnavailableError):
            run_reassemble(manifest, source, Path(tmp) / "out")
        return
    seen: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        run_reassemble(manifest, source, dest, progress=lambda d, t: seen.append((d, t)))
        assert dest.read_bytes() == content
        assert [p.name for p in Path(tmp).iterdir()] == ["out"]
    if content:
        assert seen[-1] == (len(content), len(content))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_data_shares_are_preferred() -> None:
    content = random_bytes(7, 3 * 4 * CS)
    manifest, chunks = reference_encode(content, "f", CS, 4, 2)
    source = MemorySource(chunks)

    async def main(tmp: Path) -> None:
        await reassemble(manifest, source, tmp / "out")

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
    parity = {c for ids in manifest.stripes for c in ids[4:]}
    assert not parity & set(source.requests)


@given(cases(), st.data())
def test_more_than_m_erasures_fail_cleanly(case: tuple[Layout, bytes], data: st.DataObject) -> None:
    layout, content = case
    manifest, chunks = reference_encode(content, "f", layout.chunk_size, layout.k, layout.m)
    if not manifest.stripes:
        return
    source = MemorySource(chunks)
    bad = data.draw(st.integers(0, len(manifest.stripes) - 1))
    ids = manifest.stripes[bad]
    lost = data.draw(
        st.sets(st.integers(0, len(ids) - 1), min_size=layout.m + 1, max_size=len(ids))
    )
    source.missing.update(ids[p] for p in lost)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        with pytest.raises(FileUnavailableError) as info:
            run_reassemble(manifest, source, dest)
        assert list(Path(tmp).iterdir()) == []
    assert bad in info.value.missing
    assert set(info.value.missing[bad]) == {ids[p] for p in lost}
    assert str(bad) in str(info.value)


def test_failure_leaves_an_existing_destination_untouched(tmp_path: Path) -> None:
    content = random_bytes(8, 2 * 4 * CS)
    manifest, chunks = reference_encode(content, "f", CS, 4, 1)
    source = MemorySource(chunks)
    source.missing.update(manifest.stripes[1][:2])
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    with pytest.raises(FileUnavailableError):
        run_reassemble(manifest, source, dest)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


class Boom(Exception):
    pass


async def test_other_source_errors_propagate_plainly(tmp_path: Path) -> None:
    content = random_bytes(9, 3 * 4 * CS)
    manifest, chunks = reference_encode(content, "f", CS, 4, 2)

    class Failing(MemorySource):
        async def get_chunk(self, chunk_id: bytes) -> bytes:
            if chunk_id == manifest.stripes[1][2]:
                raise Boom
            return await super().get_chunk(chunk_id)

    with pytest.raises(Boom):
        await reassemble(manifest, Failing(chunks), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


async def test_cancellation_removes_the_temp_file(tmp_path: Path) -> None:
    content = random_bytes(10, 3 * 4 * CS)
    manifest, chunks = reference_encode(content, "f", CS, 4, 2)

    class Slow(MemorySource):
        async def get_chunk(self, chunk_id: bytes) -> bytes:
            if chunk_id in manifest.stripes[2]:
                await trio.sleep_forever()
            return await super().get_chunk(chunk_id)

    with trio.move_on_after(0.5) as scope:
        await reassemble(manifest, Slow(chunks), tmp_path / "out")
    assert scope.cancelled_caught
    assert list(tmp_path.iterdir()) == []


async def test_empty_file(tmp_path: Path) -> None:
    manifest, chunks = reference_encode(b"", "e", CS, 4, 2)
    await reassemble(manifest, MemorySource(chunks), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b""
