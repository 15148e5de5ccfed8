"""pin / unpin / rm / check of a directory act on its tree, with reference semantics: a file
another pinned tree lists, or that was pinned on its own, is kept (p2pstore.treerefs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pstore import control
from p2pstore.treerefs import FILE_NAME

from .swarm import Swarm, random_file


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _pinned(node: object, file_id: bytes) -> bool:
    info = node.file_info(file_id)  # type: ignore[attr-defined]
    return info is not None and info.pinned


async def test_unpin_of_a_directory_releases_only_what_nothing_else_holds(tmp_path: Path) -> None:
    shared, own = b"shared by two trees\n" * 50, b"also put on its own\n" * 50
    _tree(tmp_path / "one", {"x.txt": b"x" * 5000, "sub/shared.txt": shared, "own.txt": own})
    _tree(tmp_path / "two", {"shared.txt": shared, "z.txt": b"z" * 7000})
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "own.txt").write_bytes(own)
    async with trio.open_nursery() as nursery:
        a = await Swarm(nursery, tmp_path).start()
        own_id = await a.put(tmp_path / "alone" / "own.txt", disperse=False)  # pinned on its own
        one = await a.put_directory(tmp_path / "one", disperse=False)
        two = await a.put_directory(tmp_path / "two", disperse=False)
        listing = await a.local_directory(one.file_id)
        assert listing is not None
        ids = {e.path: e.file_id for e in listing.files()}
        assert ids["own.txt"] == own_id

        action = await a.unpin_directory(one.file_id)
        assert action is not None
        assert (action.files, action.changed, action.kept) == (3, 1, 2)
        assert action.changed_bytes == 5000
        assert not _pinned(a, one.file_id)
        assert not _pinned(a, ids["x.txt"])
        assert _pinned(a, ids["sub/shared.txt"])
        assert _pinned(a, own_id)
        freed = await a.gc()
        assert freed >= 5000

        # The other tree still comes out whole; then its unpin releases the shared file too.
        got = await a.get_directory(two.file_id, tmp_path / "copy")
        assert (tmp_path / "copy" / "shared.txt").read_bytes() == shared
        assert got.files == 2
        action = await a.unpin_directory(two.file_id)
        assert action is not None
        assert (action.changed, action.kept) == (2, 0)
        assert not _pinned(a, ids["sub/shared.txt"])
        assert _pinned(a, own_id)  # never part of this tree's references

        # A plain file is no directory: the node says so and pin/unpin apply as before.
        assert await a.unpin_directory(own_id) is None
        nursery.cancel_scope.cancel()


async def test_a_file_put_on_its_own_after_the_tree_is_kept(tmp_path: Path) -> None:
    _tree(tmp_path / "t", {"a.bin": b"a" * 3000, "b.bin": b"b" * 4000})
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "a.bin").write_bytes(b"a" * 3000)
    async with trio.open_nursery() as nursery:
        a = await Swarm(nursery, tmp_path).start()
        tree = await a.put_directory(tmp_path / "t", disperse=False)
        solo = await a.put(tmp_path / "solo" / "a.bin", disperse=False)
        action = await a.unpin_directory(tree.file_id)
        assert action is not None
        assert (action.changed, action.kept) == (1, 1)
        assert _pinned(a, solo)
        # pin of the directory pins its listing and every file again.
        action = await a.pin_directory(tree.file_id)
        assert action is not None
        assert (action.pinned, action.changed, action.missing) == (
            True,
            1,
            0,
        )
        listing = await a.local_directory(tree.file_id)
        assert listing is not None
        assert all(_pinned(a, e.file_id) for e in listing.files())
        assert _pinned(a, tree.file_id)
        # Unpinning the solo file drops its own reference: the tree's next unpin releases it.
        a.unpin(solo)
        a.pin(solo)  # pinned on its own again...
        a.unpin(solo)  # ...and not any more
        await a.pin_directory(tree.file_id)
        action = await a.unpin_directory(tree.file_id)
        assert action is not None
        assert (action.changed, action.kept) == (2, 0)
        nursery.cancel_scope.cancel()


async def test_control_ops_act_on_the_tree_and_ls_marks_directories(tmp_path: Path) -> None:
    _tree(tmp_path / "t", {"a.bin": b"a" * 3000, "d/b.bin": b"b" * 4000})
    random_file(tmp_path / "plain.bin", 1000)
    async with trio.open_nursery() as nursery:
        a = await Swarm(nursery, tmp_path).start()
        tree = await a.put_directory(tmp_path / "t", disperse=False)
        plain = await a.put(tmp_path / "plain.bin", disperse=False)
        listed = await control.perform(a, "ls")
        marks = {f["file_id"]: f["directory"] for f in listed["files"]}
        assert marks[tree.file_id.hex()] is True
        assert marks[plain.hex()] is False
        assert sum(marks.values()) == 1

        checked = await control.perform(a, "check", {"file_id": tree.file_id, "repair": False})
        assert checked["directory"] is True
        assert checked["files"] == 2
        assert checked["verdict"] == "healthy"
        assert sorted(checked["by_verdict"]["healthy"]) == ["", "a.bin", "d/b.bin"]

        unpinned = await control.perform(a, "unpin", {"file_id": tree.file_id})
        assert unpinned["directory"] is True
        assert unpinned["pinned"] is False
        assert (unpinned["changed"], unpinned["changed_bytes"]) == (2, 7000)
        pinned = await control.perform(a, "pin", {"file_id": tree.file_id})
        assert (pinned["directory"], pinned["pinned"], pinned["changed"]) == (True, True, 2)
        assert (await control.perform(a, "unpin", {"file_id": plain})) == {
            "file_id": plain.hex(),
            "pinned": False,
        }
        nursery.cancel_scope.cancel()


async def test_a_data_directory_from_before_the_record_is_scanned_once(tmp_path: Path) -> None:
    _tree(tmp_path / "t", {"a.bin": b"a" * 3000})
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        a = await swarm.start()
        tree = await a.put_directory(tmp_path / "t", disperse=False)
        member = swarm.member(a)
        await swarm.stop(a)
        (member.data_dir / FILE_NAME).unlink()  # as a data directory of the last version
        a = await swarm.restart(member, bootstrap=[])
        assert not a.tree_refs.scanned
        assert await a.directory_ids() == {tree.file_id}
        assert a.tree_refs.scanned
        action = await a.unpin_directory(tree.file_id)
        assert action is not None
        assert action.changed == 1
        nursery.cancel_scope.cancel()


async def test_a_fresh_node_that_got_a_tree_releases_it_with_unpin(tmp_path: Path) -> None:
    # trial 15 item 1: the first-use scan ran after the get had recorded the tree and lost it.
    _tree(tmp_path / "t", {"a.bin": b"a" * 3000, "d/b.bin": b"b" * 4000})
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        a = await swarm.start()
        tree = await a.put_directory(tmp_path / "t", disperse=False)
        b = await swarm.start()
        got = await b.get_file_or_directory(tree.file_id, lambda name: tmp_path / f"got-{name}")
        assert getattr(got, "files", None) == 2
        assert await b.directory_ids() == {tree.file_id}
        unpinned = await control.perform(b, "unpin", {"file_id": tree.file_id})
        assert unpinned["directory"] is True
        assert (unpinned["changed"], unpinned["changed_bytes"]) == (2, 7000)
        assert not any(info.pinned for info in b.list_files())
        assert await b.gc() >= 7000
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["failed", "cancelled"])
async def test_a_failed_directory_put_releases_the_files_it_stored(
    tmp_path: Path, how: str
) -> None:
    # trial 15 item 3 / issue 15: a failed or cancelled put removes what it wrote.
    _tree(tmp_path / "t", {"a.bin": b"a" * 3000, "b.bin": b"b" * 4000, "pre.bin": b"p" * 2000})
    _tree(tmp_path / "t", {"zz/bad.bin": b"z" * 1000})
    async with trio.open_nursery() as nursery:
        a = await Swarm(nursery, tmp_path).start()
        pre = await a.put(tmp_path / "t" / "pre.bin", disperse=False)  # pinned on its own
        put = a.put

        async def failing_put(path: Path, **kw: object) -> bytes:
            if path.name == "bad.bin":
                await trio.sleep(0.3 if how == "failed" else 60)  # after the others are stored
                raise OSError(5, "injected failure", str(path))
            return await put(path, **kw)  # type: ignore[arg-type]

        a.put = failing_put  # type: ignore[method-assign]
        if how == "failed":
            with pytest.raises(OSError, match="injected"):
                await a.put_directory(tmp_path / "t", disperse=False)
        else:
            with trio.move_on_after(1.0) as scope:
                await a.put_directory(tmp_path / "t", disperse=False)
            assert scope.cancelled_caught
        assert {f.file_id for f in a.list_files() if f.pinned} == {pre}
        assert await a.gc() >= 7000
        assert _pinned(a, pre)
        nursery.cancel_scope.cancel()
