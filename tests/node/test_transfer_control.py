"""Issue 15: transfers as things. ``Node.cancel_transfer`` stops a put (which then removes what it
stored), verify and repair report their phases as progress and are listed among the transfers,
and ``download_limit`` caps what the node's downloads receive."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pstore.errors import ConfigError, NoSuchTransferError, TransferCancelledError
from p2pstore.node import UPLOAD_BURST_SECONDS, NodeConfig, PhaseProgress, PutProgress
from p2pstore.repair import Verdict

from .swarm import FAST, Swarm, random_file, sha256_file
from .test_repair import CONFIG as REPAIR_CONFIG
from .test_repair import _healthy_from, _spread


async def test_cancel_stops_a_put_which_removes_what_it_stored(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    random_file(src, 24 << 20, seed=5)
    async with trio.open_nursery() as nursery:
        node = await Swarm(nursery, tmp_path, FAST).start()
        before = node.store.stored_bytes
        stored = trio.Event()

        def progress(p: PutProgress) -> None:
            if p.phase == "store" and p.done > 0:
                stored.set()

        outcome: list[BaseException] = []

        async def put() -> None:
            try:
                with node.cancellable():
                    await node.put(src, disperse=False, progress=progress)
            except TransferCancelledError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as inner:
            inner.start_soon(put)
            with trio.fail_after(30):
                await stored.wait()
            (transfer,) = node.status().transfers
            assert transfer.kind == "put"
            assert node.cancel_transfer(transfer.id) is transfer
        assert len(outcome) == 1
        assert node.status().transfers == []
        assert node.store.stored_bytes == before
        assert node.list_files() == []
        with pytest.raises(NoSuchTransferError, match=f"no transfer {transfer.id} is running"):
            node.cancel_transfer(transfer.id)
        nursery.cancel_scope.cancel()


async def test_a_put_outside_cancellable_cannot_be_cancelled(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    random_file(src, 4 << 20, seed=6)
    async with trio.open_nursery() as nursery:
        node = await Swarm(nursery, tmp_path, FAST).start()
        refused: list[str] = []

        def progress(p: PutProgress) -> None:
            if p.phase == "store" and not refused:
                (transfer,) = node.status().transfers
                with pytest.raises(NoSuchTransferError) as info:
                    node.cancel_transfer(transfer.id)
                refused.append(str(info.value))

        await node.put(src, disperse=False, progress=progress)
        assert refused
        assert "cannot be cancelled" in refused[0]
        nursery.cancel_scope.cancel()


async def test_verify_reports_its_phases_and_is_listed_while_it_runs(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    random_file(src, 3 << 20, seed=7)
    async with trio.open_nursery() as nursery:
        node = await Swarm(nursery, tmp_path, FAST).start()
        await node.put(src, disperse=False)
        events: list[PhaseProgress] = []
        listed: list[tuple[str, str]] = []

        def progress(p: PhaseProgress) -> None:
            events.append(p)
            listed.extend((t.kind, t.phase) for t in node.status().transfers)

        report = await node.verify(progress=progress)
        assert report.ok
        phases = [e.phase for e in events]
        assert phases[0] == "hashing"
        assert phases[-2:] == ["spares", "rebuilding"]
        hashing = [e for e in events if e.phase == "hashing"]
        assert all(e.unit == "bytes" for e in hashing)
        assert [e.done for e in hashing] == sorted(e.done for e in hashing)
        # every stored chunk re-hashed (bytes_checked also counts spare manifest copies)
        assert hashing[-1].done == hashing[-1].total == node.store.stored_bytes
        assert hashing[-1].done <= report.bytes_checked
        assert ("verify", "hashing") in listed
        assert ("verify", "rebuilding") in listed
        assert node.status().transfers == []
        nursery.cancel_scope.cancel()


async def test_repair_reports_surveying_then_stripes_rebuilt(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, REPAIR_CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 8)
        spare = next(n for n in swarm.live if n not in holders)
        await _healthy_from(spare, file_id)
        await swarm.stop(holders[0])
        repairer = holders[1]
        events: list[PhaseProgress] = []
        kinds: list[str] = []

        def progress(p: PhaseProgress) -> None:
            events.append(p)
            kinds.extend(t.kind for t in repairer.status().transfers)

        report = await repairer.repair(file_id, progress=progress)
        assert report.after.verdict is Verdict.HEALTHY
        assert events[0] == PhaseProgress("surveying", 0, 0, "")
        rebuilding = events[1:]
        assert rebuilding[0] == PhaseProgress("rebuilding", 0, 5, "stripes")
        assert [e.done for e in rebuilding] == list(range(6))
        assert {e.total for e in rebuilding} == {5}
        assert set(kinds) == {"repair"}
        assert repairer.status().transfers == []
        nursery.cancel_scope.cancel()


async def test_the_download_limit_caps_what_all_downloads_receive(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    digest = random_file(src, 4 << 20, seed=8)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, FAST)
        uploader = await swarm.start()
        limit = 1 << 20
        downloader = await swarm.start(download_limit=limit)
        file_id = await uploader.put(src, disperse=False)
        started = trio.current_time()
        result = await downloader.get(file_id, tmp_path / "out.bin")
        elapsed = trio.current_time() - started
        assert sha256_file(tmp_path / "out.bin") == digest
        # The bucket starts full with one chunk's worth (the burst), then refills at the limit.
        burst = max(int(limit * UPLOAD_BURST_SECONDS), downloader.config.chunk_size)
        assert elapsed >= (result.size - burst) / limit * 0.95
        assert downloader._download_limiter is not None
        assert downloader._download_limiter.granted_bytes >= result.size
        nursery.cancel_scope.cancel()


def test_a_bad_download_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="download_limit"):
        NodeConfig(download_limit=0)


async def test_a_task_started_inside_cancellable_gets_its_own_scope(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        node = await Swarm(nursery, tmp_path, FAST).start()
        started = trio.Event()
        outcome: list[str] = []

        async def background() -> None:
            # Inherits the context variable of the task that started it, not its scope.
            try:
                with node.tracked_transfer("upload", None, "x"):
                    started.set()
                    await trio.sleep_forever()
            except TransferCancelledError:
                outcome.append("cancelled")

        with trio.move_on_after(10):  # a cancel that misses its scope: the task sleeps on
            async with trio.open_nursery() as inner:
                with node.cancellable():
                    inner.start_soon(background)
                await started.wait()
                (transfer,) = node.status().transfers
                node.cancel_transfer(transfer.id)
        assert outcome == ["cancelled"]
        nursery.cancel_scope.cancel()
