"""Migration example: ``P2PClient(dht_bootstrap_nodes=..., download_dir=...).download_file(h)``.

Old: a download-only client that joined the DHT, found the peers of each chunk and wrote the
file into ``download_dir``::

    client = P2PClient(dht_bootstrap_nodes=[("10.0.0.1", 8468)], download_dir="downloads")
    client.download_file(file_hash)

New: there is no separate client. A downloader is a node (``open_node`` with ``bootstrap``), and
``await node.get(file_id, dest)`` downloads from every provider at once: it finds the file's
providers, fetches and verifies the manifest, asks every provider what it holds, schedules
chunks across them (rarest first, slow peers dropped, endgame duplicates), verifies every
chunk, rebuilds missing data chunks from parity and renames the finished file into ``dest``.
Afterwards the node serves the file too. ``dest`` is a path, not a directory: to name the file
after its manifest (as ``p2pstore get`` does), download to a temporary name and rename.

This script starts five nodes on 127.0.0.1, stores a file on one *with dispersal*, stops that
uploader, then starts a client node that downloads the file from the holders, checks its SHA-256
and exits 0.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pstore.control import safe_file_name
from p2pstore.dht import Contact
from p2pstore.node import DownloadProgress, GetResult, Node, open_node

PORTS: dict[str, Any] = {"host": "127.0.0.1", "udp_port": 0, "tcp_port": 0}


async def download_file(node: Node, file_id: bytes, download_dir: Path) -> GetResult:
    """The old ``download_file(file_hash)``: save the file in ``download_dir`` under its name."""
    partial = download_dir / f".{file_id.hex()}.part"
    last: list[DownloadProgress] = []
    result = await node.get(file_id, partial, progress=last.append)
    name = next(f.name for f in node.list_files() if f.file_id == file_id)
    final = download_dir / safe_file_name(name, file_id.hex())
    os.replace(partial, final)  # a real program would refuse to overwrite an existing file
    if last:
        print(f"  progress: {last[-1].bytes_done}/{last[-1].bytes_total} bytes")
    return GetResult(
        result.file_id,
        final,
        result.size,
        result.bytes_from_peers,
        result.seconds,
        result.resumed_chunks,
        result.first_chunk_seconds,
    )


async def main(root: Path) -> None:
    data = os.urandom(700_000)
    source = root / "dataset.bin"
    source.write_bytes(data)

    async with trio.open_nursery() as nursery:

        async def run(
            name: str, boot: list[tuple[str, int]], *, task_status: trio.TaskStatus[Node]
        ) -> None:
            async with open_node(root / name, bootstrap=boot, chunk_size=64 * 1024, **PORTS) as n:
                task_status.started(n)
                await trio.sleep_forever()

        seed: Node = await nursery.start(run, "seed", [])
        boot = [seed.udp_address]
        holders = [await nursery.start(run, f"holder{i}", boot) for i in range(2)]

        # The uploader runs in its own cancel scope so it can go away before the download.
        up_scope = trio.CancelScope()

        async def run_uploader(*, task_status: trio.TaskStatus[Node]) -> None:
            with up_scope:
                await run("uploader", boot, task_status=task_status)

        uploader: Node = await nursery.start(run_uploader)

        # Dispersal pushes shares to peers whose TCP address is known from their node records;
        # wait until the uploader can resolve all three, so the example is deterministic.
        with trio.fail_after(10):
            for peer in (seed, *holders):
                contact = Contact(peer.node_id, *peer.udp_address)
                while await uploader.resolve_peer(contact) is None:  # noqa: ASYNC110
                    await trio.sleep(0.1)

        file_id = await uploader.put(source)  # disperse=True is the default
        report = uploader.last_dispersal
        assert report is not None
        assert not report.failed
        print(f"put {file_id.hex()[:16]}; shares dispersed: {report.shares}")

        # Holders adopt the file once its manifest arrives and announce themselves; that happens
        # just after put() returns, so wait for the announcements before dropping the uploader.
        expected = {seed.node_id, *(h.node_id for h in holders)}
        with trio.fail_after(10):
            while not expected <= {p.node_id for p in await uploader.find_providers(file_id)}:  # noqa: ASYNC110
                await trio.sleep(0.1)
        up_scope.cancel()
        print("uploader stopped")

        # P2PClient(dht_bootstrap_nodes=[...], download_dir=...) -> a node with bootstrap.
        downloads = root / "downloads"
        downloads.mkdir()
        async with open_node(root / "client", bootstrap=boot, **PORTS) as client:
            result = await download_file(client, file_id, downloads)
        print(f"saved {result.path.name}: {result.size} bytes in {result.seconds:.2f} s")
        # (Most of that time is the provider look-up waiting out the stopped uploader's DHT
        # request timeout, 1 s by default: lookups wait for each of the closest contacts.)
        for label, nbytes in sorted(result.bytes_from_peers.items()):
            print(f"  {nbytes:>8} bytes from {label}")
        assert result.path == downloads / "dataset.bin"
        assert hashlib.sha256(result.path.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert len(result.bytes_from_peers) >= 2, "fetched from several holders at once"
        assert [p.name for p in downloads.iterdir()] == ["dataset.bin"]  # no temp files left
        nursery.cancel_scope.cancel()
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
