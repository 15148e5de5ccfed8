"""Issue 13 item 7: a killed download's hidden ``.part`` file is removed, a live one kept."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import trio

from p2pstore.manifest import Manifest
from p2pstore.transfer.output import OutputFile, remove_dead_parts

from .swarm import Swarm, random_file, sha256_file

MiB = 1 << 20


def _dead_part(dest: Path, tag: str = "0badc0de", size: int = 3 * MiB) -> Path:
    """What ``kill -9`` leaves: the temporary file, nobody holding its lock."""
    part = dest.parent / f".{dest.name}.{tag}.part"
    part.write_bytes(b"\0" * size)
    return part


async def test_dead_parts_go_live_ones_stay(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dead = _dead_part(dest)
    unrelated = tmp_path / ".other.bin.0badc0de.part"
    unrelated.write_bytes(b"x")
    (tmp_path / "link").symlink_to(unrelated)
    live = OutputFile(Manifest("out.bin", 10, 65536, 1, 0, ((bytes(32),),)), dest)
    await live.open()
    try:
        assert remove_dead_parts(dest) == [dead]
        assert live.tmp.exists(), "a running download's file is locked, so kept"
        assert unrelated.exists()
        # The lock is the running download's, not a guess from the name: once it is gone...
        live.abort()
        assert not live.tmp.exists()
    finally:
        live.abort()


def test_a_part_locked_by_another_process_is_kept(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    part = _dead_part(dest, size=10)
    fd = os.open(part, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # another process sees it locked
            os._exit(0 if remove_dead_parts(dest) == [] and part.exists() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert remove_dead_parts(dest) == [part]


async def test_get_and_restart_remove_what_killed_downloads_left(tmp_path: Path) -> None:
    """As reported: every killed download left a hidden .part file beside its destination."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 2 * MiB + 3, seed=31)
    out = tmp_path / "out"
    out.mkdir()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        getter = await swarm.start("getter")
        file_id = await holder.put(src, disperse=False)
        # A get into the same destination removes what a dead one left there.
        dead = _dead_part(out / "a.bin")
        await getter.get(file_id, out / "a.bin")
        assert sha256_file(out / "a.bin") == digest
        assert not dead.exists()
        # A download the process did not survive: noted, never forgotten, its file left behind.
        orphan = _dead_part(out / "b.bin", tag="12345678")
        getter.store.note_download(out / "b.bin")
        member = next(m for m in swarm.members if m.name == "getter")
        await swarm.stop(getter)
        assert orphan.exists()
        getter = await swarm.restart(member)
        assert not orphan.exists(), "removed when the node started again"
        assert getter.store.pending_downloads() == []
        assert sorted(p.name for p in out.iterdir()) == ["a.bin"]
        nursery.cancel_scope.cancel()
