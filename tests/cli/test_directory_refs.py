"""``ls`` marks directories; ``rm`` / ``unpin`` / ``pin`` / ``check`` of a directory act on its
tree; ``get`` of an ID downloads it once and refuses an existing name before fetching it (real
``p2pstore daemon`` processes on 127.0.0.1, as in test_directories.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_directories import daemons  # noqa: F401  (the fixture)
from .test_end_to_end import Daemon

pytest.importorskip("p2pstore.node")


def test_ls_marks_directories_and_rm_removes_the_tree(
    daemons: tuple[Path, list[Daemon]],  # noqa: F811
) -> None:
    base, (_, uploader, _) = daemons
    src = base / "album"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(200_000))
    (src / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    dir_id = uploader.cli("put", "--no-disperse", str(src)).stdout.strip()
    file_ids = {e["file_id"] for e in uploader.json("ls", dir_id)["entries"] if "file_id" in e}
    assert len(file_ids) == 2

    listed = uploader.json("ls")
    marks = {f["file_id"]: f["directory"] for f in listed["files"]}
    assert marks[dir_id] is True
    assert not any(marks[f] for f in file_ids)
    table = uploader.cli("ls")
    assert "album/" in table.stdout

    checked = uploader.cli("check", dir_id)
    assert checked.returncode == 0, checked.stderr
    assert "healthy (directory album/, 2 files" in checked.stdout

    removed = uploader.json("rm", dir_id)
    assert removed["directory"] is True
    assert (removed["changed"], removed["changed_bytes"]) == (2, 300_000)
    assert removed["freed_bytes"] >= 300_000
    left = {f["file_id"] for f in uploader.json("ls")["files"]}
    assert not left & (file_ids | {dir_id})


def test_unpin_and_pin_of_a_directory_say_what_they_did(
    daemons: tuple[Path, list[Daemon]],  # noqa: F811
) -> None:
    base, (_, uploader, _) = daemons
    src = base / "two"
    src.mkdir()
    (src / "x.txt").write_bytes(b"x" * 1000)
    (src / "y.txt").write_bytes(b"y" * 2000)
    dir_id = uploader.cli("put", "--no-disperse", str(src)).stdout.strip()
    (base / "solo").mkdir()
    (base / "solo" / "x.txt").write_bytes(b"x" * 1000)
    assert uploader.cli("put", "--no-disperse", str(base / "solo" / "x.txt")).returncode == 0
    unpinned = uploader.cli("unpin", dir_id)
    assert unpinned.returncode == 0, unpinned.stderr
    assert "directory two/, 1 of 2 files released (2.0 KiB)" in unpinned.stdout
    assert "1 kept" in unpinned.stdout
    pinned = uploader.cli("pin", dir_id)
    assert pinned.returncode == 0, pinned.stderr
    assert "directory two/, 1 of 2 files pinned" in pinned.stdout


def test_get_refuses_an_existing_name_before_fetching_the_file(
    daemons: tuple[Path, list[Daemon]],  # noqa: F811
) -> None:
    base, (_, uploader, downloader) = daemons
    (base / "src").mkdir()
    (base / "src" / "note.txt").write_bytes(b"small file\n" * 50_000)
    file_id = uploader.cli("put", "--no-disperse", str(base / "src" / "note.txt")).stdout.strip()
    work = base / "work"
    work.mkdir()
    (work / "note.txt").write_bytes(b"mine")
    refused = downloader.cli("get", file_id, cwd=work)
    assert refused.returncode != 0
    assert "exists" in refused.stderr
    assert (work / "note.txt").read_bytes() == b"mine"
    known = downloader.json("ls")
    assert file_id not in {f["file_id"] for f in known["files"]}, "the file was not fetched"
    # At most its manifest (a few hundred bytes) is stored, none of its 550 kB.
    assert all(p["bytes"] < 10_000 for p in known.get("partial", []) if p["file_id"] == file_id)
    # Into a directory holding that name: refused the same way; elsewhere it downloads.
    assert downloader.cli("get", file_id, "-o", str(work)).returncode != 0
    got = downloader.json("get", file_id, "-o", str(work / "copy.txt"))
    assert got["path"] == str(work / "copy.txt")
    assert "directory" not in got
    assert (work / "copy.txt").read_bytes() == b"small file\n" * 50_000
    assert sorted(p.name for p in work.iterdir()) == ["copy.txt", "note.txt"]
