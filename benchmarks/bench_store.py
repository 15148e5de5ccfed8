"""Benchmark of the local store: put and reassemble of a large random file.

Definitions (see /work/shared/MEASURING.md, bench_store.py): a random file is written to a temp
directory first (not timed). ``put_MBps`` = size / wall time of ``ChunkStore.put_file`` (read,
hash, code, write, fsync, index). ``get_MBps`` = size / wall time of ``ChunkStore.reassemble``
into a new file, every chunk verified. The output is compared with the input by streaming
SHA-256. ``peak_rss_MiB`` = ``ru_maxrss`` of this process after both. MB = 10^6 bytes. CPU seconds
(user + system, all threads) are printed too: on a shared machine they show what the work costs
when the wall time does not.

Usage: ``python benchmarks/bench_store.py [--size-mib 1024] [--chunk-size-kib 1024] [--k 4]
[--m 2] [--dir DIR]``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy
import trio

from p2pstore.store import ChunkStore

_WRITE_BLOCK = 8 * 1024 * 1024


def _make_input(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(_WRITE_BLOCK, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def _cpu() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_WRITE_BLOCK):
            h.update(block)
    return h.hexdigest()


async def _run(args: argparse.Namespace, work: Path) -> dict[str, float | int | bool]:
    size = args.size_mib * 1024 * 1024
    src = work / "input.bin"
    _make_input(src, size)
    with ChunkStore.open(work / "store") as store:
        c0 = _cpu()
        t0 = time.perf_counter()
        manifest = await store.put_file(
            src, chunk_size=args.chunk_size_kib * 1024, k=args.k, m=args.m
        )
        put_s = time.perf_counter() - t0
        c1 = _cpu()
        out = work / "output.bin"
        t0 = time.perf_counter()
        await store.reassemble(manifest, out)
        get_s = time.perf_counter() - t0
        c2 = _cpu()
        stored = store.stored_bytes
    identical = _sha256_file(src) == _sha256_file(out)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "size_bytes": size,
        "put_s": put_s,
        "get_s": get_s,
        "put_MBps": size / put_s / 1e6,
        "get_MBps": size / get_s / 1e6,
        "peak_rss_MiB": rss_mib,
        "put_cpu_s": c1 - c0,
        "get_cpu_s": c2 - c1,
        "stored_bytes": stored,
        "identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--chunk-size-kib", type=int, default=1024)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--m", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files")
    parser.add_argument(
        "--smoke", action="store_true", help="a seconds-long run on a 4 MiB file, to check it works"
    )
    args = parser.parse_args()
    if args.smoke:
        args.size_mib, args.chunk_size_kib = 4, 256

    work = Path(tempfile.mkdtemp(prefix="bench_store-", dir=args.dir))
    try:
        result = trio.run(_run, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"python {platform.python_version()}  trio {trio.__version__}  numpy {numpy.__version__}"
        f"  msgpack {'.'.join(map(str, msgpack.version))}  cpus {os.cpu_count()}"
    )
    print(
        f"file {args.size_mib} MiB, chunk {args.chunk_size_kib} KiB, k={args.k}, m={args.m}"
        f" (machine shared with other jobs: figures are noisy)"
    )
    print(f"{'operation':<12}{'seconds':>10}{'MB/s':>10}{'CPU s':>10}")
    for label, key in (("put", "put"), ("reassemble", "get")):
        print(
            f"{label:<12}{result[key + '_s']:>10.2f}{result[key + '_MBps']:>10.1f}"
            f"{result[key + '_cpu_s']:>10.2f}"
        )
    print(f"peak RSS {result['peak_rss_MiB']:.1f} MiB; output identical: {result['identical']}")
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
    if not result["identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
