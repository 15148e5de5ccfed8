"""Interrupted puts (injected faults, cancellation, kill -9) leave a consistent, resumable store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import p2pstore.store as store_mod
from p2pstore._index import Index
from p2pstore.store import ChunkStore

from .helpers import CS, assert_store_consistent, random_bytes


class InjectedFault(Exception):
    pass


class FaultPlan:
    """Raise InjectedFault on the Nth call to any of the patched write-path functions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.fired = False

    def wrap(self, fn: Callable[..., Any], before: bool) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            fire = self.calls == self.n
            if fire and before:
                self.fired = True
                raise InjectedFault(fn.__name__)
            result = fn(*args, **kwargs)
            if fire:
                self.fired = True
                raise InjectedFault(fn.__name__)
            return result

        return wrapper


TARGETS = [
    (store_mod, "_write_temp"),
    (store_mod, "_fsync_dir"),
    (store_mod.os, "replace"),
    (Index, "insert_chunks"),
    (Index, "add_file"),
]


@settings(max_examples=max(1, settings().max_examples // 2))  # disk-heavy: half
@given(
    n=st.integers(1, 80),
    before=st.booleans(),
    k=st.integers(1, 4),
    m=st.integers(0, 2),
    size=st.integers(1, 9 * CS),
    seed=st.integers(0, 2**32),
)
def test_interrupted_put_is_consistent_and_resumable(
    n: int, before: bool, k: int, m: int, size: int, seed: int
) -> None:
    content = random_bytes(seed, size)
    plan = FaultPlan(n)
    with tempfile.TemporaryDirectory() as tmp_str, pytest.MonkeyPatch.context() as mp:
        tmp = Path(tmp_str)
        src = tmp / "in.bin"
        src.write_bytes(content)

        async def put(store: ChunkStore) -> Any:
            return await store.put_file(src, chunk_size=CS, k=k, m=m)

        with ChunkStore.open(tmp / "store") as store:
            for owner, attr in TARGETS:
                mp.setattr(owner, attr, plan.wrap(getattr(owner, attr), before))
            try:
                trio.run(put, store)
            except InjectedFault:
                assert plan.fired
                # Listed only if complete (the fault hit after the final commit).
                for f in store.list_files():
                    assert f.chunks_present == f.chunks_total
            else:
                assert not plan.fired
            mp.undo()
        assert_store_consistent(tmp / "store")
        with ChunkStore.open(tmp / "store") as store:
            assert list((tmp / "store" / "tmp").iterdir()) == []
            manifest = trio.run(put, store)
            [listed] = store.list_files()
            assert listed.file_id == manifest.file_id
            assert listed.chunks_present == listed.chunks_total

            async def get() -> None:
                await store.reassemble(manifest, tmp / "out.bin")

            trio.run(get)
            assert (tmp / "out.bin").read_bytes() == content
        assert_store_consistent(tmp / "store")


async def test_cancelled_put_is_consistent_and_resumable(tmp_path: Path) -> None:
    content = random_bytes(1, 40 * CS)
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    with ChunkStore.open(tmp_path / "store") as store:
        with trio.move_on_after(0.02):
            await store.put_file(src, chunk_size=CS, k=2, m=1)
        assert_store_consistent(store.data_dir)
        manifest = await store.put_file(src, chunk_size=CS, k=2, m=1)
        await store.reassemble(manifest, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == content


_CHILD = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from p2pstore.store import ChunkStore

    async def main():
        with ChunkStore.open(Path(sys.argv[1])) as store:
            print("ready", flush=True)
            await store.put_file(Path(sys.argv[2]), chunk_size=65536, k=4, m=2)
            print("done", flush=True)

    trio.run(main)
    """
)


@pytest.mark.slow
def test_kill_9_during_put(tmp_path: Path) -> None:
    content = os.urandom(48 * 1024 * 1024)
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    data_dir = tmp_path / "store"
    rng = random.Random(1)
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data_dir), str(src)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert_store_consistent(data_dir)
        with ChunkStore.open(data_dir) as store:
            assert list((data_dir / "tmp").iterdir()) == []
            for f in store.list_files():
                assert f.chunks_present == f.chunks_total

    async def finish() -> None:
        with ChunkStore.open(data_dir) as store:
            manifest = await store.put_file(src, chunk_size=CS, k=4, m=2)
            await store.reassemble(manifest, tmp_path / "out.bin")
            assert (await store.verify()).ok

    trio.run(finish)
    assert (tmp_path / "out.bin").read_bytes() == content


BATCH_TARGETS = [
    (store_mod, "_write_temp"),
    (store_mod, "_fsync_file"),
    (store_mod.os, "replace"),
    (store_mod, "_fsync_dir"),
    (Index, "insert_chunks"),
]


@settings(max_examples=max(1, settings().max_examples // 2))  # disk-heavy: half
@given(
    n=st.integers(1, 40),
    before=st.booleans(),
    count=st.integers(2, 12),
    seed=st.integers(0, 2**32),
)
def test_interrupted_batch_put_is_consistent_and_resumable(
    n: int, before: bool, count: int, seed: int
) -> None:
    """``put_chunks`` of a batch (the download writer's path: temp files written, fsynced,
    renamed, each shard directory fsynced once) interrupted at any write-path call: nothing
    indexed without its file, no temp file left after reopen, and the same batch again stores
    every chunk."""
    chunks = [random_bytes(seed + i, CS // 2 + i) for i in range(count)]
    items = [(sha_of(c), c) for c in chunks]
    plan = FaultPlan(n)
    with tempfile.TemporaryDirectory() as tmp_str, pytest.MonkeyPatch.context() as mp:
        tmp = Path(tmp_str)

        async def put(store: ChunkStore) -> list[bool]:
            return await store.put_chunks(items, verified=True)

        with ChunkStore.open(tmp / "store") as store:
            for owner, attr in BATCH_TARGETS:
                mp.setattr(owner, attr, plan.wrap(getattr(owner, attr), before))
            try:
                trio.run(put, store)
            except InjectedFault:
                assert plan.fired
            else:
                assert not plan.fired
            mp.undo()
            if plan.fired and before:  # a call that failed: the batch removes its temp files
                assert list((tmp / "store" / "tmp").iterdir()) == []
        assert_store_consistent(tmp / "store")
        with ChunkStore.open(tmp / "store") as store:
            assert list((tmp / "store" / "tmp").iterdir()) == []
            trio.run(put, store)
            for cid, data in items:
                assert store.has_chunk(cid)

                async def read(cid: bytes = cid) -> bytes:
                    return await store.get_chunk(cid)

                assert trio.run(read) == data
        assert_store_consistent(tmp / "store")


def test_a_batch_fsyncs_each_file_once_and_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch path: one fsync per chunk file and one per distinct shard directory (was two
    per chunk: its file and its directory)."""
    chunks = [random_bytes(i, 1000 + i) for i in range(12)]
    items = [(sha_of(c), c) for c in chunks]
    synced_files: list[Path] = []
    synced_dirs: list[Path] = []
    real_file, real_dir = store_mod._fsync_file, store_mod._fsync_dir
    monkeypatch.setattr(
        store_mod, "_fsync_file", lambda p: (synced_files.append(p), real_file(p))[1]
    )
    monkeypatch.setattr(store_mod, "_fsync_dir", lambda p: (synced_dirs.append(p), real_dir(p))[1])
    with ChunkStore.open(tmp_path / "store") as store:
        synced_dirs.clear()
        assert trio.run(lambda: store.put_chunks(items, verified=True)) == [True] * 12
        shards = {store.chunk_path(cid).parent for cid, _ in items}
    assert len(synced_files) == 12
    assert len(set(synced_files)) == 12
    assert sorted(synced_dirs) == sorted(shards)


def sha_of(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()
