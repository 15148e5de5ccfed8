"""A web page cannot make the node fetch, pin or announce a file through the gateway."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pstore.http import security
from tests.node.swarm import Swarm, random_file

from .helpers import start_face

# What `<img src="http://127.0.0.1:PORT/files/ID">` on another site sends.
IMG_FROM_EVIL = {
    "sec-fetch-site": "cross-site",
    "sec-fetch-dest": "image",
    "sec-fetch-mode": "no-cors",
    "origin": "https://evil.example",
    "referer": "https://evil.example/",
}


def test_foreign_request_rule() -> None:
    host = "127.0.0.1:8080"
    assert not security.foreign_request(None, None, None, host)  # curl, a typed URL
    assert not security.foreign_request(None, None, "none", host)
    assert not security.foreign_request(None, None, "same-origin", host)
    assert not security.foreign_request("http://127.0.0.1:8080", None, None, host)
    assert not security.foreign_request(None, "http://127.0.0.1:8080/", None, host)
    assert security.foreign_request(None, None, "cross-site", host)
    assert security.foreign_request(None, None, "same-site", host)  # another local port
    assert security.foreign_request("null", None, None, host)
    assert security.foreign_request("https://evil.example", None, None, host)
    assert security.foreign_request(None, "https://evil.example/x", None, host)
    assert security.foreign_request(None, "http://127.0.0.1:8080.evil.example/", None, host)


async def test_cross_site_read_fetches_nothing(tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    random_file(src, 512 * 1024, seed=9)
    own = tmp_path / "own.txt"
    own.write_bytes(b"mine")
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        victim = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        own_id = await victim.put(own, disperse=False)
        face = await start_face(nursery, victim)
        for method in ("GET", "HEAD"):
            reply = await face.call(method, f"/files/{file_id.hex()}", headers=IMG_FROM_EVIL)
            assert reply.status == 403, (method, reply.status)
        await trio.sleep(0.5)
        assert not victim.store.has_chunk(file_id)  # not even the manifest was fetched
        assert victim.telemetry.chunks_fetched == 0
        # A file complete locally is readable from anywhere (an <img> of one's own file).
        reply = await face.get(f"/files/{own_id.hex()}", headers=IMG_FROM_EVIL)
        assert reply.status == 200
        assert reply.body == b"mine"
        nursery.cancel_scope.cancel()


async def test_same_origin_read_is_an_unpinned_cache(tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    random_file(src, 512 * 1024, seed=9)
    data = src.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        holder = await swarm.start()
        reader = await swarm.start()
        file_id = await holder.put(src, disperse=False)
        face = await start_face(nursery, reader)
        whole = await face.get(f"/files/{file_id.hex()}")  # curl: no browser headers
        assert whole.status == 200
        assert whole.body == data
        part = await face.get(f"/files/{file_id.hex()}", headers={"range": "bytes=10-99"})
        assert part.status == 206
        assert part.body == data[10:100]
        await trio.sleep(0.5)
        # Neither pinned nor recorded nor announced; the next gc frees every byte of it.
        assert not any(f.file_id == file_id for f in reader.list_files())
        assert file_id not in reader.dht.providing()
        assert reader.store.has_chunk(file_id)
        await trio.to_thread.run_sync(reader.store.gc)
        assert not reader.store.has_chunk(file_id)
        assert reader.store.stored_bytes == 0
        nursery.cancel_scope.cancel()
