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
import json
import statistics
import tempfile
import time
from pathlib import Path

import trio
from _swarm_util import (
    SwarmRun,
    file_sha256,
    package_versions,
    parse_size,
    run_swarm,
    write_random_file,
)

MB = 1_000_000
#: Phases of a get, in the order they happen (see ``_swarm_util._instrument``).
PHASES = ("discovered", "manifest", "first_chunk", "transferred", "rebuilt", "returned")
PEER_PACKAGES = ("trio", "cryptography", "msgpack", "reedsolo", "numpy", "libtorrent")


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
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run (2 MiB, N = 1 and 2, 1 unlimited seeder), to check it works",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.rate, args.seeders, args.unlimited_seeders = 2 * 1024 * 1024, 20.0, "1,2", 1
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


def _phase_row(label: str, run: SwarmRun) -> str:
    cells = " ".join(
        f"{run.phases[p] * 1000:9.1f}" if p in run.phases else "        -" for p in PHASES
    )
    return f"{label:>9} {run.seeders:>2} {cells}"


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 2) if values else None


async def _main(args: argparse.Namespace) -> dict[str, object]:
    size: int = args.size
    rate = args.rate * MB
    runs: list[tuple[str, SwarmRun]] = []
    with tempfile.TemporaryDirectory(prefix="bench_swarm_", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "swarm.bin"
        write_random_file(src, size)
        digest = file_sha256(src)
        print(f"file {size} bytes ({size / 2**20:.1f} MiB), R = {args.rate:g} MB/s per seeder")
        print(f"versions: {package_versions(PEER_PACKAGES)}")
        print(
            f"{'run':>9} {'N':>2} {'wall s':>7} {'MB/s':>8} {'ratio':>6} {'1st ms':>8} "
            f"{'found':>5} {'setup':>6}  [MB from each seeder]"
        )
        plan: list[tuple[str, int, float | None]] = []
        for _ in range(args.repeat):
            plan.extend(("limited", n, rate) for n in args.seeder_counts)
        if args.unlimited_seeders > 0:
            plan.extend(("unlimited", args.unlimited_seeders, None) for _ in range(args.repeat))
        for run_no, (label, n, limit) in enumerate(plan):
            run = await run_swarm(
                tmp / f"run{run_no}",
                src,
                digest,
                n,
                limit,
                dht_request_timeout=args.request_timeout,
            )
            runs.append((label, run))
            print(_row(label, run, size, limit), flush=True)

    print("\nphases of each get, ms from its call (transferred = all stripes complete):")
    print(f"{'run':>9} {'N':>2} " + " ".join(f"{p:>9}" for p in PHASES))
    for label, run in runs:
        print(_phase_row(label, run))

    per_n: dict[int, list[SwarmRun]] = {}
    for label, run in runs:
        if label == "limited":
            per_n.setdefault(run.seeders, []).append(run)
    unlimited = [run for label, run in runs if label == "unlimited"]

    def median_wall(group: list[SwarmRun]) -> float:
        return statistics.median(r.wall for r in group)

    def median_phases(group: list[SwarmRun]) -> dict[str, float]:
        return {
            p: round(statistics.median(r.phases[p] for r in group) * 1000, 1)
            for p in PHASES
            if all(p in r.phases for r in group)
        }

    return {
        "per_N": {str(n): round(size / median_wall(g) / (n * rate), 4) for n, g in per_n.items()},
        "first_byte_ms": _median_ms([r.first_chunk for _, r in runs if r.first_chunk is not None]),
        "unlimited_MBps": round(size / median_wall(unlimited) / MB, 2) if unlimited else None,
        "MBps_per_N": {str(n): round(size / median_wall(g) / MB, 3) for n, g in per_n.items()},
        "wall_s_per_N": {str(n): round(median_wall(g), 4) for n, g in per_n.items()},
        "first_byte_ms_per_N": {
            str(n): _median_ms([r.first_chunk for r in g if r.first_chunk is not None])
            for n, g in per_n.items()
        },
        "first_byte_ms_unlimited": _median_ms(
            [r.first_chunk for r in unlimited if r.first_chunk is not None]
        ),
        "phases_ms_per_N": {str(n): median_phases(g) for n, g in per_n.items()},
        "phases_ms_unlimited": median_phases(unlimited) if unlimited else None,
        "size_bytes": size,
        "rate_MBps": args.rate,
        "repeat": args.repeat,
        "unlimited_seeders": args.unlimited_seeders,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.perf_counter()
    result = trio.run(_main, args)
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    main()
