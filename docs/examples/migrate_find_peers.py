"""Migration example: ``peer_manager.find_peers_with_chunk(chunk_hash)``.

Old: a DHT lookup returning ``[(ip, port), ...]`` of the peers that registered a chunk hash::

    peers = node.peer_manager.find_peers_with_chunk(chunk_hash)
    for ip, port in peers:
        ...

New: ``await node.find_providers(key)`` returns :class:`~p2pstore.dht.ProviderRecord` objects
(``node_id``, ``host``, ``tcp_port``). ``key`` is normally a **file ID** (every holder of a file
announces it); a chunk ID has providers only if some node announced it with
``Node.announce(chunk_id)``. ``host`` is the source IP the announcing node's DHT datagram came
from, never a value the record claims; ``node_id`` is checked by the handshake when you connect
(``PeerAddress(node_id, host, tcp_port)``). A node never lists itself.

This script starts four nodes on 127.0.0.1, stores a file on two of them, looks its providers up
from a third node, connects to each provider with the node ID from its record, asks it which
chunks it holds (HAVE) and exits 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pstore.node import open_node
from p2pstore.transfer.download import bitmap_indices
from p2pstore.wire.client import PeerAddress


async def main(root: Path) -> None:
    source = root / "input.bin"
    source.write_bytes(os.urandom(200_000))
    ports: dict[str, Any] = {"host": "127.0.0.1", "udp_port": 0, "tcp_port": 0}

    async with open_node(root / "seed", **ports) as seed:
        boot = [seed.udp_address]
        async with (
            open_node(root / "a", bootstrap=boot, **ports) as a,
            open_node(root / "b", bootstrap=boot, **ports) as b,
            open_node(root / "finder", bootstrap=boot, **ports) as finder,
        ):
            # Two nodes store the same file independently: same bytes and parameters give the
            # same manifest, hence the same file ID on both.
            file_id = await a.put(source, disperse=False)
            assert await b.put(source, disperse=False) == file_id

            # find_peers_with_chunk(chunk_hash) -> find_providers(file_id)
            records = await finder.find_providers(file_id)
            found = {r.node_id: (r.host, r.tcp_port) for r in records}
            print(f"providers of {file_id.hex()[:16]}:")
            for node_id, (host, port) in found.items():
                print(f"  {node_id.hex()[:16]} at {host}:{port}")
            assert found == {
                a.node_id: ("127.0.0.1", a.tcp_address[1]),
                b.node_id: ("127.0.0.1", b.tcp_address[1]),
            }

            # What the old (ip, port) pairs were used for: connecting. Pass the node ID so the
            # handshake proves the peer is the node that announced itself.
            manifest = await a.store.load_manifest(file_id)
            for record in records:
                address = PeerAddress(record.node_id, record.host, record.tcp_port)
                with trio.fail_after(10):
                    conn = await finder.pool.connect(address)
                    bitmap = await conn.have(file_id)
                assert conn.authenticated_as_expected
                assert bitmap is not None
                held = bitmap_indices(bitmap, manifest.chunk_count)
                print(
                    f"  {record.node_id.hex()[:16]} holds {len(held)}/{manifest.chunk_count} chunks"
                )
                assert len(held) == manifest.chunk_count

            # An unknown key has no providers (an empty list, not an error).
            assert await finder.find_providers(bytes(32)) == []
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
