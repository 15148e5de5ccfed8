"""The manifest race (issue 13 item 2): providers the look-ups find while it runs are asked at
once, and a crowd of false providers in one network costs it one attempt per round.

A :class:`Download` whose ``_manifest_from`` is replaced: false providers never answer (as a
stalling Sybil does until the attempt's deadlines, 10 s by default), the honest one answers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from p2pstore.errors import FileUnavailableError
from p2pstore.transfer.download import Download, DownloadConfig, Provider

FILE_ID = b"F" * 32
MANIFEST: Any = object()  # what _manifest_from returns; the race passes it through untouched
HONEST = Provider(b"H" * 32, "127.100.0.2", 9000)


def _sybils(count: int, subnet: str = "127.9.0") -> list[Provider]:
    return [Provider(bytes([i]) * 32, f"{subnet}.{i + 1}", 9000) for i in range(count)]


class _RaceOnly(Download):
    async def _manifest_from(self, provider: Provider) -> Any:
        self.asked.append(provider)
        if provider == HONEST:
            await trio.sleep(0.01)
            return MANIFEST
        await trio.sleep_forever()

    async def _peer_worker(self, provider: Provider) -> None:
        return  # only the manifest race is under test


def _download(find: Any, config: DownloadConfig, seed: int) -> _RaceOnly:
    download = _RaceOnly(
        FILE_ID,
        Path("unused"),
        store=Any,  # type: ignore[arg-type]
        pool=Any,  # type: ignore[arg-type]
        find_providers=find,
        self_node_id=b"S" * 32,
        config=config,
        rng=random.Random(seed),
    )
    download.asked = []  # type: ignore[attr-defined]
    return download


async def _fetch(download: Download) -> Any:
    async with trio.open_nursery() as nursery:
        await download._discover(quick=True)
        nursery.start_soon(download._discover_rest, nursery)
        manifest = await download._fetch_manifest()
        nursery.cancel_scope.cancel()
    return manifest


async def test_a_provider_found_while_the_race_runs_is_asked_at_once() -> None:
    """The quick look-up names only stalling Sybils; the full one adds the honest holder after
    0.3 s. Before, the race waited for every attempt of its first batch to end (10 s each)."""
    sybils = _sybils(5)

    async def find(key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        if quick:
            return sybils
        await trio.sleep(0.3)
        return [*sybils, HONEST]

    download = _download(find, DownloadConfig(), seed=1)
    with trio.fail_after(3):
        started = trio.current_time()
        assert await _fetch(download) is MANIFEST
    assert trio.current_time() - started < 1.0


async def test_one_network_full_of_false_providers_costs_one_attempt_per_round() -> None:
    """30 Sybils in one /24 and the honest holder elsewhere, one attempt at a time: the honest
    one is the first or second asked, whatever the draw (at random, 2 in 31 would be)."""
    everyone = [*_sybils(30), HONEST]

    async def find(key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        return everyone

    for seed in range(10):
        config = DownloadConfig(manifest_race_width=1, manifest_attempt_timeout=0.05)
        download = _download(find, config, seed)
        with trio.fail_after(3):
            assert await _fetch(download) is MANIFEST
        assert HONEST in download.asked[:2]  # type: ignore[attr-defined]


def test_a_download_out_of_peers_says_why_each_was_dropped() -> None:
    """Issue 13 item 2, 'report each failure's reason': the unreachable-stripes error names
    the peers that left and why."""
    from p2pstore.transfer import DropPeer

    from .helpers import make_sched

    async def find(key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        return []

    download = _download(find, DownloadConfig(), seed=0)
    sched = make_sched([(3, 2)])
    download._sched = sched
    liars = _sybils(4)
    for liar in liars:
        download._providers[liar.node_id] = liar
        sched.add_peer(liar.node_id, range(3), 0.0)
        download._apply(sched.chunk_corrupt(liar.node_id, 0, 0.0))
    download._providers[HONEST.node_id] = HONEST
    download._apply([DropPeer(HONEST.node_id, "timeouts")])
    message = str(download._unavailable_error(sched))
    assert message.startswith("file unavailable: stripe 0 has 0 of the 2 chunks it needs")
    assert (
        "5 peer(s) dropped: corrupt: 4 (127.9.0.1:9000, 127.9.0.2:9000, 127.9.0.3:9000, ...)"
        in (message)
    )
    assert "timeouts: 1 (127.100.0.2:9000)" in message


async def test_a_fresh_look_up_after_every_provider_failed_finds_the_left_out_honest_one() -> None:
    """The DHT returns a random subset of many records: the first look-ups named only false
    providers (which fail at once, as lying ones do); a fresh one, after all failed, names the
    honest holder. Before, the download failed with the holder online."""
    sybils = _sybils(6)
    calls = 0

    class _Failing(_RaceOnly):
        async def _manifest_from(self, provider: Provider) -> Any:
            self.asked.append(provider)
            if provider == HONEST:
                return MANIFEST
            raise FileUnavailableError("wrong bytes", {})

    async def find(key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        nonlocal calls
        calls += 1
        return sybils if calls <= 2 else [sybils[0], HONEST]

    download = _Failing(
        FILE_ID,
        Path("unused"),
        store=Any,  # type: ignore[arg-type]
        pool=Any,  # type: ignore[arg-type]
        find_providers=find,
        self_node_id=b"S" * 32,
        config=DownloadConfig(),
        rng=random.Random(3),
    )
    download.asked = []  # type: ignore[attr-defined]
    with trio.fail_after(5):
        assert await _fetch(download) is MANIFEST
    assert calls == 3
    assert download.asked[-1] == HONEST  # type: ignore[attr-defined]
