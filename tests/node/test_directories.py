"""Directories between real nodes on 127.0.0.1 in one process: put a tree, list it, fetch it
elsewhere byte for byte (modes, empty directories, symlinks); hostile listings refused before
anything is written; a failed get leaves no tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from p2pstore.directories import NotADirectoryListingError
from p2pstore.directory import DirectoryError, DirectoryListing, Entry, EntryKind
from p2pstore.errors import FileUnavailableError
from p2pstore.node import Node

from .swarm import Swarm, random_file

MiB = 1 << 20


def make_tree(root: Path) -> None:
    root.mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "deep").mkdir()
    (root / "empty").mkdir(mode=0o750)
    random_file(root / "big.bin", 2 * MiB + 3, seed=7)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "deep" / "same.txt").write_text("alpha\n")  # same content, same file ID
    (root / "empty.txt").write_bytes(b"")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o4755)  # setuid: never stored
    (root / "docs" / "link").symlink_to("deep/same.txt")
    (root / "docs" / "deep" / "up").symlink_to("../../big.bin")
    (root / "outside").symlink_to("/etc/passwd")  # skipped with a warning
    (root / "escape").symlink_to("../x")  # skipped with a warning
    os.mkfifo(root / "fifo")  # skipped with a warning


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry below root: kind, permission bits, content or link target."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", stat.S_IMODE(info.st_mode), b"")
            elif stat.S_ISREG(info.st_mode):
                out[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return out


async def _two(nursery: trio.Nursery, tmp_path: Path) -> tuple[Swarm, Node, Node]:
    swarm = Swarm(nursery, tmp_path)
    a = await swarm.start()
    b = await swarm.start()
    return swarm, a, b


async def test_put_ls_get_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        seen: list[object] = []
        put = await a.put_directory(src, disperse=False, progress=seen.append)
        assert put.name == "tree"
        assert (put.files, put.symlinks, put.directories) == (5, 2, 3)
        assert {p for p, _ in put.skipped} == {"outside", "escape", "fifo"}
        assert put.size == 2 * MiB + 3 + 6 + 6 + len("#!/bin/sh\necho hi\n")
        assert seen, "a directory put reports progress"

        listing = await b.fetch_listing(put.file_id)
        assert [e.path for e in listing.entries][:3] == ["big.bin", "docs", "docs/a.txt"]
        assert len(listing.file_ids()) == 5  # a file ID covers the name: chunks are shared
        assert b.file_info(listing.files()[0].file_id) is None, "ls fetched no file of the tree"

        dest = tmp_path / "out" / "copy"
        dest.parent.mkdir()
        got = await b.get_directory(put.file_id, dest)
        assert (got.path, got.files) == (dest, 5)
        want = snapshot(src)
        for skipped in ("outside", "escape", "fifo"):
            want.pop(skipped, None)
        run = want["run.sh"]
        want["run.sh"] = (run[0], 0o755, run[2])  # setuid dropped
        assert snapshot(dest) == want
        assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)
        assert [p.name for p in dest.parent.iterdir()] == ["copy"], "no temporary tree left"

        with pytest.raises(FileExistsError):
            await b.get_directory(put.file_id, dest)
        nursery.cancel_scope.cancel()


async def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    random_file(big, 17 * MiB, seed=3)
    small = tmp_path / "small.txt"
    small.write_text("not a listing")
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        big_id = await a.put(big, disperse=False)
        small_id = await a.put(small, disperse=False)
        with pytest.raises(NotADirectoryListingError, match="not a directory"):
            await b.fetch_listing(big_id)
        # Refused from its manifest alone: none of the 17 MiB was fetched.
        assert b.store.stored_bytes < MiB
        with pytest.raises(NotADirectoryListingError):
            await b.fetch_listing(small_id)
        nursery.cancel_scope.cancel()


HOSTILE = [
    ("../evil", "climbs out"),
    ("/tmp/evil", "absolute"),
    ("a//b", "empty or ."),
    ("ok/./b", "empty or ."),
]


async def _publish_raw_listing(node: Node, tmp_path: Path, data: bytes) -> bytes:
    raw = tmp_path / f"raw-{len(os.listdir(tmp_path))}"
    raw.write_bytes(data)
    return await node.put(raw, disperse=False, name="evil")


def _raw(entries: list[list[object]]) -> bytes:
    import msgpack

    packed: bytes = msgpack.packb(
        ["p2pstore-directory", 1, "evil", 0o755, entries], use_bin_type=True
    )
    return packed


async def test_hostile_listings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_text("x")
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        fid = await a.put(payload, disperse=False)
        cases: list[tuple[list[list[object]], str]] = [
            ([["ok", 1, 0o755], [path, 0, 0o644, 1, fid]], match) for path, match in HOSTILE
        ]
        cases += [
            ([["l", 2, "/etc"]], "absolute"),
            ([["l", 2, "../.."]], "leaves the tree"),
            ([["d", 1, 0o755], ["d/l", 2, "../../etc/passwd"]], "leaves the tree"),
            ([["l", 2, "x/../.."]], "after a name"),
            ([["l", 2, "d"], ["l/x", 0, 0o644, 1, fid]], "parent is not"),
            ([["x", 0, 0o644, 1, fid], ["x", 0, 0o644, 1, fid]], "duplicate"),
            ([["x", 0, 0o4755, 1, fid]], "mode"),
            ([["a\x00b", 0, 0o644, 1, fid]], "plain path component"),
        ]
        out = tmp_path / "out"
        out.mkdir()
        for entries, match in cases:
            evil_id = await _publish_raw_listing(a, tmp_path, _raw(entries))
            with pytest.raises(DirectoryError, match=match):
                await b.get_directory(evil_id, out / "evil")
            assert list(out.iterdir()) == [], f"nothing written for {entries}"
        assert not (tmp_path / "evil").exists()
        nursery.cancel_scope.cancel()


async def test_failed_get_leaves_no_tree_and_resumes(tmp_path: Path) -> None:
    """A listing naming a file nobody has: the get fails, the temporary tree is removed, and
    what it fetched (the listing at least) stays in the store."""
    real = tmp_path / "real.bin"
    random_file(real, 1 * MiB, seed=5)
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        real_id = await a.put(real, disperse=False)
        listing = DirectoryListing.build(
            "t",
            0o755,
            [
                Entry("real.bin", EntryKind.FILE, 0o644, 1 * MiB, real_id),
                Entry("ghost.bin", EntryKind.FILE, 0o644, 5, b"\x01" * 32),
            ],
        )
        tree_id = await _publish_raw_listing(a, tmp_path, listing.encode())
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(FileUnavailableError):
            await b.get_directory(tree_id, out / "t")
        assert list(out.iterdir()) == []
        assert b.file_info(tree_id) is not None, "the listing stays for the next try"
        nursery.cancel_scope.cancel()


async def test_cancelled_get_leaves_no_tree(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    for i in range(3):
        random_file(src / f"f{i}", 3 * MiB, seed=10 + i)
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        put = await a.put_directory(src, disperse=False)
        out = tmp_path / "out"
        out.mkdir()
        with trio.move_on_after(0.3):
            await b.get_directory(put.file_id, out / "tree")
        assert list(out.iterdir()) in ([], [out / "tree"])
        if not (out / "tree").exists():
            got = await b.get_directory(put.file_id, out / "tree")  # resumes from the store
            assert got.files == 3
        assert snapshot(out / "tree") == snapshot(src)
        nursery.cancel_scope.cancel()


async def test_case_clashes_refused_where_the_filesystem_folds_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = tmp_path / "payload"
    payload.write_text("x")
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        fid = await a.put(payload, disperse=False)
        raw = _raw([["README", 0, 0o644, 1, fid], ["ReadMe", 0, 0o644, 1, fid]])
        clash_id = await _publish_raw_listing(a, tmp_path, raw)
        out = tmp_path / "out"
        out.mkdir()
        monkeypatch.setattr("p2pstore.directories._folds_case", lambda _d: True)
        with pytest.raises(DirectoryError, match="same name on this filesystem"):
            await b.get_directory(clash_id, out / "t")
        assert list(out.iterdir()) == []
        monkeypatch.setattr("p2pstore.directories._folds_case", lambda _d: False)
        await b.get_directory(clash_id, out / "t")  # on a case-sensitive one, both are kept
        assert sorted(p.name for p in (out / "t").iterdir()) == ["README", "ReadMe"]
        nursery.cancel_scope.cancel()


async def test_directory_put_is_a_transfer_and_empty_trees_work(tmp_path: Path) -> None:
    src = tmp_path / "hollow"
    (src / "a" / "b").mkdir(parents=True)
    async with trio.open_nursery() as nursery:
        _, a, b = await _two(nursery, tmp_path)
        kinds: list[list[str]] = []
        put = await a.put_directory(
            src,
            disperse=False,
            progress=lambda _p: kinds.append([t.kind for t in a.status().transfers]),
        )
        assert ["put"] in kinds
        assert (put.files, put.directories, put.size) == (0, 2, 0)
        got = await b.get_directory(put.file_id, tmp_path / "copy")
        assert (got.files, got.size) == (0, 0)
        assert (tmp_path / "copy" / "a" / "b").is_dir()
        assert a.status().transfers == []
        nursery.cancel_scope.cancel()


async def test_a_file_of_a_tree_is_looked_up_again_only_while_nothing_was_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from p2pstore import directories

    monkeypatch.setattr(directories, "LOOKUP_RETRY_DELAYS", (0.0, 0.0))
    entry = Entry("f", EntryKind.FILE, 0o644, 1, b"\x01" * 32)

    class Flaky:
        def __init__(self, failures: list[FileUnavailableError]) -> None:
            self.failures, self.calls = failures, 0

        async def get(self, file_id: bytes, dest: Path, **kw: object) -> str:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            return "ok"

    found_late = Flaky([FileUnavailableError("no provider found"), FileUnavailableError("x")])
    assert await directories._get_file(found_late, entry, Path("/x"), print, None) == "ok"  # type: ignore[arg-type]
    assert found_late.calls == 3
    never = Flaky([FileUnavailableError("no provider found")] * 5)
    with pytest.raises(FileUnavailableError):
        await directories._get_file(never, entry, Path("/x"), print, None)  # type: ignore[arg-type]
    assert never.calls == 3
    lost = Flaky([FileUnavailableError("stripe 0 lacks shares", {0: [b"\x02" * 32]})])
    with pytest.raises(FileUnavailableError, match="lacks shares"):
        await directories._get_file(lost, entry, Path("/x"), print, None)  # type: ignore[arg-type]
    assert lost.calls == 1
