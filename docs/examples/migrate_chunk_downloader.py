"""Migration example: ``P2PChunkDownloader(dir).download_chunks_parallel({chunk: [(ip, port)]})``.

Old: a thread pool fetching given chunks from given peers into a directory::

    downloader = P2PChunkDownloader("chunks/")
    downloader.download_chunks_parallel({chunk_hash: [("10.0.0.5", 9000), ...], ...})

New: for whole files use ``await node.get(file_id, dest)``, which does all of this (and
scheduling, slow-peer handling and parity) for you. To fetch *specific* chunks from *specific*
peers, use the chunk client directly: a :class:`~p2pstore.wire.client.ConnectionPool` holds one
encrypted, authenticated channel per peer and pipelines requests on it; a nursery fans the work
out with one task per peer. Every chunk is checked against its SHA-256 ID by ``conn.get`` (a
mismatch raises ``CorruptChunkError``), and written atomically (temp file, fsync, rename). A
chunk a peer lacks or fails to deliver is retried on the chunk's next peer.

This script starts two nodes on 127.0.0.1 holding a file, then downloads every chunk of the file
with a bare ConnectionPool (no node) from three addresses per chunk, one of them dead, and
exits 0.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from p2pstore.errors import P2PStoreError
from p2pstore.identity import Identity
from p2pstore.node import open_node
from p2pstore.wire.client import ConnectionPool, PeerAddress

#: Seconds one peer may take to connect and deliver its batch before its chunks move on.
PEER_TIMEOUT = 10.0


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def download_chunks_parallel(
    pool: ConnectionPool,
    wanted: Mapping[bytes, Sequence[PeerAddress]],
    dest_dir: Path,
) -> dict[bytes, Path]:
    """Fetch every chunk of ``wanted`` from one of its peers into ``dest_dir/<hex id>``.

    Round by round: each chunk still missing is assigned to the least loaded of its peers not
    yet tried for it, and each peer gets one task that fetches its whole batch. Returns the
    paths by chunk ID; raises :class:`LookupError` naming the chunks no peer delivered.
    """
    paths: dict[bytes, Path] = {}
    tried: dict[bytes, set[PeerAddress]] = {cid: set() for cid in wanted}

    async def fetch_from(peer: PeerAddress, chunk_ids: list[bytes]) -> None:
        try:
            with trio.fail_after(PEER_TIMEOUT):
                conn = await pool.connect(peer)  # TCP + handshake; node ID checked if given
                for chunk_id, data in await conn.get(chunk_ids):  # verified against the IDs
                    if data is None:
                        continue  # the peer lacks it: next round tries another peer
                    path = dest_dir / chunk_id.hex()
                    await trio.to_thread.run_sync(_write_atomically, path, data)
                    paths[chunk_id] = path
        except (OSError, P2PStoreError, trio.TooSlowError) as exc:
            # Refused, handshake failed, corrupt chunk, timed out...: only this peer's batch
            # is affected, and its chunks go to their next peer.
            print(f"  peer {peer.host}:{peer.port} failed: {exc or type(exc).__name__}")

    while missing := [cid for cid in wanted if cid not in paths]:
        batches: dict[PeerAddress, list[bytes]] = {}
        for cid in missing:
            untried = [p for p in wanted[cid] if p not in tried[cid]]
            if not untried:
                continue
            peer = min(untried, key=lambda p: len(batches.get(p, ())))
            tried[cid].add(peer)
            batches.setdefault(peer, []).append(cid)
        if not batches:
            raise LookupError(f"no peer delivered {len(missing)} chunk(s): {missing[0].hex()}...")
        async with trio.open_nursery() as nursery:  # one task per peer, all at once
            for peer, chunk_ids in batches.items():
                nursery.start_soon(fetch_from, peer, chunk_ids)
    return paths


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(root: Path) -> None:
    source = root / "input.bin"
    source.write_bytes(os.urandom(400_000))
    ports: dict[str, Any] = {"host": "127.0.0.1", "udp_port": 0, "tcp_port": 0}

    async with open_node(root / "a", chunk_size=64 * 1024, **ports) as a:  # noqa: SIM117
        async with open_node(root / "b", bootstrap=[a.udp_address], **ports) as b:
            file_id = await a.put(source, disperse=False)
            await b.get(file_id, root / "copy.bin")  # b now holds k chunks of each stripe
            chunk_ids = (await a.store.load_manifest(file_id)).chunk_ids()

            dead = PeerAddress(None, "127.0.0.1", _closed_port())
            peer_a = PeerAddress(a.node_id, *a.tcp_address)
            peer_b = PeerAddress(b.node_id, *b.tcp_address)
            # The old {chunk: [(ip, port), ...]}; the dead address comes first for some chunks,
            # and b lacks the parity chunks its download did not need: both are retried.
            wanted = {
                cid: [dead, peer_a, peer_b] if i % 2 else [peer_b, dead, peer_a]
                for i, cid in enumerate(chunk_ids)
            }

            out = root / "chunks"
            out.mkdir()
            # A bare pool with a throwaway identity: no node, no DHT, no store needed.
            async with ConnectionPool(Identity.generate()) as pool:
                paths = await download_chunks_parallel(pool, wanted, out)

    assert set(paths) == set(chunk_ids)
    for cid, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).digest() == cid
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    print(f"fetched and verified {len(paths)} chunks into {out.name}/")
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
