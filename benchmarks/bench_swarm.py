"""Benchmark of the parallel multi-peer download: N rate-limited seeders, one fresh downloader.

Definitions (``/work/shared/MEASURING.md``, bench_swarm.py): one process, nodes on 127.0.0.1 with
free ports, bootstrapped from the first seeder. For each N in ``--seeders`` (default 1,2,4,8) a
fresh network of N seeders plus one downloader is started; every seeder holds **every share** of
the file (``put(path, disperse=False)`` of the same random file on each: same bytes and parameters
give the same file ID) and caps its upload at R (``--rate``, default 5 MB/s, 1 MB = 10^6 bytes,
``NodeConfig(upload_limit=R)``). The downloader starts with an empty data directory.

* throughput = file size / wall time of ``Node.get`` from its call to its return (provider
  look-up, manifest, HAVE, transfer, rebuild, write and rename all included);
  ``per_N[N]`` = throughput / (N x R). Target: >= 0.9 for every N.
* ``first_byte_ms`` = median over the runs of ``GetResult.first_chunk_seconds`` (from the call of
  ``get`` to the first verified chunk). Target: < 100 ms.
* ``unlimited_MBps``: 4 seeders (``--unlimited-seeders``) with no upload limit, on loopback.

Nothing is tuned: nodes run with the default ``NodeConfig`` except host, free ports and the upload
limit (``--request-timeout`` can shorten the DHT's request deadline, off by default). Each output
file is checked byte for byte (SHA-256) against the source, outside the timed region.

Usage: ``python benchmarks/bench_swarm.py [--size 64MiB] [--rate 5] [--seeders 1,2,4,8]
[--repeat 1] [--unlimited-seeders 4]``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import trio
from _swarm_util import SwarmRun, file_sha256, parse_size, run_swarm, write_random_file

MB = 1_000_000
PEER_PACKAGES = ("trio", "cryptography", "msgpack", "reedsolo", "numpy", "libtorrent")


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in PEER_PACKAGES:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    with contextlib.suppress(PackageNotFoundError):
        parts.append(f"p2pstore {version('p2pstore')}")
    return ", ".join(parts)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=64 * 1024 * 1024,
        help="file size: bytes or with a unit (64MiB, 1GiB, 10MB); default 64MiB",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="upload limit R of each seeder, MB/s (10^6 B/s); default 5",
    )
    parser.add_argument(
        "--seeders", default="1,2,4,8", help="comma-separated seeder counts N; default 1,2,4,8"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per N; default 1")
    parser.add_argument(
        "--unlimited-seeders",
        type=int,
        default=4,
        help="seeders of the unlimited run (0 skips it); default 4",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        help="DHT request deadline in s (default: the DhtConfig default)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where data directories go (default: a temporary directory)",
    )
    args = parser.parse_args(argv)
    args.seeder_counts = [int(x) for x in args.seeders.split(",") if x.strip()]
    if not args.seeder_counts or min(args.seeder_counts) < 1:
        parser.error("--seeders needs positive integers")
    if args.repeat < 1 or args.rate <= 0 or args.size < 1:
        parser.error("--repeat, --rate and --size must be positive")
    return args


def _row(label: str, run: SwarmRun, size: int, rate: float | None) -> str:
    mbps = size / run.wall / MB
    ratio = f"{mbps * MB / (run.seeders * rate):6.3f}" if rate else "     -"
    first = f"{run.first_chunk * 1000:8.1f}" if run.first_chunk is not None else "       -"
    per_seeder = " ".join(f"{b / MB:5.1f}" for b in run.bytes_per_seeder)
    return (
        f"{label:>9} {run.seeders:>2} {run.wall:7.3f} {mbps:8.2f} {ratio} {first} "
        f"{run.providers_found:>5} {run.setup_seconds:6.2f}  [{per_seeder}]"
    )


async def _main(args: argparse.Namespace) -> dict[str, object]:
    size: int = args.size
    rate = args.rate * MB
    with tempfile.TemporaryDirectory(prefix="bench_swarm_", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "swarm.bin"
        write_random_file(src, size)
        digest = file_sha256(src)
        print(f"file {size} bytes ({size / 2**20:.1f} MiB), R = {args.rate:g} MB/s per seeder")
        print(f"versions: {_versions()}")
        print(
            f"{'run':>9} {'N':>2} {'wall s':>7} {'MB/s':>8} {'ratio':>6} {'1st ms':>8} "
            f"{'found':>5} {'setup':>6}  [MB from each seeder]"
        )
        per_n: dict[int, list[SwarmRun]] = {}
        firsts: list[float] = []
        run_no = 0
        for _ in range(args.repeat):
            for n in args.seeder_counts:
                run_no += 1
                run = await run_swarm(
                    tmp / f"run{run_no}",
                    src,
                    digest,
                    n,
                    rate,
                    dht_request_timeout=args.request_timeout,
                )
                per_n.setdefault(n, []).append(run)
                if run.first_chunk is not None:
                    firsts.append(run.first_chunk)
                print(_row("limited", run, size, rate), flush=True)
        unlimited: list[SwarmRun] = []
        if args.unlimited_seeders > 0:
            for _ in range(args.repeat):
                run_no += 1
                run = await run_swarm(
                    tmp / f"run{run_no}",
                    src,
                    digest,
                    args.unlimited_seeders,
                    None,
                    dht_request_timeout=args.request_timeout,
                )
                unlimited.append(run)
                print(_row("unlimited", run, size, None), flush=True)

    def median_wall(runs: list[SwarmRun]) -> float:
        return statistics.median(r.wall for r in runs)

    result: dict[str, object] = {
        "per_N": {str(n): round(size / median_wall(rs) / (n * rate), 4) for n, rs in per_n.items()},
        "first_byte_ms": round(statistics.median(firsts) * 1000, 2) if firsts else None,
        "unlimited_MBps": (round(size / median_wall(unlimited) / MB, 2) if unlimited else None),
        "MBps_per_N": {str(n): round(size / median_wall(rs) / MB, 3) for n, rs in per_n.items()},
        "wall_s_per_N": {str(n): round(median_wall(rs), 4) for n, rs in per_n.items()},
        "first_byte_ms_per_N": {
            str(n): round(statistics.median(r.first_chunk for r in rs if r.first_chunk) * 1000, 2)
            for n, rs in per_n.items()
            if any(r.first_chunk for r in rs)
        },
        "phases_ms_per_N": {
            str(n): {k: round(v * 1000, 1) for k, v in rs[0].phases.items()}
            for n, rs in per_n.items()
        },
        "size_bytes": size,
        "rate_MBps": args.rate,
        "repeat": args.repeat,
        "unlimited_seeders": args.unlimited_seeders,
    }
    return result


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.perf_counter()
    result = trio.run(_main, args)
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    sys.exit(main())
