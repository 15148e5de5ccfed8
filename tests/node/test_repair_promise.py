"""Issue 16's promise: a file outlives its holders when repair runs between their departures.

10 nodes, a file put with dispersal (k = 4, m = 2), the uploader stopped; then five holders
stopped for good, one at a time, each once repair has made the file healthy again. After the
sixth loss the file is still healthy and a newcomer downloads it byte-identical. The same story
with repair off loses the file, which shows the test can fail.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2pstore import FileUnavailableError
from p2pstore.node import Node
from p2pstore.repair import FileHealth, Verdict

from .swarm import FAST, Swarm, random_file, sha256_file

#: 64 KiB chunks keep every repair quick; 1 MiB + a bit is 5 stripes, the last one short. All
#: nodes share 127.0.0.1, which the DHT's per-IP rate limit would treat as one host sending every
#: node's look-ups (ten nodes checking every second): raise it as ten hosts would have it.
CONFIG = replace(
    FAST,
    chunk_size=64 * 1024,
    k=4,
    m=2,
    repair_interval=1.0,
    dht=replace(FAST.dht, rate_limit_per_second=1000.0, rate_limit_burst=2000.0),
)
SIZE = (1 << 20) + 70_000
NODES = 10
LOSSES_AFTER_UPLOADER = 5


async def _wait_for(node: Node, file_id: bytes, verdict: Verdict, seconds: float) -> FileHealth:
    """Check from ``node`` until the file has ``verdict``; fail after ``seconds``."""
    health = None
    with trio.move_on_after(seconds):
        while True:
            health = await node.check(file_id)
            if health.verdict is verdict:
                return health
            await trio.sleep(0.2)
    raise AssertionError(f"file not {verdict.value} after {seconds} s: {health}")


def _most_shares_of_a_stripe_on_one_node(health: FileHealth) -> int:
    counts = [
        sum(1 for p in positions if start <= p < start + stripe.total)
        for positions in health.held.values()
        for stripe, start in zip(health.stripes, _starts(health), strict=True)
    ]
    return max(counts)


def _starts(health: FileHealth) -> list[int]:
    out, pos = [], 0
    for stripe in health.stripes:
        out.append(pos)
        pos += stripe.total
    return out


async def network_ready(node: Node, peers: int) -> None:
    """Wait until ``node`` can resolve ``peers`` dispersal targets: every node's start-up
    announcement has landed (on a loaded machine that can take a moment)."""
    with trio.fail_after(60):
        while len(await node.dispersal_targets(bytes(32), peers)) < peers:  # noqa: ASYNC110
            await trio.sleep(1.0)


async def _put_and_lose_uploader(swarm: Swarm, tmp_path: Path) -> tuple[bytes, bytes, list[Node]]:
    src = tmp_path / "precious.bin"
    digest = random_file(src, SIZE, seed=16)
    nodes = [await swarm.start() for _ in range(NODES)]
    uploader = nodes[0]
    await network_ready(uploader, CONFIG.k + CONFIG.m)
    file_id = await uploader.put(src, disperse=True)
    report = uploader.last_dispersal
    assert report is not None
    assert not report.failed
    assert len(report.holders) == CONFIG.k + CONFIG.m
    holders = [n for n in nodes[1:] if f"127.0.0.1:{n.tcp_address[1]}" in report.holders]
    with trio.fail_after(10):  # every holder adopts the file once its manifest arrives
        while not all(n.store.knows_file(file_id) for n in holders):  # noqa: ASYNC110
            await trio.sleep(0.05)
    await swarm.stop(uploader)
    return file_id, digest, nodes[1:]


async def test_repair_keeps_a_file_alive_through_six_losses(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, digest, _ = await _put_and_lose_uploader(swarm, tmp_path)
        health = await _wait_for(swarm.live[-1], file_id, Verdict.HEALTHY, 20)
        for loss in range(LOSSES_AFTER_UPLOADER):
            # The closest holder is the one that would repair first: lose it, the hardest case.
            victim = next(n for n in swarm.live if n.node_id == health.holders[0])
            await swarm.stop(victim)
            observer = swarm.live[-1]
            health = await _wait_for(observer, file_id, Verdict.HEALTHY, 30)
            assert all(s.reachable == s.total for s in health.stripes), f"loss {loss + 2}"
            live = {n.node_id for n in swarm.live}
            assert set(health.holders) <= live
            if len(live) >= CONFIG.k + CONFIG.m:  # room for every share on its own node
                assert _most_shares_of_a_stripe_on_one_node(health) == 1
        assert len(swarm.live) == NODES - 1 - LOSSES_AFTER_UPLOADER
        newcomer = await swarm.start("newcomer")
        dest = tmp_path / "copy.bin"
        await newcomer.get(file_id, dest)
        assert sha256_file(dest) == digest
        nursery.cancel_scope.cancel()


async def test_without_repair_the_same_losses_lose_the_file(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, replace(CONFIG, repair_interval=None))
        file_id, _, _ = await _put_and_lose_uploader(swarm, tmp_path)
        health = await _wait_for(swarm.live[-1], file_id, Verdict.HEALTHY, 20)
        for _ in range(LOSSES_AFTER_UPLOADER):
            victim = next(n for n in swarm.live if n.node_id in health.holders)
            await swarm.stop(victim)
            await trio.sleep(0.5)  # as long as repair would have had to notice
            health = await swarm.live[-1].check(file_id)
        assert health.verdict is Verdict.LOST
        newcomer = await swarm.start("newcomer")
        with pytest.raises(FileUnavailableError):
            await newcomer.get(file_id, tmp_path / "copy.bin")
        nursery.cancel_scope.cancel()
