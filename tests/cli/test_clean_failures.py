"""Issue 15, clean failures: output paths, temp-file names, full disks, settings checked at
start-up, unpinned files leaving the listing after gc."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import trio
from typer.testing import Result

from p2pstore import store as store_module
from p2pstore.config import CONFIG_FILE_NAME
from p2pstore.store import ChunkStore

from .fakes import FILE_ID, FakeNode, daemon_in_thread, invoke

HEX = FILE_ID.hex()


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("suffix", ["/", "/."])
def test_get_into_a_missing_directory_with_a_trailing_slash_is_refused(
    suffix: str, daemon: FakeNode, data_dir: Path
) -> None:
    missing = f"{data_dir}/missing-dir{suffix}"
    result = invoke("get", HEX, "-o", missing, "--data-dir", str(data_dir))
    assert result.exit_code == 2, result.output
    assert "no such directory" in one_error_line(result)
    assert not (data_dir / "missing-dir").exists()
    assert not any(call[0] == "get" for call in daemon.calls), "refused before downloading"


def test_get_into_an_existing_directory_with_a_trailing_slash_saves_inside(
    daemon: FakeNode, data_dir: Path
) -> None:
    out = data_dir / "out"
    out.mkdir()
    result = invoke("get", HEX, "-o", f"{out}/", "--json", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    saved = Path(json.loads(result.stdout)["path"])
    assert saved.parent == out  # the fake has no name for it: the file ID names it
    assert saved.read_bytes() == b"hello world\n"
    assert os.listdir(out) == [saved.name]


def test_an_unwritable_output_is_named_not_the_temporary_file(
    daemon: FakeNode, data_dir: Path
) -> None:
    target = data_dir / "x"
    temp = data_dir / ".x.0123abcd.part"
    daemon.get_error = PermissionError(errno.EACCES, "Permission denied", str(temp))
    result = invoke("get", HEX, "-o", str(target), "--data-dir", str(data_dir))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line == f"error: Permission denied: {target}"
    assert ".part" not in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_get_into_proc_fails_without_naming_a_temporary_file(
    daemon: FakeNode, data_dir: Path
) -> None:
    daemon.get_error = None
    result = invoke("get", HEX, "-o", "/proc/x", "--data-dir", str(data_dir))
    # The fake writes dest directly; the real node's temp file sits beside it: either way the
    # user sees /proc/x and no internal name.
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "/proc/x" in line
    assert ".part" not in line


def test_a_full_disk_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "write", full)
    target = tmp_path / "chunk.tmp"
    with pytest.raises(OSError, match="No space left") as info:
        store_module._write_temp(target, b"data")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path)
    assert not target.exists()


@pytest.mark.parametrize(
    ("content", "keys"),
    [
        ('chunk_size = "3MiB"\n', ["chunk_size"]),
        ("k = 200\nm = 100\n", ["k", "m"]),
        ('chunk_size = "1KiB"\n', ["chunk_size"]),
        ("log_level = 3\n", ["log_level"]),
    ],
)
def test_bad_settings_are_refused_at_start_up_naming_file_and_key(
    content: str, keys: list[str], data_dir: Path
) -> None:
    (data_dir / CONFIG_FILE_NAME).write_text(content)
    result = invoke("daemon", "--udp-port", "0", "--tcp-port", "0", "--data-dir", str(data_dir))
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert str(data_dir / CONFIG_FILE_NAME) in line
    for key in keys:
        assert key in line
    assert not (data_dir / "control.sock").exists()


def test_a_good_layout_is_accepted(tmp_path: Path) -> None:
    from p2pstore.config import load_settings

    (tmp_path / CONFIG_FILE_NAME).write_text('chunk_size = "256KiB"\nk = 10\nm = 4\n')
    settings = load_settings(tmp_path)
    assert (settings.chunk_size, settings.k, settings.m) == (256 * 1024, 10, 4)


def test_unpin_then_gc_removes_the_file_from_the_listing(tmp_path: Path) -> None:
    async def main() -> None:
        kept, dropped = tmp_path / "kept.bin", tmp_path / "dropped.bin"
        kept.write_bytes(os.urandom(200_000))
        dropped.write_bytes(os.urandom(300_000))
        with ChunkStore.open(tmp_path / "store") as store:
            keep = await store.put_file(kept, chunk_size=65536)
            drop = await store.put_file(dropped, chunk_size=65536)
            store.unpin(drop.file_id)
            assert store.gc() > 300_000
            assert [f.file_id for f in store.list_files()] == [keep.file_id]
            assert store.file_info(drop.file_id) is None
            assert not store.knows_file(drop.file_id)
            assert store.file_info(keep.file_id) is not None
            assert store.gc() == 0
            # storing it again brings it back, whole
            again = await store.put_file(dropped, chunk_size=65536)
            info = store.file_info(again.file_id)
            assert info is not None
            assert info.chunks_present == info.chunks_total

    trio.run(main)


@pytest.mark.parametrize("how", ["error", "cancel"])
def test_a_failed_or_cancelled_put_removes_what_it_wrote(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        other = tmp_path / "other.bin"
        other.write_bytes(os.urandom(100_000))
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(40 * 65536))
        with ChunkStore.open(tmp_path / "store") as store:
            kept = await store.put_file(other, chunk_size=65536)
            before = store.stored_bytes
            real = store._write_chunk_file
            calls = 0
            cancel = trio.CancelScope()

            def flaky(chunk_id: bytes, data: bytes | memoryview) -> None:
                nonlocal calls
                calls += 1
                if calls == 25:
                    if how == "error":
                        raise OSError(errno.ENOSPC, "No space left on device", "/store/tmp")
                    trio.from_thread.run_sync(cancel.cancel)
                real(chunk_id, data)

            monkeypatch.setattr(store, "_write_chunk_file", flaky)
            if how == "error":
                with pytest.raises(OSError, match="No space left"):
                    await store.put_file(big, chunk_size=65536)
            else:
                with cancel:
                    await store.put_file(big, chunk_size=65536)
                assert cancel.cancelled_caught
            assert calls >= 25
            assert store.stored_bytes == before, "every chunk it wrote is gone again"
            assert [f.file_id for f in store.list_files()] == [kept.file_id]
            assert store.gc() == 0, "nothing left for gc"
            info = store.file_info(kept.file_id)
            assert info is not None
            assert info.chunks_present == info.chunks_total
            monkeypatch.setattr(store, "_write_chunk_file", real)
            again = await store.put_file(big, chunk_size=65536)  # and a new put succeeds
            assert store.file_info(again.file_id) is not None

    trio.run(main)


def test_an_unfinished_download_is_listed_and_removable(tmp_path: Path) -> None:
    import hashlib

    async def main() -> None:
        fid = bytes(range(32))
        chunks = [os.urandom(1000) for _ in range(3)]
        with ChunkStore.open(tmp_path / "store") as store:
            # what a get that failed midway leaves: chunks held for a file with no manifest
            await store.put_chunks([(hashlib.sha256(c).digest(), c) for c in chunks], file_id=fid)
            assert store.list_files() == []
            assert store.partial_downloads() == [(fid, 3, 3000)]
            assert store.gc() == 0, "kept: get resumes from them"
            assert store.knows_file(fid)
            store.unpin(fid)  # what rm does (then gc)
            assert store.gc() == 3000
            assert store.partial_downloads() == []
            assert store.stored_bytes == 0

    trio.run(main)


def test_ls_shows_unfinished_downloads(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(logging.getLogger("p2pstore.control"), "propagate", False)
    node = FakeNode()
    node.store = SimpleNamespace(partial_downloads=lambda: [(FILE_ID, 7, 7 << 20)])
    with daemon_in_thread(node, data_dir):
        result = invoke("ls", "--data-dir", str(data_dir))
        as_json = json.loads(invoke("ls", "--json", "--data-dir", str(data_dir)).stdout)
    assert result.exit_code == 0, result.output
    assert "1 unfinished download (get ID again to resume, rm ID to remove)" in result.stdout
    assert HEX in result.stdout
    assert "7.0 MiB" in result.stdout
    assert as_json["partial"] == [{"file_id": HEX, "chunks": 7, "bytes": 7 << 20}]


@pytest.mark.parametrize("as_json", [False, True])
def test_a_full_disk_under_get_names_the_output(
    as_json: bool, daemon: FakeNode, data_dir: Path
) -> None:
    # os.write/os.pwrite name no file: the error must still say where the disk is full.
    daemon.get_error = OSError(errno.ENOSPC, "No space left on device")
    target = data_dir / "x.bin"
    extra = ["--json"] if as_json else []
    result = invoke("get", HEX, "-o", str(target), *extra, "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    if as_json:
        assert json.loads(result.stderr)["error"] == f"No space left on device: {target}"
    else:
        assert one_error_line(result) == f"error: No space left on device: {target}"


async def test_a_full_disk_while_writing_the_output_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pstore.manifest import Manifest
    from p2pstore.transfer import output

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = output.OutputFile(Manifest("x.bin", 10, 65536, 1, 0, ((bytes(32),),)), tmp_path / "x")
    await out.open()
    monkeypatch.setattr(output.os, "pwrite", full)
    try:
        with pytest.raises(OSError, match="No space left") as info:
            await out.write_chunk(0, 0, b"0123456789")
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == str(out.tmp)
    finally:
        out.abort()
