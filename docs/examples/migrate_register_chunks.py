"""Migration example: ``peer_manager.register_chunks_in_dht(chunks)``.

Old: one DHT provider record per chunk hash, registered by hand after storing the chunks::

    chunk_hashes = store_file_chunks(path)
    node.peer_manager.register_chunks_in_dht(chunk_hashes)

New: ``await node.put(path)`` stores the chunks and announces **one** provider record, for the
file ID. Downloaders find the file's providers and ask each one which chunks it holds (HAVE),
so per-chunk records are not needed, and a file of thousands of chunks costs one DHT record
instead of thousands. Callers that still want chunk-level records announce the chunk IDs
themselves with ``await node.announce(chunk_id)``; they are then found with
``find_providers(chunk_id)`` and republished like any other record.

This script starts three nodes on 127.0.0.1, stores a file on one without dispersal, checks that
the file ID has a provider and the chunk IDs have none, announces the chunk IDs, finds the
uploader as their provider from another node and exits 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pstore.node import open_node


async def main(root: Path) -> None:
    source = root / "input.bin"
    source.write_bytes(os.urandom(300_000))
    ports: dict[str, Any] = {"host": "127.0.0.1", "udp_port": 0, "tcp_port": 0}

    async with open_node(root / "seed", **ports) as seed:
        boot = [seed.udp_address]
        async with (
            open_node(root / "up", bootstrap=boot, chunk_size=64 * 1024, **ports) as uploader,
            open_node(root / "other", bootstrap=boot, **ports) as other,
        ):
            # put = store chunks + parity + manifest, then announce the file ID (one record).
            file_id = await uploader.put(source, disperse=False)
            manifest = await uploader.store.load_manifest(file_id)
            chunk_ids = manifest.chunk_ids()  # data and parity chunks, manifest order
            print(
                f"file {file_id.hex()[:16]}: {len(chunk_ids)} chunks"
                f" in {len(manifest.stripes)} stripes"
            )

            providers = await other.find_providers(file_id)
            assert [p.node_id for p in providers] == [uploader.node_id]
            assert await other.find_providers(chunk_ids[0]) == []  # no per-chunk records

            # The equivalent of register_chunks_in_dht(chunks): one announcement per chunk,
            # concurrently (the node runs at most ANNOUNCE_CONCURRENCY at once).
            acked: dict[bytes, int] = {}

            async def announce(chunk_id: bytes) -> None:
                acked[chunk_id] = await uploader.announce(chunk_id)

            async with trio.open_nursery() as nursery:
                for chunk_id in dict.fromkeys(chunk_ids):
                    nursery.start_soon(announce, chunk_id)
            print(f"announced {len(acked)} chunk IDs, each stored on {min(acked.values())}+ nodes")

            for chunk_id in chunk_ids:
                found = await other.find_providers(chunk_id)
                assert [(p.node_id, p.host, p.tcp_port) for p in found] == [
                    (uploader.node_id, "127.0.0.1", uploader.tcp_address[1])
                ], found
            print("every chunk ID resolves to the uploader's TCP address")
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
