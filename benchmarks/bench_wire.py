"""Benchmark of the chunk protocol: the encrypted channel against plain TCP, in the same run.

Definitions (``/work/shared/MEASURING.md``, bench_wire.py): server and client in separate processes
on 127.0.0.1. ``--size-mib`` (default 512) MiB of random 1 MiB chunks are stored in a real
``ChunkStore`` first (not timed). ``channel_MBps``: the client fetches every chunk through the
secure channel (handshake, ChaCha20-Poly1305 both ways, the server's store verifies each chunk on
read and the client verifies each chunk's SHA-256), pipelined: ``--workers`` tasks each keep one GET
of ``--batch`` chunks in flight. ``plain_MBps``: the same chunks, read from the same chunk files,
over plain TCP in the same framing (length prefix + msgpack GET/CHUNK) with the same pipelining
and the same buffer handling (the server reads each chunk file straight into its frame in a worker
thread; the client reads the rest of each big frame straight into the frame's buffer; frame
buffers are reused through the same pool as the channel's), no crypto and no hashing: the ceiling.
``floor_MBps``: plain plus exactly the cryptographic work the channel must do per chunk and
nothing else (no handshake, no nonce bookkeeping, one fixed key and nonce): the server's store
verifies each chunk on read into a pooled frame, sealed in place in the reading thread; the client
opens, decodes and hashes each frame in a worker thread beside its reader, with the channel's own
functions. MB/s = 10^6 bytes per second of wall time, from the first request to the last byte
(connect and handshake excluded). Each mode runs ``--repeat`` times, alternating; the best run of
each is the figure (all are printed). ``ratio`` = channel / plain; ``floor_ratio`` = floor /
plain, what this machine leaves for an encrypted channel; ``channel_vs_floor`` = channel / floor.

Usage: ``python benchmarks/bench_wire.py [--size-mib N] [--workers N] [--batch N] [--repeat N]``.
The server half is this script with ``--serve``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import trio

from p2pstore.identity import Identity
from p2pstore.store import ChunkStore, _read_chunk_file_into
from p2pstore.wire import (
    Chunk,
    ChunkServer,
    ConnectionPool,
    Get,
    Message,
    MessageFramer,
    PeerAddress,
    WireConfig,
)
from p2pstore.wire.buffers import SHARED_FRAME_POOL
from p2pstore.wire.channel import DeferredChunk, _open_and_decode, _read_deferred, receive_into
from p2pstore.wire.config import PIPELINE_DEPTH, RECEIVE_SIZE
from p2pstore.wire.framing import HEADER, HEADER_BYTES, OWN_BUFFER_BYTES
from p2pstore.wire.messages import data_message_head
from p2pstore.wire.seal import Opener, Sealer

CHUNK_BYTES = 1024 * 1024
POPULATE_BATCH = 16
"""Chunks per ``put_chunks`` call while filling the store (not timed)."""

FLOOR_KEY = bytes(32)
"""The floor mode's fixed AEAD key (it measures the cost of the cryptography, not a protocol)."""

FLOOR_NONCE = 0
"""The floor mode seals every frame under one nonce: no ordering to keep, same work per byte."""

MODES = ("plain", "floor", "channel")


def _chunk_ids(data_dir: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in (data_dir / "ids.txt").read_text().split()]


# --- server process ------------------------------------------------------------------------------


def _plain_frame(path: Path, head: bytes, size: int) -> bytearray:
    """A CHUNK frame with the chunk file read straight into it, as the channel's server builds
    its frames (with the store's own file reader and frame pool), minus the hash and the seal."""
    frame = SHARED_FRAME_POOL.take(HEADER_BYTES + len(head) + size)
    frame[:HEADER_BYTES] = HEADER.pack(len(frame) - HEADER_BYTES)
    frame[HEADER_BYTES : HEADER_BYTES + len(head)] = head
    with memoryview(frame) as view:
        if not _read_chunk_file_into(path, view[HEADER_BYTES + len(head) :]):
            raise RuntimeError(f"{path} is not {size} bytes long")
    return frame


def _floor_frame(store: ChunkStore, request_id: int, cid: bytes, sealer: Sealer) -> bytearray:
    """A CHUNK frame built by the channel's own code for a served chunk (the store's verified
    read straight into a pooled frame), sealed in place: the channel's work per served chunk,
    minus its nonce bookkeeping."""

    def read(buffer_for: Callable[[int], memoryview]) -> bool:
        store.read_chunk_into(cid, buffer_for)
        return True

    frame = _read_deferred(DeferredChunk(request_id, cid, read), SHARED_FRAME_POOL)
    assert isinstance(frame, bytearray)
    sealer.seal_in_place(FLOOR_NONCE, frame)
    return frame


async def _serve_plain(store: ChunkStore, sealed: bool, task_status: trio.TaskStatus[int]) -> None:
    """GET -> CHUNK over TCP: the same frames as the channel's, each built by one worker thread
    and written as soon as it is ready; with no hashing and no crypto, or (``sealed``: the floor
    mode) verified on read and sealed."""
    sealer = Sealer(FLOOR_KEY)

    async def handle(stream: trio.SocketStream) -> None:
        framer = MessageFramer(max_frame_bytes=WireConfig().max_frame_bytes)
        send_lock = trio.Lock()

        async def answer(request: Get) -> None:
            for cid in request.chunk_ids:
                if sealed:
                    frame = await trio.to_thread.run_sync(
                        _floor_frame, store, request.request_id, cid, sealer
                    )
                else:
                    size = store.chunk_size(cid)
                    assert size is not None
                    head = data_message_head(Chunk, request.request_id, cid, size)
                    frame = await trio.to_thread.run_sync(
                        _plain_frame, store.chunk_path(cid), head, size
                    )
                async with send_lock:
                    await stream.send_all(frame)
                SHARED_FRAME_POOL.give(frame)

        async with trio.open_nursery() as nursery:
            while data := await stream.receive_some(RECEIVE_SIZE):
                for message in framer.feed(data):
                    assert isinstance(message, Get)
                    nursery.start_soon(answer, message)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])


async def serve(data_dir: Path, mode: str) -> None:
    """Serve the store in ``data_dir``; print ``port node_id_hex`` then serve until stdin closes."""
    with ChunkStore.open(data_dir) as store:
        identity = Identity.generate()
        async with trio.open_nursery() as nursery:
            if mode == "channel":
                _, port = await nursery.start(ChunkServer(identity, store, WireConfig()).serve)
            else:
                port = await nursery.start(_serve_plain, store, mode == "floor")
            print(port, identity.node_id.hex(), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # parent closes stdin to stop us
            nursery.cancel_scope.cancel()


# --- client side -----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) this process and the server used between :meth:`start` and
    :meth:`stop`: the timed window only, not either process's start-up. The server's figure comes
    from ``/proc/<pid>/stat`` (NaN where that does not exist)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client = self.server = math.nan

    def _server_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._client0 = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
        self._server0 = self._server_seconds()

    def stop(self) -> None:
        self.client = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - self._client0
        self.server = self._server_seconds() - self._server0


def _batches(ids: list[bytes], batch: int) -> list[list[bytes]]:
    return [ids[i : i + batch] for i in range(0, len(ids), batch)]


async def fetch_channel(
    port: int, node_id: bytes, ids: list[bytes], workers: int, batch: int, meter: CpuMeter
) -> float:
    queue = _batches(ids, batch)
    total = 0
    async with ConnectionPool(Identity.generate(), WireConfig(request_timeout=120)) as pool:
        conn = await pool.connect(PeerAddress(node_id, "127.0.0.1", port))
        meter.start()
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal total
            while queue:
                for _cid, data in await conn.get(queue.pop()):
                    assert data is not None
                    total += len(data)

        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
        meter.stop()
    assert total == len(ids) * CHUNK_BYTES
    return total / elapsed / 1e6


async def fetch_plain(
    port: int, ids: list[bytes], workers: int, batch: int, meter: CpuMeter, sealed: bool
) -> float:
    """Fetch every chunk over TCP with the channel's framing; ``sealed`` (the floor mode) opens
    and hashes each frame as the channel does: in a worker thread, beside the reader."""
    queue = _batches(ids, batch)
    total = 0
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    framer = MessageFramer(max_frame_bytes=WireConfig().max_frame_bytes)
    framer.decoder.pool = SHARED_FRAME_POOL
    waiting: dict[int, tuple[trio.MemorySendChannel[Message], int]] = {}
    next_id = 0
    send_lock = trio.Lock()

    opener = Opener(FLOOR_KEY)
    frames_send, frames_receive = trio.open_memory_channel[bytes | bytearray](PIPELINE_DEPTH)

    def deliver(message: Message) -> None:
        waiting[message.request_id][0].send_nowait(message)

    async def reader() -> None:
        # As the channel's reader: the rest of a big frame straight into its own buffer.
        decoder, codec = framer.decoder, framer.codec
        scratch = memoryview(bytearray(OWN_BUFFER_BYTES))
        async with frames_send:
            while True:
                while (frame := decoder.next_frame()) is not None:
                    if sealed:
                        await frames_send.send(frame)
                        continue
                    message = codec.decode(frame)
                    if isinstance(frame, bytearray):
                        SHARED_FRAME_POOL.give(frame)
                    deliver(message)
                if not await receive_into(stream, decoder, scratch):
                    return

    async def open_sealed() -> None:
        # As the channel's opener: open, decode and hash in a worker thread, one frame at a time.
        async for frame in frames_receive:
            message = await trio.to_thread.run_sync(
                _open_and_decode, opener, framer.codec, FLOOR_NONCE, frame, SHARED_FRAME_POOL
            )
            assert isinstance(message, Chunk)
            assert message.intact
            deliver(message)

    async def worker() -> None:
        nonlocal total, next_id
        while queue:
            request = queue.pop()
            next_id += 1
            rid = next_id
            send, receive = trio.open_memory_channel[Message](math.inf)
            waiting[rid] = (send, len(request))
            async with send_lock:
                await stream.send_all(framer.send(Get(rid, tuple(request))))
            for _ in request:
                message = await receive.receive()
                assert isinstance(message, Chunk)
                total += len(message.data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(open_sealed)
        meter.start()
        start = time.perf_counter()
        async with trio.open_nursery() as workers_nursery:
            for _ in range(workers):
                workers_nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
        meter.stop()
        nursery.cancel_scope.cancel()
    await stream.aclose()
    assert total == len(ids) * CHUNK_BYTES
    return total / elapsed / 1e6


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_mode(
    mode: str, data_dir: Path, ids: list[bytes], args: argparse.Namespace
) -> tuple[float, CpuMeter]:
    """One timed fetch of every chunk: MB/s and both processes' CPU time in the timed window."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(data_dir), "--mode", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    meter = CpuMeter(server.pid)
    try:
        assert server.stdout is not None
        port_text, node_hex = server.stdout.readline().split()
        port = int(port_text)
        if mode == "channel":
            mbps = trio.run(
                fetch_channel, port, bytes.fromhex(node_hex), ids, args.workers, args.batch, meter
            )
        else:
            mbps = trio.run(
                fetch_plain, port, ids, args.workers, args.batch, meter, mode == "floor"
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait()
    return mbps, meter


async def populate(data_dir: Path, n_chunks: int) -> None:
    with ChunkStore.open(data_dir) as store:
        ids: list[bytes] = []
        for start in range(0, n_chunks, POPULATE_BATCH):
            items = []
            for _ in range(min(POPULATE_BATCH, n_chunks - start)):
                data = os.urandom(CHUNK_BYTES)
                items.append((hashlib.sha256(data).digest(), data))
            await store.put_chunks(items)
            ids.extend(cid for cid, _ in items)
    (data_dir / "ids.txt").write_text("\n".join(cid.hex() for cid in ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke", action="store_true", help="a seconds-long run on 8 MiB, to check it works"
    )
    args = parser.parse_args()
    if args.smoke:
        args.size_mib, args.repeat = 8, 1
    if args.serve is not None:
        trio.run(serve, args.serve, args.mode)
        return

    print(
        f"python {platform.python_version()}, trio {version('trio')}, "
        f"cryptography {version('cryptography')}, msgpack {version('msgpack')}, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="bench_wire.") as tmp:
        data_dir = Path(tmp) / "store"
        t0 = time.perf_counter()
        trio.run(populate, data_dir, args.size_mib)
        ids = _chunk_ids(data_dir)
        with ChunkStore.open(data_dir) as store:
            for cid in ids:  # warm the page cache for both modes alike
                store.chunk_path(cid).read_bytes()
        print(f"populated {len(ids)} x 1 MiB chunks in {time.perf_counter() - t0:.1f} s")
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        # CPU per MiB: core-milliseconds each process spent per MiB moved, in the timed window.
        print(f"{'run':10s}{'MB/s':>10s}{'client CPU ms/MiB':>19s}{'server CPU ms/MiB':>19s}")
        for _ in range(args.repeat):
            for mode in MODES:
                mbps, meter = run_mode(mode, data_dir, ids, args)
                results[mode].append(mbps)
                per_mib = 1000 / len(ids)
                print(
                    f"{mode:10s}{mbps:10.1f}{meter.client * per_mib:19.2f}"
                    f"{meter.server * per_mib:19.2f}"
                )
    channel, plain, floor = (max(results[mode]) for mode in ("channel", "plain", "floor"))
    print(f"{'mode':10s}{'best MB/s':>12s}  runs")
    for mode, runs in results.items():
        print(f"{mode:10s}{max(runs):12.1f}  {', '.join(f'{r:.1f}' for r in runs)}")
    print(f"ratio channel/plain: {channel / plain:.3f}")
    print(f"floor/plain (plain + the channel's cryptography, nothing else): {floor / plain:.3f}")
    print(f"channel/floor (the channel against that floor): {channel / floor:.3f}")
    print(
        json.dumps(
            {
                "channel_MBps": round(channel, 1),
                "plain_MBps": round(plain, 1),
                "ratio": round(channel / plain, 3),
                "floor_MBps": round(floor, 1),
                "floor_ratio": round(floor / plain, 3),
                "channel_vs_floor": round(channel / floor, 3),
                "size_MiB": args.size_mib,
                "workers": args.workers,
                "batch": args.batch,
            }
        )
    )


if __name__ == "__main__":
    main()
