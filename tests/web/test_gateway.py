"""The gateway: whole, ranged and streamed reads equal the file; nothing unverified leaks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from p2pstore.http import HttpSettings
from p2pstore.http.gateway import RangeNotSatisfiable, content_disposition, parse_range
from tests.node.swarm import Swarm, random_file, start_rogue_peer
from tests.node.test_node import _Lying, _replica

from .helpers import start_face

MiB = 1 << 20


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-1000", 100) == (0, 100)
    assert parse_range("bytes=50-5000", 100) == (50, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None  # multiple ranges: whole file
    assert parse_range("items=0-1", 100) is None
    assert parse_range("bytes=9-2", 100) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 100)
    # Digits that str.isdigit() accepts but int() does not ("²" arrives as latin-1 0xB2):
    # malformed, so ignored, never an exception.
    for bad in ("bytes=\xb2-", "bytes=0-\xb2", "bytes=-\xb2", "bytes=\u0663-", "bytes=1\xb9-2"):
        assert parse_range(bad, 100) is None, bad
    huge = "9" * 5000  # int() of this raises (the 4300-digit limit)
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={huge}-", 100)
    assert parse_range(f"bytes=-{huge}", 100) == (0, 100)
    assert parse_range(f"bytes=5-{huge}", 100) == (5, 100)
    assert parse_range("bytes=0007-0009", 100) == (7, 10)


def test_content_disposition_escapes_the_name() -> None:
    value = content_disposition('a "b"\\ é.txt')
    assert 'filename="a _b__ _.txt"' in value
    assert "filename*=UTF-8''a%20%22b%22%5C%20%C3%A9.txt" in value


async def test_local_whole_ranged_head_and_conditional(tmp_path: Path) -> None:
    src = tmp_path / "movie.mp4"
    random_file(src, 5 * MiB + 123, seed=1)
    data = src.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        file_id = await node.put(src, disperse=False)
        face = await start_face(nursery, node)
        whole = await face.get(f"/files/{file_id.hex()}")
        assert whole.status == 200
        assert whole.body == data
        h = whole.headers
        assert h["content-length"] == str(len(data))
        assert h["etag"] == f'"{file_id.hex()}"'
        assert "immutable" in h["cache-control"]
        assert h["content-type"] == "video/mp4"
        assert h["content-disposition"].startswith('inline; filename="movie.mp4"')
        saved = await face.call("HEAD", f"/files/{file_id.hex()}?download")
        assert saved.headers["content-disposition"].startswith("attachment;")
        for start, end in [(0, 0), (1, 1), (MiB - 1, 4 * MiB + 1), (4 * MiB, 5 * MiB + 122)]:
            part = await face.get(
                f"/files/{file_id.hex()}", headers={"range": f"bytes={start}-{end}"}
            )
            assert part.status == 206
            assert part.body == data[start : end + 1]
            assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        tail = await face.get(f"/files/{file_id.hex()}", headers={"range": "bytes=-7"})
        assert tail.body == data[-7:]
        bad = await face.get(f"/files/{file_id.hex()}", headers={"range": f"bytes={len(data)}-"})
        assert bad.status == 416
        assert bad.headers["content-range"] == f"bytes */{len(data)}"
        head = await face.call("HEAD", f"/files/{file_id.hex()}")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-length"] == str(len(data))
        cached = await face.get(
            f"/files/{file_id.hex()}", headers={"if-none-match": f'"{file_id.hex()}"'}
        )
        assert cached.status == 304
        assert cached.body == b""
        unknown = await face.get("/files/" + "00" * 32)
        assert unknown.status == 404
        assert unknown.json()["error"]["code"] in (
            "unavailable",
            "not_found",
        )
        malformed = await face.get("/files/xyz")
        assert malformed.status == 400
        nursery.cancel_scope.cancel()


async def test_remote_file_streams_while_it_downloads(tmp_path: Path) -> None:
    """A file held by 4 other nodes, read through a fresh node's gateway: the first bytes arrive
    long before the download could have finished, and the bytes equal the file."""
    src = tmp_path / "big.bin"
    random_file(src, 24 * MiB + 5, seed=2)
    data = src.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        uploader = await swarm.start()
        for _ in range(4):
            await swarm.start()
        file_id = await uploader.put(src, disperse=True)
        await swarm.stop(uploader)
        reader = await swarm.start()
        face = await start_face(nursery, reader, settings=HttpSettings(window_stripes=2))
        chunks: list[bytes] = []
        fetched_at_first_byte: list[int] = []

        def on_data(piece: bytes) -> None:
            if not chunks:
                fetched_at_first_byte.append(reader.telemetry.chunks_fetched)
            chunks.append(piece)

        reply = await face.get(f"/files/{file_id.hex()}", on_data=on_data)
        assert reply.status == 200
        assert reply.complete
        assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()
        # Streaming: when the first byte reached the client, most of the 25 data chunks (7
        # stripes of 4) were not fetched yet: the window is 2 stripes ahead of the reader (the
        # server may have sent on and moved the window before this callback runs: slack of 2).
        assert fetched_at_first_byte[0] <= 4 * 4, fetched_at_first_byte
        assert reader.telemetry.chunks_fetched >= 25
        # A gateway read is an unpinned cache: nothing recorded, pinned or announced.
        assert not any(f.file_id == file_id for f in reader.list_files())
        assert file_id not in reader.dht.providing()
        nursery.cancel_scope.cancel()


async def test_remote_range_fetches_only_its_stripes(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    random_file(src, 16 * MiB, seed=4)
    data = src.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        seeder = await swarm.start()
        file_id = await seeder.put(src, disperse=False)
        reader = await swarm.start()
        face = await start_face(nursery, reader)
        # 1 MiB chunks, k=4: stripe 2 is bytes [8 MiB, 12 MiB).
        lo, hi = 9 * MiB + 10, 10 * MiB + 20
        reply = await face.get(f"/files/{file_id.hex()}", headers={"range": f"bytes={lo}-{hi}"})
        assert reply.status == 206
        assert reply.body == data[lo : hi + 1]
        fetched = reader.telemetry.chunks_fetched
        assert 4 <= fetched <= 6, f"fetched {fetched} chunks for one stripe"
        nursery.cancel_scope.cancel()


async def test_corrupt_provider_never_leaks_a_wrong_byte(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    random_file(src, 6 * MiB + 99, seed=3)
    data = src.read_bytes()
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        seeder = await swarm.start()
        reader = await swarm.start()
        file_id = await seeder.put(src, disperse=False)
        liar = _Lying(await _replica(tmp_path, "liar", src))
        await start_rogue_peer(nursery, swarm, liar, [file_id])
        face = await start_face(nursery, reader)
        reply = await face.get(f"/files/{file_id.hex()}")
        assert reply.status == 200
        assert reply.body == data
        assert liar.served >= 1
        assert reader.telemetry.chunk_verify_failures >= 1
        liar.store.close()
        nursery.cancel_scope.cancel()


async def test_only_liars_means_a_short_body_never_a_wrong_one(tmp_path: Path) -> None:
    """If the only provider lies about every chunk, no data byte is ever sent."""
    src = tmp_path / "src.bin"
    random_file(src, 3 * MiB, seed=5)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        seeder = await swarm.start()
        reader = await swarm.start()
        file_id = await seeder.put(src, disperse=False)
        # The manifest comes from the honest seeder, which then leaves: only the liar remains.
        liar = _Lying(await _replica(tmp_path, "liar", src))
        await start_rogue_peer(nursery, swarm, liar, [file_id])
        manifest = await seeder.store.load_manifest(file_id)
        await reader.store.add_manifest(manifest, pin=False)
        await swarm.stop(seeder)
        face = await start_face(nursery, reader)
        reply = await face.get(f"/files/{file_id.hex()}", time_limit=60)
        assert reply.body == b"" or src.read_bytes().startswith(reply.body)
        assert not (reply.status == 200 and reply.complete)
        liar.store.close()
        nursery.cancel_scope.cancel()


async def test_upload_stores_and_publishes(tmp_path: Path) -> None:
    payload = hashlib.shake_256(b"x").digest(3 * MiB + 7)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        other = await swarm.start()
        face = await start_face(nursery, node)
        reply = await face.call("POST", "/files?name=hello.txt&disperse=0", body=payload)
        assert reply.status == 201, reply.body
        answer = reply.json()
        assert isinstance(answer, dict)
        file_id = bytes.fromhex(answer["file_id"])
        assert answer["size"] == len(payload)
        assert any(f.file_id == file_id and f.name == "hello.txt" for f in node.list_files())
        await other.get(file_id, tmp_path / "out.txt")
        assert (tmp_path / "out.txt").read_bytes() == payload
        assert not list((node.data_dir / "http-uploads").iterdir()), "temp file left behind"
        bad = await face.call("POST", "/files?name=../x", body=b"1")
        assert bad.status == 400
        nursery.cancel_scope.cancel()


async def test_upload_on_a_lone_node_is_stored_not_dispersed(tmp_path: Path) -> None:
    payload = b"alone" * 1000
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()  # no peers: dispersal (the default) cannot place a share
        face = await start_face(nursery, node)
        reply = await face.call("POST", "/files?name=alone.txt", body=payload)
        assert reply.status == 201, reply.body
        answer = reply.json()
        assert isinstance(answer, dict)
        file_id = bytes.fromhex(answer["file_id"])
        assert answer["dispersed"] is False
        assert "not dispersed" in answer["not_dispersed"]
        assert reply.headers["location"] == f"/files/{file_id.hex()}"
        assert any(f.file_id == file_id and f.pinned for f in node.list_files())
        assert (await face.get(f"/files/{file_id.hex()}")).body == payload
        kept = await face.call("POST", "/files?name=kept.txt&disperse=0", body=b"k")
        assert kept.status == 201
        assert kept.json() == {**kept.json(), "dispersed": False, "not_dispersed": None}
        assert not list((node.data_dir / "http-uploads").iterdir()), "temp file left behind"
        nursery.cancel_scope.cancel()


async def test_empty_file_and_reading_does_not_change_pins(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    held = tmp_path / "held.bin"
    random_file(held, MiB, seed=6)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        face = await start_face(nursery, node)
        empty_id = await node.put(empty, disperse=False)
        reply = await face.get(f"/files/{empty_id.hex()}")
        assert reply.status == 200
        assert reply.body == b""
        assert reply.headers["content-length"] == "0"
        assert (
            await face.get(f"/files/{empty_id.hex()}", headers={"range": "bytes=0-"})
        ).status == 416
        held_id = await node.put(held, disperse=False)
        node.unpin(held_id)
        assert (await face.get(f"/files/{held_id.hex()}")).body == held.read_bytes()
        assert not next(f for f in node.list_files() if f.file_id == held_id).pinned
        nursery.cancel_scope.cancel()
