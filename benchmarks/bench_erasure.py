"""Benchmark of p2pstore's Reed-Solomon erasure code against zfec, in the same run.

Definitions (``/work/shared/MEASURING.md``, bench_erasure.py): MB/s is 10^6 bytes of the k data
chunks per second of wall time. Encode = k data chunks in -> m parity chunks out. Decode = m data
chunks erased, rebuilt from the k remaining shares (the other data chunks and the m parity chunks).
Both codecs run on one thread, interleaved repetition by repetition on the same random stripes, so
machine noise hits both alike; each figure is the best of ``--repeat`` runs (the median is printed
too). A multi-threaded figure for ours (column slices of the stripe encoded in a thread pool; numpy
releases the GIL) is printed beside it under its own key.

Usage: ``python benchmarks/bench_erasure.py [--chunk-size BYTES] [--repeat N] [--threads N]``.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from p2pstore.erasure import ReedSolomon

try:
    import zfec
except ImportError:  # pragma: no cover - depends on the environment
    zfec = None

CONFIGS = ((4, 2), (10, 4))
"""(k, m) pairs measured; the first one is the headline (the JSON's unsuffixed keys)."""


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure(
    cases: dict[str, Callable[[], object]], repeat: int, data_bytes: int
) -> dict[str, tuple[float, float]]:
    """Run every case once per round, interleaved; return (best, median) MB/s per case."""
    for fn in cases.values():  # warm-up: tables, caches, page faults of first allocations
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            times[name].append(_time(fn))
    return {
        name: (data_bytes / min(ts) / 1e6, data_bytes / statistics.median(ts) / 1e6)
        for name, ts in times.items()
    }


def _threaded_encode(
    rs: ReedSolomon, data: list[bytes], pool: ThreadPoolExecutor, threads: int
) -> list[bytes]:
    """Encode column slices of the stripe in parallel; the code works column by column."""
    size = len(data[0])
    step = -(-size // threads)
    views = [memoryview(chunk) for chunk in data]
    parts = list(
        pool.map(
            lambda start: rs.encode([v[start : start + step] for v in views]),
            range(0, size, step),
        )
    )
    return [b"".join(part[j] for part in parts) for j in range(rs.m)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunk-size", type=int, default=1 << 20, help="bytes per chunk")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per figure")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--smoke", action="store_true", help="a seconds-long run on 64 KiB chunks, to check it runs"
    )
    args = parser.parse_args()
    if args.smoke:
        args.chunk_size, args.repeat = 64 * 1024, 1
    chunk: int = args.chunk_size
    rng = np.random.default_rng(20240601)

    print(f"python {platform.python_version()}, numpy {np.__version__}", end="")
    if zfec is None:
        print("; zfec is not importable: its figures are omitted")
    else:
        print(f", zfec {zfec.__version__}")
    print(f"chunk {chunk} bytes, best of {args.repeat} runs (median in brackets), MB/s of data")
    print(f"{'(k,m)':>7} {'op':>7} {'ours':>16} {'zfec':>16} {'ratio':>6}")

    result: dict[str, Any] = {"chunk_bytes": chunk}
    pool = ThreadPoolExecutor(max_workers=args.threads)
    for k, m in CONFIGS:
        data = [rng.integers(0, 256, chunk, dtype=np.uint8).tobytes() for _ in range(k)]
        rs = ReedSolomon(k, m)
        parity = rs.encode(data)
        ours_shares = {i: data[i] for i in range(m, k)} | {k + j: parity[j] for j in range(m)}
        assert rs.decode(ours_shares) == data, "our decode is wrong"
        assert _threaded_encode(rs, data, pool, args.threads) == parity
        cases: dict[str, Callable[[], object]] = {
            "encode": partial(rs.encode, data),
            "decode": partial(rs.decode, ours_shares),
            "encode_mt": partial(_threaded_encode, rs, data, pool, args.threads),
        }
        if zfec is not None:
            encoder = zfec.Encoder(k, k + m)
            decoder = zfec.Decoder(k, k + m)
            data_t = tuple(data)
            wanted = tuple(range(k, k + m))
            zparity = encoder.encode(data_t, wanted)
            znums = tuple(range(m, k + m))
            zblocks = tuple(data[m:k]) + tuple(zparity)
            assert decoder.decode(zblocks, znums) == data, "zfec decode is wrong"
            cases["zfec_encode"] = partial(encoder.encode, data_t, wanted)
            cases["zfec_decode"] = partial(decoder.decode, zblocks, znums)
        figures = _measure(cases, args.repeat, k * chunk)
        suffix = "" if (k, m) == CONFIGS[0] else f"_{k}_{m}"
        for op in ("encode", "decode"):
            best, median = figures[op]
            result[f"{op}_MBps{suffix}"] = round(best, 1)
            line = f"{f'({k},{m})':>7} {op:>7} {best:8.0f} [{median:5.0f}]"
            if zfec is not None:
                zbest, zmedian = figures[f"zfec_{op}"]
                result[f"zfec_{op}_MBps{suffix}"] = round(zbest, 1)
                ratio_key = "ratio_vs_zfec" if op == "encode" else "decode_ratio_vs_zfec"
                result[f"{ratio_key}{suffix}"] = round(best / zbest, 3)
                line += f" {zbest:8.0f} [{zmedian:5.0f}] {best / zbest:6.2f}"
            print(line)
        mt_best, mt_median = figures["encode_mt"]
        result[f"encode_MBps_mt{suffix}"] = round(mt_best, 1)
        mt_line = f"{f'({k},{m})':>7} {'enc mt':>7} {mt_best:8.0f} [{mt_median:5.0f}]"
        print(f"{mt_line}  ({args.threads} threads)")
    pool.shutdown()
    result["threads"] = args.threads
    result["numpy_version"] = np.__version__
    if zfec is not None:
        result["zfec_version"] = zfec.__version__
    # Headline keys first, as the issue lists them.
    head = ["encode_MBps", "decode_MBps", "zfec_encode_MBps", "ratio_vs_zfec"]
    ordered = {key: result[key] for key in head if key in result}
    ordered.update({key: value for key, value in result.items() if key not in ordered})
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()
