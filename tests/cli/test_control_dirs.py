"""The directory operations of the control protocol, against a scripted node: argument schemas,
``get_dir`` of a file or a tree, destinations, and OSErrors naming the user's path."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pstore.control import make_request, parse_request, perform
from p2pstore.directories import DirectoryGetResult
from p2pstore.directory import DirectoryListing, Entry, EntryKind
from p2pstore.errors import ProtocolError
from p2pstore.node import GetResult

from .fakes import FakeNode

LISTING = DirectoryListing.build(
    "tree", 0o755, [Entry("f", EntryKind.FILE, 0o644, 3, b"\x07" * 32)]
)


class DirNode(FakeNode):
    """A node whose ``get_file_or_directory`` saves a tree (or, ``is_dir=False``, a file)
    named ``tree`` where the op's ``target_for`` says, without fetching anything."""

    def __init__(self, *, is_dir: bool = True, fail: OSError | None = None) -> None:
        super().__init__()
        self.is_dir, self.fail = is_dir, fail
        self.targets: list[Path] = []
        self.hints: list[object] = []

    async def put_directory(self, path: Path, **kw: Any) -> Any:
        raise NotImplementedError

    async def fetch_listing(self, dir_id: bytes, **kw: Any) -> DirectoryListing:
        return LISTING

    async def get_directory(self, dir_id: bytes, dest: Path, **kw: Any) -> Any:
        raise NotImplementedError

    async def get_file_or_directory(
        self, file_id: bytes, target_for: Callable[[str], Path], **kw: Any
    ) -> Any:
        self.hints.append(kw.get("peer_hint"))
        target = target_for("tree")
        self.targets.append(target)
        if self.fail is not None:
            raise self.fail
        if self.is_dir:
            return DirectoryGetResult(file_id, target, "tree", 1, 3, 0.5, {})
        return GetResult(file_id, target, 5, {"h:1": 5}, 0.25, 0, 0.125)


def test_schemas() -> None:
    parse_request(make_request("put_dir", {"path": "/x", "disperse": True}))
    parse_request(make_request("put_dir", {"path": "/x", "disperse": False, "name": "n"}))
    parse_request(make_request("get_dir", {"file_id": b"\0" * 32, "dest": None, "cwd": "/"}))
    parse_request(make_request("ls_dir", {"file_id": b"\0" * 32}))
    with pytest.raises(ProtocolError):
        make_request("ls_dir", {"file_id": b"\0" * 31})
    with pytest.raises(ProtocolError):
        make_request("put_dir", {"path": "relative", "disperse": True})


async def test_get_dir_of_a_file_is_the_files_get(tmp_path: Path) -> None:
    node = DirNode(is_dir=False)
    args = {"file_id": b"\1" * 32, "dest": None, "cwd": str(tmp_path)}
    result = await perform(node, "get_dir", args)
    assert result["directory"] is False
    assert result["path"] == str(tmp_path / "tree")
    assert result["bytes_from_peers"] == {"h:1": 5}
    assert result["first_chunk_seconds"] == 0.125
    assert isinstance(result["started_at"], float)
    # A node without directory support at all: every ID is a file, for get to fetch.
    assert await perform(FakeNode(), "get_dir", args) == {"directory": False}


async def test_get_dir_passes_a_links_peer_hint(tmp_path: Path) -> None:
    node = DirNode()
    args = {"file_id": b"\1" * 32, "dest": None, "cwd": str(tmp_path), "peer": ["h.example", 9]}
    parse_request(make_request("get_dir", args))
    result = await perform(node, "get_dir", args)
    assert result["directory"] is True
    assert node.hints == [("h.example", 9)]
    node = DirNode()
    await perform(node, "get_dir", {"file_id": b"\1" * 32, "dest": None, "cwd": str(tmp_path)})
    assert node.hints == [None]


async def test_get_dir_refuses_an_existing_destination_before_fetching(tmp_path: Path) -> None:
    node = DirNode()
    taken = tmp_path / "taken"
    taken.write_bytes(b"x")
    args = {"file_id": b"\1" * 32, "dest": str(taken), "cwd": str(tmp_path)}
    with pytest.raises(FileExistsError):
        await perform(node, "get_dir", args)
    assert node.hints == []  # the listing was not even asked for


async def test_get_dir_destinations(tmp_path: Path) -> None:
    node = DirNode()
    fid = b"\1" * 32
    await perform(node, "get_dir", {"file_id": fid, "dest": None, "cwd": str(tmp_path)})
    await perform(node, "get_dir", {"file_id": fid, "dest": str(tmp_path), "cwd": "/"})
    await perform(node, "get_dir", {"file_id": fid, "dest": str(tmp_path / "new"), "cwd": "/"})
    assert node.targets == [tmp_path / "tree", tmp_path / "tree", tmp_path / "new"]
    listed = await perform(node, "ls_dir", {"file_id": fid})
    assert listed["entries"] == [
        {"path": "f", "kind": "file", "mode": 0o644, "size": 3, "file_id": "07" * 32}
    ]


async def test_os_errors_name_the_destination_not_the_temporary_tree(tmp_path: Path) -> None:
    hidden = tmp_path / ".copy.0123abcd.p2pstore-dir" / "f"
    node = DirNode(fail=PermissionError(errno.EACCES, "Permission denied", str(hidden)))
    args = {"file_id": b"\1" * 32, "dest": str(tmp_path / "copy"), "cwd": "/"}
    with pytest.raises(PermissionError) as caught:
        await perform(node, "get_dir", args)
    assert caught.value.filename == str(tmp_path / "copy")
    other = tmp_path / "elsewhere"
    node = DirNode(fail=PermissionError(errno.EACCES, "Permission denied", str(other)))
    with pytest.raises(PermissionError) as caught:
        await perform(node, "get_dir", args)
    assert caught.value.filename == str(other)
