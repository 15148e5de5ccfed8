"""Swarming with real nodes on 127.0.0.1: every downloader serves what it has while it downloads,
a crowd at one rate-limited holder all finish (none fails while the holder lives), and a peer
that connects to us to download becomes one of our sources."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from p2pstore.errors import ProtocolError
from p2pstore.identity import Identity
from p2pstore.node import DownloadProgress, GetResult, Node
from p2pstore.wire import ConnectionPool, PeerAddress

from .swarm import FAST, Swarm, random_file, sha256_file

KiB = 1024
MiB = 1024 * KiB
CHUNK = 128 * KiB


def label(node: Node) -> str:
    return f"127.0.0.1:{node.tcp_address[1]}"


async def test_crowd_at_one_slow_holder_all_finish_and_serve_each_other(tmp_path: Path) -> None:
    """Six downloaders start at once on a holder whose uplink would need 6 x 2 s for all of
    them; each request would wait far past the 2 s chunk timeout in the holder's queue if
    requests queued blindly. Nobody fails, and the downloaders feed each other."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 2 * MiB, seed=21)
    rate = 1_000_000
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start(upload_limit=rate, chunk_size=CHUNK)
        crowd = [await swarm.start(upload_limit=rate) for _ in range(6)]
        file_id = await holder.put(src, disperse=False)
        results: dict[int, GetResult] = {}

        async def fetch(i: int, node: Node) -> None:
            results[i] = await node.get(file_id, tmp_path / f"out{i}.bin")

        with trio.fail_after(60):
            async with trio.open_nursery() as gets:
                for i, node in enumerate(crowd):
                    gets.start_soon(fetch, i, node)
        for i in range(len(crowd)):
            assert sha256_file(tmp_path / f"out{i}.bin") == digest
        from_others = sum(
            nbytes
            for result in results.values()
            for peer, nbytes in result.bytes_from_peers.items()
            if peer != label(holder)
        )
        assert from_others > 0, "the downloaders never served each other"
        uploaded = holder.uploaded_bytes
        assert uploaded is not None
        # Without swarming the holder sends every byte to everyone: 6 x 2 MiB (+ parity).
        assert uploaded < 6 * 2 * MiB
        nursery.cancel_scope.cancel()


async def test_partial_provider_announces_answers_and_serves_during_its_download(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src.bin"
    random_file(src, 3 * MiB, seed=22)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start(upload_limit=600_000, chunk_size=CHUNK)
        downloader = await swarm.start()
        observer = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        some = trio.Event()

        def on_progress(p: DownloadProgress) -> None:
            if p.bytes_done > 0:
                some.set()

        finished = trio.Event()

        async def download() -> None:
            await downloader.get(file_id, tmp_path / "out.bin", progress=on_progress)
            finished.set()

        nursery.start_soon(download)
        with trio.fail_after(20):
            await some.wait()
            # Announced as a provider while the download still runs.
            while downloader.node_id not in {  # noqa: ASYNC110 - polling the DHT
                r.node_id for r in await observer.find_providers(file_id)
            }:
                await trio.sleep(0.1)
            assert not finished.is_set(), "the download ended before the check"
            async with ConnectionPool(Identity.generate(), FAST.wire) as pool:
                address = PeerAddress(downloader.node_id, *downloader.tcp_address)
                conn = await pool.connect(address)
                watch = await conn.watch(file_id)
                assert watch.bitmap is not None
                bits = watch.bitmap
                held = [i for i in range(len(bits) * 8) if bits[i // 8] >> i % 8 & 1]
                assert held, "HAVE answered with nothing although chunks are stored"
                assert len(held) < 36, "the whole file already? the holder is too fast for this"
                # ...and serves one of them right now.
                manifest = await downloader.store.load_manifest(file_id)
                ids = manifest.chunk_ids()
                ((_, data),) = await conn.get([ids[held[0]]])
                assert data is not None
                # New chunks are pushed as they are stored.
                update = await watch.next_update()
                assert update
                assert not set(update) & set(held)
                await watch.aclose()
            await finished.wait()
        nursery.cancel_scope.cancel()


async def test_a_peer_that_watches_us_becomes_one_of_our_sources(tmp_path: Path) -> None:
    """With periodic look-ups off, the first downloader can only learn of the second one from
    the second one's WATCH (it names its port): it dials it back and adds it as a source."""
    src = tmp_path / "src.bin"
    random_file(src, 3 * MiB, seed=23)
    no_refresh = replace(FAST, download=replace(FAST.download, refresh_interval=3600.0))
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, config=no_refresh)
        holder = await swarm.start(upload_limit=500_000, chunk_size=CHUNK)
        first = await swarm.start()
        second = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        seen: set[str] = set()
        started = trio.Event()

        def on_progress(p: DownloadProgress) -> None:
            seen.update(p.peers)
            if p.bytes_done > 0:
                started.set()

        with trio.fail_after(40):
            async with trio.open_nursery() as gets:
                gets.start_soon(
                    lambda: first.get(file_id, tmp_path / "a.bin", progress=on_progress)
                )
                await started.wait()
                # `first` is a provider by now; `second` finds it and WATCHes it.
                while first.node_id not in {  # noqa: ASYNC110 - polling the DHT
                    r.node_id for r in await second.find_providers(file_id)
                }:
                    await trio.sleep(0.1)
                gets.start_soon(second.get, file_id, tmp_path / "b.bin")
        assert label(second) in seen, "the watcher was never dialled back as a source"
        nursery.cancel_scope.cancel()


async def test_a_crowded_holder_that_sends_each_downloader_a_chunk_every_few_seconds_is_kept(
    tmp_path: Path,
) -> None:
    """Six downloaders share a holder whose fair queue gives each of them one 128 KiB chunk
    about every 4 s: longer than the stall cut-off's 3 s floor. Queueing at a live holder is
    not a stall: the holder (the only source of some chunks at first) must not be cut off, and
    every download finishes."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 1 * MiB, seed=24)
    rate = 200_000
    # (With FAST's 2 s chunk timeout the downloaders also time out requests the holder's 4 s
    # queue admitted: slow, but it must still finish. Without the stall rule's exemptions the
    # holder was cut off by every downloader and the downloads failed within seconds.)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start(upload_limit=rate, chunk_size=CHUNK)
        crowd = [await swarm.start(upload_limit=rate) for _ in range(6)]
        file_id = await holder.put(src, disperse=False)

        async def fetch(i: int, node: Node) -> None:
            await node.get(file_id, tmp_path / f"out{i}.bin")

        with trio.fail_after(90):
            async with trio.open_nursery() as gets:
                for i, node in enumerate(crowd):
                    gets.start_soon(fetch, i, node)
        for i in range(len(crowd)):
            assert sha256_file(tmp_path / f"out{i}.bin") == digest
        nursery.cancel_scope.cancel()


async def test_an_idle_first_watcher_does_not_starve_later_downloaders(tmp_path: Path) -> None:
    """A lone seed without an upload limit (the default) does not super-seed: a peer that
    WATCHes first and never downloads (it would be "alone" and offered everything) leaves the
    next downloader a plain seed, not a 4-chunk window opening by one chunk a second (which
    failed this 32-chunk download with the fast test timeouts)."""
    src = tmp_path / "src.bin"
    digest = random_file(src, 2 * MiB, seed=5)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start(chunk_size=64 * KiB)
        downloader = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        async with ConnectionPool(Identity.generate(), FAST.wire) as pool:
            conn = await pool.connect(PeerAddress(holder.node_id, *holder.tcp_address))
            idle = await conn.watch(file_id)
            assert idle.bitmap is not None
            assert set(idle.bitmap) == {0xFF}  # alone: all offered
            t0 = trio.current_time()
            with trio.fail_after(30):
                await downloader.get(file_id, tmp_path / "out.bin")
            took = trio.current_time() - t0
            await idle.aclose()
        assert sha256_file(tmp_path / "out.bin") == digest
        # 32 chunks at one a second would take ~28 s; a plain seed serves them in well under.
        assert took < 15, f"2 MiB over loopback took {took:.1f} s"
        nursery.cancel_scope.cancel()


async def test_a_holder_that_only_answers_busy_ends_the_download_instead_of_hanging_it(
    tmp_path: Path,
) -> None:
    """The only provider serves the manifest but answers BUSY with a 1 ms hint to every data
    chunk. The download neither spins (hints are floored and backed off) nor hangs: once the
    peer has deferred chunks for ``busy_give_up`` seconds without delivering any, it is dropped
    and the download fails as unavailable."""
    from p2pstore.errors import FileUnavailableError
    from p2pstore.store import ChunkStore
    from p2pstore.wire.server import ChunkServer
    from p2pstore.wire.uploads import UploadBusy, UploadGate

    from .swarm import start_rogue_peer

    class AlwaysBusy(UploadGate):
        refusals = 0

        async def acquire(self, peer: bytes, size: int, *, may_refuse: bool = True) -> None:
            await trio.lowlevel.checkpoint()
            if size >= 64 * KiB:  # the manifest's chunks are smaller: served
                self.refusals += 1
                raise UploadBusy(0.0)

    scheduler = replace(FAST.download.scheduler, busy_give_up=3.0)
    config = replace(FAST, download=replace(FAST.download, scheduler=scheduler))
    src = tmp_path / "src.bin"
    random_file(src, 1 * MiB, seed=7)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, config=config)
        await swarm.start()
        getter = await swarm.start()
        store = ChunkStore.open(tmp_path / "liar")
        file_id = (await store.put_file(src, chunk_size=64 * KiB)).file_id
        gate = AlwaysBusy(1e9, 1 << 30)
        server_box: list[ChunkServer] = []

        async def serve(stream: trio.SocketStream) -> None:
            await server_box[0].handle_stream(stream)

        identity = await start_rogue_peer(nursery, swarm, store, [file_id], serve=serve)
        server_box.append(ChunkServer(identity, store, config.wire, uploads=gate))
        t0 = trio.current_time()
        with trio.fail_after(30), pytest.raises(FileUnavailableError):
            await getter.get(file_id, tmp_path / "out.bin")
        took = trio.current_time() - t0
        store.close()
        # 1 ms hints taken at face value made ~470 round trips a second, for ever.
        assert gate.refusals < 100, gate.refusals
        assert took < 20
        nursery.cancel_scope.cancel()


async def test_watchers_from_one_host_cannot_lock_a_downloader_out_of_a_holder(
    tmp_path: Path,
) -> None:
    """64 throw-away identities on one host open 8 watches each of a file (used to take all
    256 watch slots). The per-host cap stops them at 32; the honest downloader, refused a
    watch too (it is on the same loopback host), falls back to HAVE and still downloads."""
    import contextlib

    src = tmp_path / "src.bin"
    digest = random_file(src, 1 * MiB, seed=6)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start(chunk_size=64 * KiB)
        downloader = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(64):
                pool = await stack.enter_async_context(
                    ConnectionPool(Identity.generate(), FAST.wire)
                )
                conn = await pool.connect(PeerAddress(holder.node_id, *holder.tcp_address))
                for _ in range(8):
                    with contextlib.suppress(ProtocolError):
                        stack.push_async_callback((await conn.watch(file_id)).aclose)
            assert holder.holdings.watchers(file_id) == 32
            with trio.fail_after(30):
                await downloader.get(file_id, tmp_path / "out.bin")
        assert sha256_file(tmp_path / "out.bin") == digest
        nursery.cancel_scope.cancel()


async def test_background_provider_look_ups_back_off_once_nothing_new_turns_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download that runs for seconds with one known holder: the background look-ups
    (refresh 0.25 s here) double while they find nobody new, instead of repeating every
    0.25 s for the download's whole life (~20 look-ups in 5 s)."""
    download = replace(FAST.download, refresh_interval=0.25, max_refresh_interval=2.0)
    config = replace(FAST, download=download)
    src = tmp_path / "src.bin"
    digest = random_file(src, 1 * MiB, seed=8)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path, config=config)
        holder = await swarm.start(upload_limit=200_000, chunk_size=CHUNK)
        downloader = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        calls: list[float] = []
        find = downloader._find_file_providers

        async def counting(*args: object, **kwargs: object) -> object:
            calls.append(trio.current_time())
            return await find(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(downloader, "_find_file_providers", counting)
        t0 = trio.current_time()
        with trio.fail_after(60):
            await downloader.get(file_id, tmp_path / "out.bin")
        took = trio.current_time() - t0
        assert sha256_file(tmp_path / "out.bin") == digest
        assert took > 3  # long enough for the difference to show
        # quick + full look-up at the start, then 0.25, 0.5, 1, 2, 2, ... s apart
        assert len(calls) <= 3 + took / 2 + 2, (len(calls), took)
        nursery.cancel_scope.cancel()
