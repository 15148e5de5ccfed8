"""A tree's files are fetched from the directory's providers without a DHT look-up each
(falling back to one for a file they do not have), and a tree's put announces its listing at
once and its files in the background, paced (directories.TreeProviders, Node.put announce=)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from p2pstore.node import Node

from .swarm import Swarm


def _count_lookups(node: Node) -> list[bytes]:
    keys: list[bytes] = []
    real = node.dht.find_providers

    async def counted(key: bytes, **kw: Any) -> Any:
        keys.append(key)
        return await real(key, **kw)

    node.dht.find_providers = counted  # type: ignore[method-assign]
    return keys


async def test_files_of_a_tree_come_from_the_directorys_providers(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    for i in range(12):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.txt").write_bytes(f"file {i}\n".encode() * 100)
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "f0.txt").write_bytes(b"file 0\n" * 100)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        a = await swarm.start()
        b = await swarm.start()
        c = await swarm.start()
        put = await a.put_directory(src, disperse=False)
        # One file of the tree is no longer on the directory's provider, only on C.
        only_on_c = await c.put(tmp_path / "solo" / "f0.txt", disperse=False)
        a.unpin(only_on_c)
        await a.gc()
        assert a.file_info(only_on_c) is None
        keys = _count_lookups(b)
        got = await b.get_directory(put.file_id, tmp_path / "copy")
        assert got.files == 12
        assert (tmp_path / "copy" / "d0" / "f0.txt").read_bytes() == b"file 0\n" * 100
        looked_up = set(keys)
        assert put.file_id in looked_up
        assert looked_up - {put.file_id} == {only_on_c}, "only the file A lacks was looked up"
        nursery.cancel_scope.cancel()


async def test_a_put_without_announcing_announces_in_the_background(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        a = await swarm.start()
        await swarm.start()
        announced: list[bytes] = []
        done = trio.Event()
        real = a.dht.announce_provider

        async def recorded(key: bytes, port: int) -> int:
            announced.append(key)
            done.set()
            return await real(key, port)

        a.dht.announce_provider = recorded  # type: ignore[method-assign]
        file_id = await a.put(tmp_path / "f", disperse=False, announce=False)
        assert announced == []
        with trio.fail_after(5):
            await done.wait()
        assert announced == [file_id]
        nursery.cancel_scope.cancel()
