"""Benchmark: put and get of a directory tree of many small files between nodes on loopback.

Definitions. ``--nodes`` real nodes in one process on 127.0.0.1 (default settings, so the DHT's
per-address rate limit of 50 requests/s is the one users have); node 0 stores a tree of
``--files`` files of ``--size`` random bytes in 10 subdirectories (``Node.put_directory``,
dispersal as ``--disperse`` says), the last node fetches it (``Node.get_directory``) into an
empty directory and every file is compared. ``put_s`` / ``get_s``: wall time of each;
``files_per_s``: files / get_s. A run that raises counts as a failure (its error is printed);
``failures`` counts them over ``--runs`` runs, each with fresh nodes and a fresh tree.
The tree's files are written before the clock starts.

Usage: ``python benchmarks/bench_tree.py [--files 200] [--size 10000] [--nodes 2] [--runs 1]
[--disperse]``; ``--smoke`` runs 30 files once. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from p2pstore.node import Node, open_node


def _write_tree(root: Path, files: int, size: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    digests = {}
    for i in range(files):
        rel = f"d{i % 10}/f{i:05d}.bin"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        path.write_bytes(data)
        digests[rel] = hashlib.sha256(data).digest()
    return digests


async def _one_run(work: Path, files: int, size: int, nodes: int, disperse: bool) -> dict[str, Any]:
    src = work / "tree"
    digests = _write_tree(src, files, size, seed=len(str(work)))
    async with trio.open_nursery() as nursery:
        started: list[Node] = []
        stops: list[trio.CancelScope] = []

        async def run_node(i: int, task_status: Any) -> None:
            boot = [started[0].udp_address] if started else []
            scope = trio.CancelScope()
            stops.append(scope)
            with scope:
                async with open_node(
                    work / f"n{i}", host="127.0.0.1", udp_port=0, tcp_port=0, bootstrap=boot
                ) as node:
                    task_status.started(node)
                    await trio.sleep_forever()

        for i in range(nodes):
            started.append(await nursery.start(run_node, i))
        await trio.sleep(0.5)  # let the routing tables settle
        a, b = started[0], started[-1]
        t0 = time.perf_counter()
        put = await a.put_directory(src, disperse=disperse)
        put_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = work / "out"
        await b.get_directory(put.file_id, out)
        get_s = time.perf_counter() - t0
        for rel, digest in digests.items():
            if hashlib.sha256((out / rel).read_bytes()).digest() != digest:
                raise AssertionError(f"{rel} differs")
        for scope in stops:
            scope.cancel()
    return {"put_s": put_s, "get_s": get_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--disperse", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    parser.add_argument("--smoke", action="store_true", help="30 files, one run")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.runs = 30, 1
    results: list[dict[str, Any]] = []
    failures = 0
    print(f"{'run':>4} {'put s':>8} {'get s':>8} {'files/s':>8}  outcome")
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="bench-tree-", dir=args.dir))
        try:
            r = trio.run(_one_run, work, args.files, args.size, args.nodes, args.disperse)
        except Exception as exc:  # a failed run is a result of this benchmark
            failures += 1
            print(f"{run:>4} {'-':>8} {'-':>8} {'-':>8}  failed: {type(exc).__name__}: {exc}")
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(r)
        rate = args.files / r["get_s"]
        print(f"{run:>4} {r['put_s']:>8.2f} {r['get_s']:>8.2f} {rate:>8.1f}  ok")

    def median(key: str) -> float | None:
        return round(statistics.median(r[key] for r in results), 3) if results else None

    get_s = median("get_s")
    summary = {
        "files": args.files,
        "size": args.size,
        "nodes": args.nodes,
        "disperse": args.disperse,
        "runs": args.runs,
        "failures": failures,
        "put_s": median("put_s"),
        "get_s": get_s,
        "files_per_s": round(args.files / get_s, 1) if get_s else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
