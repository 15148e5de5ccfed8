"""Migration example: ``peer_manager.publish_file_metadata(meta)``.

Old: a metadata dict stored as a DHT value under the file hash, trusted as received::

    meta = {"name": "report.pdf", "size": 2_400_000, "chunks": [h1, h2, ...]}
    node.peer_manager.publish_file_metadata(meta)
    ...
    meta = node.peer_manager.get_file_metadata(file_hash)   # whatever the DHT returned

New: the metadata *is* the manifest (name, size, chunk size, k, m and every chunk ID), and
``node.put`` publishes it: the manifest's root is stored as a chunk whose SHA-256 is the file
ID, and the file ID is announced in the DHT. Anyone holding the file ID can fetch the root from
any provider and check it against the ID, so metadata cannot be forged or altered. Large
manifests spill into index chunks, fetched and verified the same way.

Small *mutable* data (e.g. "the latest version of my report is file X") goes into the DHT as a
signed value: ``node.dht.put_value(name, value)`` (name <= 64 bytes, value <= 512 bytes, signed
with the node's Ed25519 key, newer sequence numbers replace older) and
``dht.get_value(publisher_public_key, name)``.

This script starts three nodes on 127.0.0.1, publishes a file on one, fetches and verifies its
manifest (only the metadata, not the file) from another, publishes a signed "latest" pointer,
reads it back from the third node and exits 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pstore.manifest import Manifest, ManifestRoot
from p2pstore.node import Node, open_node
from p2pstore.wire.client import PeerAddress


async def fetch_manifest(node: Node, file_id: bytes) -> Manifest:
    """The verified manifest of ``file_id`` from the first provider that has it."""
    for record in await node.find_providers(file_id):
        try:
            with trio.fail_after(10):
                conn = await node.pool.connect(
                    PeerAddress(record.node_id, record.host, record.tcp_port)
                )
                # conn.get checks every chunk against its ID (SHA-256): the root's ID is the
                # file ID, so a root that arrives at all is the right one.
                ((_, root_bytes),) = await conn.get([file_id])
                if root_bytes is None:
                    continue
                root = ManifestRoot.decode(root_bytes)  # schema-checked, canonical encoding
                parts: dict[bytes, bytes] = {}
                while needed := root.needed_chunk_ids(parts):  # index chunks, if any
                    for chunk_id, data in await conn.get(needed):
                        if data is None:
                            raise LookupError("provider lacks an index chunk")
                        parts[chunk_id] = data
                return Manifest.from_parts(root, parts)
        except (OSError, LookupError, trio.TooSlowError) as exc:
            print(f"  {record.host}:{record.tcp_port} failed: {exc!r}; trying the next")
    raise LookupError(f"no provider served the manifest of {file_id.hex()}")


async def main(root: Path) -> None:
    source = root / "report-2024.pdf"
    source.write_bytes(os.urandom(150_000))
    ports: dict[str, Any] = {"host": "127.0.0.1", "udp_port": 0, "tcp_port": 0}

    async with open_node(root / "seed", **ports) as seed:
        boot = [seed.udp_address]
        async with (
            open_node(root / "publisher", bootstrap=boot, chunk_size=64 * 1024, **ports) as pub,
            open_node(root / "reader", bootstrap=boot, **ports) as reader,
        ):
            # publish_file_metadata(meta) -> put: the manifest is built, stored and announced.
            file_id = await pub.put(source, name="report.pdf", disperse=False)

            manifest = await fetch_manifest(reader, file_id)
            assert manifest.file_id == file_id
            assert (manifest.name, manifest.size) == ("report.pdf", 150_000)
            assert (manifest.chunk_size, manifest.k, manifest.m) == (64 * 1024, 4, 2)
            print(
                f"manifest of {file_id.hex()[:16]}: name={manifest.name!r} size={manifest.size}"
                f" chunk_size={manifest.chunk_size} k={manifest.k} m={manifest.m}"
                f" chunks={manifest.chunk_count}"
            )

            # Mutable metadata: a signed pointer to the current version.
            acked = await pub.dht.put_value(b"report/latest", file_id)
            print(f"signed value stored on {acked} node(s)")
            latest = await seed.dht.get_value(pub.identity.public_key, b"report/latest")
            assert latest == file_id
            # Nobody else can publish under the publisher's key: the value key is
            # SHA-256(public key || name) and replies are checked against the signature.
            print("seed read the pointer back: latest report is", latest.hex()[:16])
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
