"""Node.check and Node.repair on real nodes: placement, upload limit, an interrupted repair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2pstore import FileUnavailableError
from p2pstore.node import UPLOAD_BURST_SECONDS, Node
from p2pstore.repair import Verdict, xor_distance
from p2pstore.store import ChunkStore

from .swarm import Swarm, random_file, temp_files
from .test_repair_promise import CONFIG as PROMISE_CONFIG
from .test_repair_promise import network_ready

CONFIG = replace(PROMISE_CONFIG, repair_interval=None)
SIZE = 5 * 4 * 64 * 1024 - 1000  # five stripes, the last one a little short


async def _spread(swarm: Swarm, tmp_path: Path, nodes: int) -> tuple[bytes, list[Node]]:
    """``nodes`` nodes; a file dispersed from the first, which is then stopped. Returns the file
    ID and the six holders."""
    src = tmp_path / "f.bin"
    random_file(src, SIZE, seed=3)
    started = [await swarm.start() for _ in range(nodes)]
    await network_ready(started[0], 6)
    file_id = await started[0].put(src, disperse=True)
    report = started[0].last_dispersal
    assert report is not None
    holders = [n for n in started[1:] if f"127.0.0.1:{n.tcp_address[1]}" in report.holders]
    assert len(holders) == 6
    with trio.fail_after(10):
        while not all(n.store.knows_file(file_id) for n in holders):  # noqa: ASYNC110
            await trio.sleep(0.05)
    await swarm.stop(started[0])
    return file_id, holders


async def _healthy_from(node: Node, file_id: bytes, seconds: float = 15) -> None:
    with trio.fail_after(seconds):
        while (await node.check(file_id)).verdict is not Verdict.HEALTHY:  # noqa: ASYNC110
            await trio.sleep(0.2)


async def _consistent(store: ChunkStore) -> None:
    """Every indexed chunk is there and intact, and no write was left half done (a PUT that
    arrived just before the interruption may still be finishing: give it a moment)."""
    with trio.move_on_after(5):
        while temp_files(store.data_dir / "tmp"):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert temp_files(store.data_dir / "tmp") == []
    assert (await store.verify()).ok


async def test_check_sees_a_lost_holder_and_repair_places_its_shares_anew(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 8)
        spare = next(n for n in swarm.live if n not in holders)
        await _healthy_from(spare, file_id)
        await swarm.stop(holders[0])
        health = await spare.check(file_id)
        assert health.verdict is Verdict.DEGRADED
        assert health.fewest == 5
        assert health.in_state(Verdict.DEGRADED) == list(range(5))
        assert holders[0].node_id not in health.holders
        assert health.unreachable >= 1

        repairer = holders[1]
        report = await repairer.repair(file_id)
        assert report.before.verdict is Verdict.DEGRADED
        assert report.after.verdict is Verdict.HEALTHY
        assert report.rebuilt == 5
        assert sum(report.placed.values()) == 5
        assert report.unplaced == 0
        # k shares fetched per stripe, the repairer's own share read locally
        assert report.bytes_fetched <= 5 * 3 * 64 * 1024
        new_holders = set(report.after.holders) - set(report.before.holders)
        assert len(new_holders) == 1, "one node took the lost holder's place"
        (newcomer,) = [n for n in swarm.live if n.node_id in new_holders]
        assert newcomer.store.knows_file(file_id)
        assert any(f.file_id == file_id and f.pinned for f in newcomer.list_files())
        # the new holder announced itself: every node now finds the file healthy
        await _healthy_from(spare, file_id)
        for node in swarm.live:
            await _consistent(node.store)
        # repairing a healthy file does nothing
        again = await repairer.repair(file_id)
        assert again.rebuilt == 0
        assert again.bytes_fetched == again.bytes_sent == 0
        nursery.cancel_scope.cancel()


async def test_repair_obeys_the_upload_limit_and_resumes_after_an_interruption(
    tmp_path: Path,
) -> None:
    rate = 200_000.0
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 8)
        await swarm.stop(holders[0])
        await swarm.stop(holders[1])
        # the repairer restarts with a slow uplink (as a node configured with upload_limit)
        member = swarm.member(holders[2])
        await swarm.stop(holders[2])
        repairer = await swarm.restart(member, upload_limit=rate)
        assert repairer.uploaded_bytes is not None
        with trio.move_on_after(0.6) as scope:
            await repairer.repair(file_id)
        assert scope.cancelled_caught, "the limited repair should take longer than that"
        for node in swarm.live:
            await _consistent(node.store)
        middle = await repairer.check(file_id)
        assert middle.verdict is Verdict.DEGRADED  # what was placed is placed, the rest is not

        granted = repairer.uploaded_bytes
        start = trio.current_time()
        report = await repairer.repair(file_id)
        elapsed = trio.current_time() - start
        assert report.after.verdict is Verdict.HEALTHY
        assert repairer.uploaded_bytes - granted >= report.bytes_sent > 0
        burst = max(int(rate * UPLOAD_BURST_SECONDS), repairer.config.chunk_size)
        assert elapsed >= (report.bytes_sent - burst) / rate * 0.9
        spare = next(n for n in swarm.live if n is not repairer)
        await _healthy_from(spare, file_id)
        nursery.cancel_scope.cancel()


async def test_check_of_a_file_nobody_has(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        a = await swarm.start()
        await swarm.start()
        with pytest.raises(FileUnavailableError):
            await a.check(bytes(32))
        nursery.cancel_scope.cancel()


async def test_a_lost_file_is_reported_lost_and_repair_leaves_it(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 7)
        for node in holders[:3]:
            await swarm.stop(node)
        health = await holders[3].check(file_id)
        assert health.verdict is Verdict.LOST
        assert health.margin == -1
        report = await holders[3].repair(file_id)
        assert report.rebuilt == 0
        assert report.after.verdict is Verdict.LOST
        nursery.cancel_scope.cancel()


async def test_repair_skips_nodes_whose_quota_refuses_and_places_elsewhere(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 10)
        spares = sorted(
            (n for n in swarm.live if n not in holders),
            key=lambda n: xor_distance(n.node_id, file_id),
        )
        assert len(spares) == 3
        # the two spares closest to the file (tried first) are full: restarted with a quota
        # nothing fits in
        full = set()
        for node in spares[:-1]:
            member = swarm.member(node)
            await swarm.stop(node)
            restarted = await swarm.restart(member, quota_bytes=1)
            full.add(restarted.node_id)
        await swarm.stop(holders[0])
        report = await holders[1].repair(file_id)
        assert report.after.verdict is Verdict.HEALTHY
        assert report.unplaced == 0
        new = set(report.after.holders) - set(report.before.holders)
        assert new == {spares[-1].node_id}, "only the spare with room took shares"
        assert len(report.failed) == 2
        assert all("quota" in reason for reason in report.failed.values())
        nursery.cancel_scope.cancel()


async def test_a_repairer_that_crashes_midway_resumes_at_its_next_check(tmp_path: Path) -> None:
    """The repairing node goes down in the middle of a repair (its repair cancelled and the
    node stopped, as a crash would); restarted with automatic repair on, its next check finds
    what is still missing and repairs it."""
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 8)
        await swarm.stop(holders[0])
        member = swarm.member(holders[1])
        await swarm.stop(holders[1])
        repairer = await swarm.restart(member, upload_limit=200_000.0)
        with trio.move_on_after(0.5) as scope:
            await repairer.repair(file_id)
        assert scope.cancelled_caught
        await swarm.stop(repairer)
        for node in swarm.live:
            await _consistent(node.store)
        observer = next(n for n in swarm.live if n not in holders)
        assert (await observer.check(file_id)).verdict is Verdict.DEGRADED
        restarted = await swarm.restart(member, repair_interval=0.5)
        await _consistent(restarted.store)
        await _healthy_from(observer, file_id, seconds=40)
        nursery.cancel_scope.cancel()


async def test_shares_piled_on_the_uploader_are_spread_before_it_leaves(tmp_path: Path) -> None:
    """The uploader keeps every share, so while it is online a file whose other holders left
    still looks healthy; automatic repair spreads the shares only it has onto other nodes, so
    the uploader's own departure then costs nothing."""
    src = tmp_path / "f.bin"
    random_file(src, SIZE, seed=5)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, replace(CONFIG, repair_interval=0.5))
        nodes = [await swarm.start() for _ in range(9)]
        uploader = nodes[0]
        await network_ready(uploader, 6)
        file_id = await uploader.put(src, disperse=True)
        report = uploader.last_dispersal
        assert report is not None
        holders = [n for n in nodes[1:] if f"127.0.0.1:{n.tcp_address[1]}" in report.holders]
        for node in holders[:3]:
            await swarm.stop(node)
        health = await uploader.check(file_id)
        assert health.verdict is Verdict.HEALTHY  # every share reachable: on the uploader
        with trio.fail_after(30):
            while (await uploader.check(file_id)).fewest_nodes != 6:  # noqa: ASYNC110
                await trio.sleep(0.2)
        await swarm.stop(uploader)
        observer = swarm.live[-1]
        assert (await observer.check(file_id)).verdict is not Verdict.LOST
        await _healthy_from(observer, file_id)
        nursery.cancel_scope.cancel()


async def test_a_stripe_share_placed_meanwhile_elsewhere_is_not_doubled(tmp_path: Path) -> None:
    """Two repairers with different views: the node this repair would give a share of stripe 0
    turns out (on its HAVE) to hold another share of stripe 0 already, so the share goes to the
    next node without one."""
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 9)
        await swarm.stop(holders[0])
        repairer = holders[1]
        found = await repairer._survey(file_id)  # this repair's view, taken first
        manifest = found.manifest
        spares = sorted(
            (n for n in swarm.live if n not in holders),
            key=lambda n: xor_distance(n.node_id, file_id),
        )
        first, second = spares
        ids = manifest.stripes[0]
        present = {j for j in range(6) if repairer.store.has_chunk(ids[j])}
        (kept,) = present  # the repairer's own share of stripe 0
        # meanwhile another repair put that share on the first choice (it knows the file now)
        await first.store.add_manifest(manifest, pin=True)
        await first.store.put_chunk(ids[kept], await repairer.store.get_chunk(ids[kept]))
        await repairer._repair_surveyed(found, [0])
        assert sum(first.store.has_chunks(list(ids))) == 1
        assert sum(second.store.has_chunks(list(ids))) == 1
        nursery.cancel_scope.cancel()
