"""Benchmark of repair: one holder of a dispersed file lost for good, until the file is whole.

Definitions (``/work/shared/MEASURING.md``, "Repair"): after one holder of a 256 MiB dispersed
file is lost for good, the wall time until ``check`` says healthy again, and bytes moved / bytes
lost.

Setup (not timed): N nodes (``--nodes``, default 8) in one process on 127.0.0.1 with free ports,
bootstrapped from the first, automatic repair off (the benchmark starts the repair itself, as
the closest holder's automatic repair would at its next check); a random file of ``--size``
(default 256 MiB, ``os.urandom``) put with dispersal (k = 4, m = 2, 1 MiB chunks: the defaults)
on the first node, which is then stopped, so the six holders keep one share of every stripe
each; ``check`` from a node holding nothing says healthy.

Timed: the holder closest to the file ID (the one that would repair first) is stopped; then the
closest live holder runs ``Node.repair`` and a node holding nothing runs ``check`` until it says
healthy (every 0.2 s).

* ``healthy_s``: from the loss to the first healthy ``check`` (repair, the new holder's
  announcement and the check itself included). ``repair_s``: the ``repair`` call alone.
* ``bytes_lost``: the bytes of the shares the lost holder held. ``bytes_moved``: bytes the
  repair fetched from other nodes plus bytes it pushed (shares and the manifest sent to the new
  holder). ``ratio`` = moved / lost; the ideal of a Reed-Solomon code (no regenerating code) is
  ``k``: k shares read per share rebuilt, less the repairer's own share, plus the one pushed.
* With ``--upload-limit R``: ``upload_floor_s`` = bytes pushed / R, the least time the
  repairer's own uplink allows (its fetches are served by five holders at R each).
* Baseline in the same run: ``get_s``, a newcomer's ``get`` of the whole file (same network,
  same loopback), and ``repair_vs_get`` = healthy_s / get_s.

Every rebuilt share is verified against its ID by the repairer, and the new holder's store is
scrubbed afterwards (``verify``); the newcomer's copy is checked byte for byte. ``--upload-limit``
caps every node's upload (default unlimited). ``--smoke``: 8 MiB, a few seconds.

Usage: ``python benchmarks/bench_repair.py [--size 256MiB] [--nodes 8] [--upload-limit 0]
[--smoke]``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _swarm_util import file_sha256, package_versions, parse_size, write_random_file

from p2pstore.dht import DhtConfig
from p2pstore.node import Node, NodeConfig, open_node
from p2pstore.repair import FileHealth, Verdict

MB = 1_000_000
MiB = 1 << 20
#: The whole benchmark gives up after this long: it must stop by itself.
DEADLINE = 900.0
PEER_PACKAGES = ("trio", "cryptography", "msgpack", "numpy")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256MiB", help="file size (default 256MiB)")
    parser.add_argument("--nodes", type=int, default=8, help="nodes, uploader included (>= 8)")
    parser.add_argument(
        "--upload-limit", type=float, default=0.0, help="MB/s per node, 0 = unlimited"
    )
    parser.add_argument("--smoke", action="store_true", help="8 MiB, a few seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="where data dirs go")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = "8MiB"
    if args.nodes < 8:
        parser.error("--nodes must be at least 8 (uploader, six holders, one to take shares)")
    return args


class Network:
    """N nodes in one nursery; each stoppable on its own."""

    def __init__(self, nursery: trio.Nursery, root: Path, config: NodeConfig) -> None:
        self.nursery = nursery
        self.root = root
        self.config = config
        self.nodes: list[Node] = []
        self._scopes: dict[int, trio.CancelScope] = {}
        self._stopped: dict[int, trio.Event] = {}

    async def start(self) -> Node:
        index = len(self.nodes)
        scope, stopped = trio.CancelScope(), trio.Event()
        live = self.live()
        bootstrap = [live[0].udp_address] if live else []

        async def run(task_status: trio.TaskStatus[Node]) -> None:
            try:
                with scope:
                    data_dir = self.root / f"n{index}"
                    async with open_node(data_dir, self.config, bootstrap=bootstrap) as node:
                        task_status.started(node)
                        await trio.sleep_forever()
            finally:
                stopped.set()

        node: Node = await self.nursery.start(run)
        self.nodes.append(node)
        self._scopes[id(node)], self._stopped[id(node)] = scope, stopped
        return node

    async def stop(self, node: Node) -> None:
        self._scopes[id(node)].cancel()
        await self._stopped[id(node)].wait()

    def live(self) -> list[Node]:
        return [n for n in self.nodes if not self._stopped[id(n)].is_set()]


async def _until_healthy(node: Node, file_id: bytes) -> FileHealth:
    while True:
        health = await node.check(file_id)
        if health.verdict is Verdict.HEALTHY:
            return health
        await trio.sleep(0.2)


def _bytes_held(health: FileHealth, node_id: bytes, lengths: list[int]) -> int:
    return sum(lengths[p] for p in health.held.get(node_id, ()))


async def _run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    size = parse_size(args.size)
    limit = args.upload_limit * MB if args.upload_limit > 0 else None
    # Every node is on 127.0.0.1, which the DHT's per-IP rate limit would count as one host
    # sending all the nodes' look-ups: give it the room separate hosts would have.
    dht = DhtConfig(rate_limit_per_second=1000.0, rate_limit_burst=2000.0)
    config = NodeConfig(
        host="127.0.0.1",
        udp_port=0,
        tcp_port=0,
        upload_limit=limit,
        repair_interval=None,
        dht=dht,
    )
    src = root / "source.bin"
    write_random_file(src, size)
    digest = file_sha256(src)
    async with trio.open_nursery() as nursery:
        net = Network(nursery, root, config)
        for _ in range(args.nodes):
            await net.start()
        uploader = net.nodes[0]
        # Every node's start-up announcement has landed (not timed: a loaded machine is slow).
        others = args.nodes - 1
        while len(await uploader.dispersal_targets(bytes(32), others)) < others:  # noqa: ASYNC110
            await trio.sleep(1.0)
        t0 = time.perf_counter()
        file_id = await uploader.put(src, disperse=True)
        put_s = time.perf_counter() - t0
        manifest = await uploader.store.load_manifest(file_id)
        lengths = [
            manifest.chunk_length(s, j)
            for s, ids in enumerate(manifest.stripes)
            for j in range(len(ids))
        ]
        report = uploader.last_dispersal
        if report is None or report.failed:
            raise RuntimeError(f"dispersal failed: {report}")
        holders = [n for n in net.nodes[1:] if f"127.0.0.1:{n.tcp_address[1]}" in report.holders]
        while not all(n.store.knows_file(file_id) for n in holders):  # noqa: ASYNC110
            await trio.sleep(0.05)
        await net.stop(uploader)
        observer = next(n for n in net.live() if n not in holders)
        before = await _until_healthy(observer, file_id)

        by_id = {n.node_id: n for n in net.live()}
        lost = by_id[before.holders[0]]
        bytes_lost = _bytes_held(before, lost.node_id, lengths)
        t_loss = time.perf_counter()
        await net.stop(lost)
        repairer = by_id[before.holders[1]]
        t_repair = time.perf_counter()
        repaired = await repairer.repair(file_id)
        repair_s = time.perf_counter() - t_repair
        after = await _until_healthy(observer, file_id)
        healthy_s = time.perf_counter() - t_loss

        new_holders = [by_id[h] for h in set(after.holders) - set(before.holders) if h in by_id]
        for node in new_holders:
            scrub = await node.verify()
            assert scrub.ok, scrub
        newcomer = await net.start()
        t_get = time.perf_counter()
        await newcomer.get(file_id, root / "copy.bin")
        get_s = time.perf_counter() - t_get
        assert file_sha256(root / "copy.bin") == digest, "the newcomer's copy differs"
        nursery.cancel_scope.cancel()

    moved = repaired.bytes_fetched + repaired.bytes_sent
    return {
        "healthy_s": round(healthy_s, 3),
        "repair_s": round(repair_s, 3),
        "ratio": round(moved / bytes_lost, 3) if bytes_lost else None,
        "ideal_ratio": manifest.k,
        "bytes_lost": bytes_lost,
        "bytes_moved": moved,
        "bytes_fetched": repaired.bytes_fetched,
        "bytes_sent": repaired.bytes_sent,
        "shares_rebuilt": repaired.rebuilt,
        "new_holders": len(new_holders),
        "upload_floor_s": round(repaired.bytes_sent / limit, 3) if limit else None,
        "get_s": round(get_s, 3),
        "repair_vs_get": round(healthy_s / get_s, 3),
        "put_s": round(put_s, 3),
        "size_bytes": size,
        "nodes": args.nodes,
        "upload_limit_MBps": args.upload_limit or None,
        "k": manifest.k,
        "m": manifest.m,
        "chunk_size": manifest.chunk_size,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    print(package_versions(PEER_PACKAGES))
    root = Path(tempfile.mkdtemp(prefix="p2pstore-bench-repair-", dir=args.workdir))
    started = time.perf_counter()
    try:
        result = trio.run(_run_with_deadline, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nrepair of one lost holder: {result['size_bytes'] / MiB:.0f} MiB file, "
          f"{result['nodes']} nodes, k={result['k']} m={result['m']}, "
          f"upload limit {result['upload_limit_MBps'] or 'none'}")  # fmt: skip
    rows = [
        ("loss -> check healthy", f"{result['healthy_s']:.2f} s"),
        ("repair call", f"{result['repair_s']:.2f} s"),
        ("bytes lost", f"{result['bytes_lost'] / MiB:.1f} MiB"),
        ("bytes moved", f"{result['bytes_moved'] / MiB:.1f} MiB"),
        ("moved / lost", f"{result['ratio']} (ideal {result['ideal_ratio']})"),
        ("upload floor (sent / R)", f"{result['upload_floor_s'] or 'n/a (no limit)'} s"),
        ("baseline: get of the file", f"{result['get_s']:.2f} s"),
        ("healthy_s / get_s", f"{result['repair_vs_get']}"),
    ]
    for label, value in rows:
        print(f"  {label:<28} {value}")
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    print(json.dumps(result, sort_keys=False))


async def _run_with_deadline(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with trio.fail_after(DEADLINE):
        return await _run(args, root)


if __name__ == "__main__":
    main()
