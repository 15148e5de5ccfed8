"""Repair reads from holders that are merely busy (BUSY with a hint) instead of giving them up:
the download's rule, other holders first, then the busy ones once their hint has passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from p2pstore.repair import Verdict
from p2pstore.wire.server import ChunkServer
from p2pstore.wire.uploads import UploadBusy, UploadGate

from .swarm import Swarm
from .test_repair import CONFIG, _healthy_from, _spread


class BusyOncePerPeer(UploadGate):
    """Answers BUSY (hint 0.3 s) to the first refusable chunk request of each peer once armed,
    then serves: a holder whose upload limit had bytes queued for that peer."""

    armed = False
    refusals = 0

    def __init__(self) -> None:
        super().__init__(1e9, 1 << 30)
        self._seen: set[object] = set()

    async def acquire(self, peer: Any, size: int, *, may_refuse: bool = True) -> None:
        await trio.lowlevel.checkpoint()
        if BusyOncePerPeer.armed and may_refuse and peer not in self._seen:
            self._seen.add(peer)
            BusyOncePerPeer.refusals += 1
            raise UploadBusy(0.3)


async def test_repair_waits_out_busy_holders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ChunkServer.__init__

    def with_busy_gate(self: ChunkServer, *args: Any, **kwargs: Any) -> None:
        kwargs["uploads"] = BusyOncePerPeer()
        original(self, *args, **kwargs)

    monkeypatch.setattr(ChunkServer, "__init__", with_busy_gate)
    monkeypatch.setattr(BusyOncePerPeer, "armed", False)
    monkeypatch.setattr(BusyOncePerPeer, "refusals", 0)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, CONFIG)
        file_id, holders = await _spread(swarm, tmp_path, 8)
        spare = next(n for n in swarm.live if n not in holders)
        await _healthy_from(spare, file_id)
        await swarm.stop(holders[0])
        BusyOncePerPeer.armed = True
        report = await holders[1].repair(file_id)
        assert BusyOncePerPeer.refusals > 0  # the holders did answer BUSY
        assert report.before.verdict is Verdict.DEGRADED
        assert report.rebuilt == 5
        assert report.after.verdict is Verdict.HEALTHY
        nursery.cancel_scope.cancel()
