"""Gateway memory: the window is sized in bytes and all reads share one byte budget."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pstore.http import HttpSettings, app
from p2pstore.http.budget import ReadBudget
from p2pstore.transfer.download import Download
from tests.node.swarm import Swarm, random_file

from .helpers import start_face

MiB = 1 << 20


async def test_budget_waits_wakes_and_bounds_opportunistic_takes() -> None:
    budget = ReadBudget(10)
    assert budget.fits(5)
    assert not budget.fits(6)
    assert budget.try_take(5)
    assert not budget.try_take(1)  # opportunistic takes stay within half
    await budget.take(5)
    assert budget.used == 10
    with pytest.raises(ValueError, match="never fit"):
        await budget.take(6)
    order: list[str] = []

    async def waiter() -> None:
        await budget.take(3)
        order.append("took")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.05)
        assert order == []  # blocked: no room
        budget.give(2)
        await trio.sleep(0.05)
        assert order == []  # still too little
        budget.give(1)
        await trio.sleep(0.05)
        assert order == ["took"]
    assert budget.used == 10
    assert budget.peak == 10


class _Recording(ReadBudget):
    made: list[ReadBudget] = []

    def __init__(self, total: int) -> None:
        super().__init__(total)
        _Recording.made.append(self)


async def test_concurrent_remote_reads_stay_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "ReadBudget", _Recording)
    windows: list[tuple[int, int]] = []
    set_window = Download.set_window

    def record(self: Download, first: int, end: int, *args: Any, **kwargs: Any) -> None:
        windows.append((first, end))
        set_window(self, first, end, *args, **kwargs)

    monkeypatch.setattr(Download, "set_window", record)
    src = tmp_path / "f.bin"
    random_file(src, 12 * MiB + 3, seed=11)  # 4 stripes of 4 x 1 MiB chunks
    data = src.read_bytes()
    own = tmp_path / "own.bin"
    random_file(own, 12 * MiB + 5, seed=13)
    own_data = own.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        reader = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        own_id = await reader.put(own, disperse=False)
        stripe = (await holder.store.load_manifest(file_id)).layout.stripe_bytes
        assert stripe == 4 * MiB
        # One stripe of window (16 stripes by count), two stripes of budget for all reads.
        settings = HttpSettings(window_bytes=stripe + 1, read_budget_bytes=2 * stripe)
        face = await start_face(nursery, reader, settings=settings)
        budget = _Recording.made[-1]
        digests: dict[str, list[bytes]] = {"remote": [], "local": []}

        async def read(kind: str, fid: bytes) -> None:
            reply = await face.get(f"/files/{fid.hex()}")
            assert reply.status == 200
            digests[kind].append(hashlib.sha256(reply.body).digest())

        # Three local reads (read back from the store, a stripe of budget each) and one remote
        # read (kept chunks and read-back) at once; one remote downloader per file, so the
        # review's super-seeding finding (2) does not interfere.
        async with trio.open_nursery() as readers:
            readers.start_soon(read, "remote", file_id)
            for _ in range(3):
                readers.start_soon(read, "local", own_id)
        assert digests["remote"] == [hashlib.sha256(data).digest()]
        assert digests["local"] == [hashlib.sha256(own_data).digest()] * 3
        assert windows
        assert max(end - first for first, end in windows) <= 1, windows
        assert 0 < budget.peak <= budget.total
        assert budget.used == 0  # every buffer given back
        ranged = await face.get(f"/files/{own_id.hex()}", headers={"range": "bytes=5-4194310"})
        assert ranged.body == own_data[5:4194311]
        assert budget.used == 0
        nursery.cancel_scope.cancel()


async def test_a_stripe_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    random_file(src, 5 * MiB, seed=12)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        file_id = await node.put(src, disperse=False)
        face = await start_face(nursery, node, settings=HttpSettings(read_budget_bytes=4 * MiB))
        refused = await face.get(f"/files/{file_id.hex()}")
        assert refused.status == 507
        assert refused.json()["error"]["code"] == "too_large"
        head = await face.call("HEAD", f"/files/{file_id.hex()}")
        assert head.status == 200
        assert head.headers["content-length"] == str(5 * MiB)
        nursery.cancel_scope.cancel()


async def test_the_local_completeness_check_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "f.bin"
    random_file(src, 3 * MiB, seed=14)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        file_id = await node.put(src, disperse=False)
        face = await start_face(nursery, node)
        on_loop: list[bool] = []
        has_chunks = node.store.has_chunks

        def spy(ids: Any) -> list[bool]:
            on_loop.append(threading.current_thread() is threading.main_thread())
            return has_chunks(ids)

        monkeypatch.setattr(node.store, "has_chunks", spy)
        for method in ("GET", "HEAD"):
            assert (await face.call(method, f"/files/{file_id.hex()}")).status == 200
        assert on_loop == [False, False]  # called, and in a worker thread each time
        nursery.cancel_scope.cancel()
