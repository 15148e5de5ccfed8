"""Benchmark: the daemon's put of many small files, and whether it slows down as the store grows.

Definitions. One library node (no peers) on loopback; each put goes through the control
socket's own operation handler (``p2pstore.control._op_put``: ``Node.put`` with
``disperse=False``, then the file's entry for the reply), which is what ``p2pstore put`` costs
in the daemon minus the socket round trip. Files are 1-4 KiB of random bytes, written before the
clock starts. ``p50_first_ms`` / ``p50_last_ms``: median wall time of the first and the last
``--batch`` puts; ``growth`` = last / first (1.0 = independent of the number of files stored;
issue 13 measured 83 ms / 8 ms = 10x from the first to the tenth thousand). ``stored_ratio`` =
bytes of share chunks stored / bytes of file data (manifests excluded).

Usage: ``python benchmarks/bench_small_puts.py [--files 10000] [--batch 1000] [--dir DIR]``;
``--smoke`` runs 150 files in batches of 50. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio

from p2pstore import control
from p2pstore.node import open_node


async def _run(files: int, batch: int, work: Path) -> dict[str, float | int]:
    src = work / "src"
    src.mkdir()
    rng = random.Random(13)
    paths = []
    data_bytes = 0
    for i in range(files):
        path = src / f"f{i:06d}"
        size = rng.randint(1024, 4096)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
        data_bytes += size
    latencies: list[float] = []
    async with open_node(work / "node", host="127.0.0.1", udp_port=0, tcp_port=0) as node:
        for path in paths:
            started = time.perf_counter()
            await control._op_put(node, {"path": str(path), "disperse": False}, lambda _: None)
            latencies.append(time.perf_counter() - started)
        share_bytes = 0
        for info in node.list_files():
            manifest = await node.store.load_manifest(info.file_id)
            share_bytes += sum(node.store.chunk_size(c) or 0 for c in set(manifest.chunk_ids()))
    rows = []
    for start in range(0, files, batch):
        part = latencies[start : start + batch]
        p90 = sorted(part)[int(len(part) * 0.9)]
        rows.append((start, statistics.median(part) * 1000, p90 * 1000))
    print(f"{'puts':>12} {'p50 ms':>8} {'p90 ms':>8}")
    for start, p50, p90 in rows:
        print(f"{start:>5}-{start + batch - 1:<6} {p50:>8.2f} {p90:>8.2f}")
    first, last = rows[0][1], rows[-1][1]
    return {
        "files": files,
        "batch": batch,
        "p50_first_ms": first,
        "p50_last_ms": last,
        "growth": last / first if first else 0.0,
        "stored_ratio": share_bytes / data_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    parser.add_argument("--smoke", action="store_true", help="150 files in batches of 50")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.batch = 150, 50
    work = Path(tempfile.mkdtemp(prefix="bench-small-puts-", dir=args.dir))
    try:
        result = trio.run(_run, args.files, args.batch, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
