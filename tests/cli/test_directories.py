"""``put DIR``, ``ls ID`` and ``get ID -o DIR`` with real ``p2pstore daemon`` processes on
127.0.0.1, hostile directory manifests included (every subprocess has a timeout; every daemon
is killed in a ``finally``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from .fakes import short_tmp_dir
from .test_end_to_end import Daemon

pytest.importorskip("p2pstore.node")


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "notes.txt").write_text("notes\n")
    (root / "sub" / "deeper" / "tool").write_text("#!/bin/sh\n")
    (root / "sub" / "deeper" / "tool").chmod(0o750)
    (root / "sub" / "to-top").symlink_to("../top.bin")
    (root / "abs-link").symlink_to("/etc/hostname")


def _listing(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", path.stat().st_mode & 0o777)
            else:
                out[rel] = ("file", path.stat().st_mode & 0o777, path.read_bytes())
    return out


@pytest.fixture
def daemons() -> Iterator[tuple[Path, list[Daemon]]]:
    with short_tmp_dir() as base:
        started: list[Daemon] = []
        try:
            started.append(Daemon(base / "a"))
            started += [Daemon(base / n, bootstrap=started[0].info["udp"]) for n in ("b", "c")]
            yield base, started
        finally:
            for d in started:
                d.kill()


def test_put_ls_get_a_directory(daemons: tuple[Path, list[Daemon]]) -> None:
    base, (_, uploader, downloader) = daemons
    src = base / "photos"
    src.mkdir()
    _tree(src)
    put = uploader.cli("put", str(src))
    assert put.returncode == 0, put.stderr
    dir_id = put.stdout.strip()
    assert len(dir_id) == 64
    assert "warning: skipped abs-link" in put.stderr
    assert "share: p2p://" in put.stderr

    as_json = uploader.json("put", str(src))  # the same tree again: the same ID
    assert as_json["file_id"] == dir_id
    assert as_json["directory"] is True
    assert (as_json["files"], as_json["directories"], as_json["symlinks"]) == (3, 3, 1)
    assert as_json["dispersed"] is True
    assert as_json["link"].startswith("p2p://")

    listed = downloader.json("ls", dir_id)
    assert listed["name"] == "photos"
    paths = [e["path"] for e in listed["entries"]]
    assert paths == sorted(paths, key=lambda p: p.split("/"))
    assert "sub/deeper/tool" in paths
    table = downloader.cli("ls", dir_id)
    assert table.returncode == 0, table.stderr
    assert "sub/to-top -> ../top.bin" in table.stdout
    assert "-rwxr-x---" in table.stdout

    out = base / "out"
    out.mkdir()
    got = downloader.cli("get", dir_id, "-o", str(out / "copy"))
    assert got.returncode == 0, got.stderr
    assert "saved" in got.stdout
    assert "3 files" in got.stdout
    want = _listing(src)
    del want["abs-link"]
    assert _listing(out / "copy") == want
    # Into an existing directory: under the directory's name; never over an existing tree.
    into = downloader.json("get", dir_id, "-o", str(out))
    assert Path(into["path"]) == out / "photos"
    assert _listing(out / "photos") == want
    again = downloader.cli("get", dir_id, "-o", str(out))  # out/photos exists now
    assert again.returncode != 0
    assert "exists" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["copy", "photos"]

    # A plain file still downloads as a file (the directory probe falls back).
    file_id = uploader.cli("put", str(src / "top.bin")).stdout.strip()
    plain = downloader.cli("get", file_id, "-o", str(out / "top.bin"))
    assert plain.returncode == 0, plain.stderr
    assert (out / "top.bin").read_bytes() == (src / "top.bin").read_bytes()
    not_dir = downloader.cli("ls", file_id)
    assert not_dir.returncode != 0
    assert "not a directory" in not_dir.stderr

    # cat of a directory: refused, not the listing's raw bytes on the terminal.
    for argv in (("cat", dir_id), ("get", dir_id, "-o", "-")):
        raw = downloader.cli(*argv)
        assert raw.returncode == 1, raw.stderr
        assert raw.stdout == ""
        assert "is a directory" in raw.stderr


def _evil(entries: list[list[object]]) -> bytes:
    packed: bytes = msgpack.packb(
        ["p2pstore-directory", 1, "evil", 0o755, entries], use_bin_type=True
    )
    return packed


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([["..", 1, 0o755]], "climbs out"),
        ([["../../.bashrc", 0, 0o644, 1, b"\x00" * 32]], "climbs out"),
        ([["/etc/cron.d/x", 0, 0o644, 1, b"\x00" * 32]], "absolute"),
        ([["l", 2, "../../../etc"]], "leaves the tree"),
        ([["l", 2, "/etc"]], "absolute"),
    ],
)
def test_hostile_directory_manifest_is_refused(
    daemons: tuple[Path, list[Daemon]], entries: list[list[object]], message: str
) -> None:
    base, (_, attacker, victim) = daemons
    raw = base / "evil.listing"
    raw.write_bytes(_evil(entries))
    evil_id = attacker.cli("put", str(raw), "--no-disperse").stdout.strip()
    out = base / "victim-out"
    out.mkdir()
    got = victim.cli("get", evil_id, "-o", str(out / "tree"))
    assert got.returncode != 0
    assert message in got.stderr
    assert "Traceback" not in got.stderr
    assert list(out.iterdir()) == []
    assert not (base / ".bashrc").exists()
    listed = victim.cli("ls", evil_id)
    assert listed.returncode != 0
    assert message in listed.stderr
