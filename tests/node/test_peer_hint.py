"""Issue 15: ``get`` of a share link uses the link's peer hint beside the DHT, without trusting it:
a node outside the uploader's DHT fetches the file through the hint; a hint to a node that does
not have the file, to this node itself, or to nothing changes nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from p2pstore import FileUnavailableError, control
from p2pstore.control import make_request, parse_request
from p2pstore.peerhint import HintedProviders

from .swarm import Swarm, random_file, sha256_file

MiB = 1 << 20


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_node_outside_the_dht_gets_the_file_through_the_hint(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    digest = random_file(src, 2 * MiB + 3, seed=7)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        stranger = await swarm.start(bootstrap=[])  # knows no one: the DHT finds nobody
        with pytest.raises(FileUnavailableError):
            await stranger.get(file_id, tmp_path / "without-hint.bin")
        result = await stranger.get(file_id, tmp_path / "got.bin", peer_hint=holder.tcp_address)
        assert sha256_file(tmp_path / "got.bin") == digest
        assert set(result.bytes_from_peers) == {f"127.0.0.1:{holder.tcp_address[1]}"}
        nursery.cancel_scope.cancel()


async def test_a_useless_hint_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    digest = random_file(src, 1 * MiB, seed=8)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        other = await swarm.start()  # in the DHT, but without the file
        getter = await swarm.start()
        hints = [other.tcp_address, getter.tcp_address, ("127.0.0.1", _closed_port())]
        for i, hint in enumerate(hints):
            dest = tmp_path / f"got{i}.bin"
            with trio.fail_after(20):
                await getter.get(file_id, dest, peer_hint=hint)
            assert sha256_file(dest) == digest
        stranger = await swarm.start(bootstrap=[])
        with pytest.raises(FileUnavailableError):
            await stranger.get(file_id, tmp_path / "no.bin", peer_hint=other.tcp_address)
        nursery.cancel_scope.cancel()


async def test_the_hinted_provider_is_offered_only_once_it_knows_the_file(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    random_file(src, 1000, seed=9)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        asker = await swarm.start(bootstrap=[])

        async def nobody(key: bytes, *, quick: bool = False) -> list[object]:
            return []

        finder = HintedProviders(nobody, asker.pool, file_id, holder.tcp_address, asker.node_id)  # type: ignore[arg-type]
        (found,) = await finder(file_id)
        assert found.node_id == holder.node_id  # learnt from the handshake
        assert await finder(b"\x00" * 32) == []  # other keys: the DHT's answer alone
        assert await finder(file_id, quick=True) == [found]
        nursery.cancel_scope.cancel()


async def test_a_streamed_read_uses_the_hint_too(tmp_path: Path) -> None:
    """``cat LINK`` / ``get LINK -o -`` (Node.stream_file) reach a holder the DHT cannot find."""
    src = tmp_path / "src.bin"
    random_file(src, 1 * MiB + 5, seed=9)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        stranger = await swarm.start(bootstrap=[])  # knows no one: the DHT finds nobody
        received = bytearray()

        async def send(data: bytes) -> None:
            received.extend(data)

        with trio.fail_after(20):
            result = await stranger.stream_file(file_id, send, peer_hint=holder.tcp_address)
        assert bytes(received) == src.read_bytes()
        assert result.bytes_sent == result.size == src.stat().st_size
        assert not result.local
        nursery.cancel_scope.cancel()


async def test_ls_of_a_directory_uses_the_links_peer_hint(tmp_path: Path) -> None:
    # trial 15 item 4: ``ls LINK`` on an unconnected node said "no provider found".
    (tmp_path / "t").mkdir()
    random_file(tmp_path / "t" / "a.bin", 3000)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        tree = await holder.put_directory(tmp_path / "t", disperse=False)
        stranger = await swarm.start(bootstrap=[])
        args = {"file_id": tree.file_id, "peer": list(holder.tcp_address)}
        parse_request(make_request("ls_dir", args))
        listed = await control.perform(stranger, "ls_dir", args)
        assert [e["path"] for e in listed["entries"]] == ["a.bin"]
        nursery.cancel_scope.cancel()
