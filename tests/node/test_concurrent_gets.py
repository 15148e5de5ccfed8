"""Several gets of the same ID into the same directory at once (a crowd of users sharing a
download folder, or bench_flash --netns's downloaders) each end with their own complete file:
the hidden file a get downloads into before it knows file from directory is its own."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from .swarm import Swarm


async def test_concurrent_gets_of_one_id_into_one_directory(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "src.bin").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        getters = [await swarm.start() for _ in range(3)]
        file_id = await holder.put(tmp_path / "src.bin", disperse=False)
        errors: list[BaseException] = []

        async def fetch(i: int) -> None:
            try:
                await getters[i].get_file_or_directory(
                    file_id, lambda name, i=i: out / f"{i}-{name}"
                )
            except Exception as exc:  # collected: the test says which get failed and why
                errors.append(exc)

        async with trio.open_nursery() as gets:
            for i in range(len(getters)):
                gets.start_soon(fetch, i)
        assert errors == []
        assert sorted(p.name for p in out.iterdir()) == [f"{i}-src.bin" for i in range(3)]
        for i in range(3):
            assert (out / f"{i}-src.bin").read_bytes() == data
        nursery.cancel_scope.cancel()
