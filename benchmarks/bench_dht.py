"""Benchmark of the Kademlia DHT against the ``kademlia`` package (bmuller), side by side.

Definitions (``/work/shared/MEASURING.md``, bench_dht.py): for each N (``--sizes``, default
64,256,1024), N nodes are built in one process on 127.0.0.1 with real UDP sockets, each node
joining (PING + lookup of its own ID) through a random node that has already joined, at most
``--join-concurrency`` joins at a time. Each (implementation, N) runs in its own subprocess, so
memory is measured from a clean interpreter and one event loop never disturbs the other.

Workload, the same for both (``--lookups`` times, default 100): a random node publishes a record
under a random key (ours: a provider record with ``announce_provider``, and separately a signed
value with ``put_value``; theirs: ``set``), then another random node looks it up and returns as
soon as it has it (ours: ``lookup_providers(key, limit=1)`` / ``lookup_value(..., first=True)``;
theirs: ``get``).

- ``success_rate``: fraction (0..1) of lookups that returned the record.
- ``msgs_per_lookup`` (table: ``msgs``): median number of datagrams sent by all nodes (requests
  and replies), from the start of the lookup until the looker's traffic is quiet (no datagram from
  or to it for ``QUIET_SECONDS``), so replies to requests the lookup made still count after it
  returned. Before each lookup the whole network is let settle (at most
  ``PRE_SETTLE_MAX_SECONDS``); nothing else runs meanwhile. Every node's send is wrapped: ours
  with a ``transport_wrapper`` counting into one shared counter, theirs by wrapping each
  transport's ``sendto``. Printed beside it: ``@ret``, the count when the lookup returned, and
  ``looker``, only the datagrams sent by or to the looking node in the same window (immune to
  background traffic elsewhere in the network, e.g. the peer's store/ping loops at N=1024).
- ``median_latency_ms``: median wall time of a lookup.

Node lookups (``--node-lookups`` times, default 100): a random node looks up the k closest nodes to
a random ID. ``exact`` = fraction whose result is exactly the k closest live node IDs (brute force
over all nodes but the searcher, in order). Hops = rounds: the first requests are round 1, a
request to a contact first learned from a reply of round r is round r+1, hops = highest round of
any request (ours: ``LookupResult.rounds``; theirs: counted by a ``NodeSpiderCrawl`` subclass that
tags each contact with the round of the reply it was learned from). Percentiles are nearest-rank.

Also: ``mem_per_node_KiB`` = (RSS after the build - RSS before) / N; ``join_s`` = wall time of the
whole build; ``join_median_ms`` = median duration of one node's bootstrap.

Configuration: both sides use k=20, alpha=3 and their default timeouts; ours is ``DhtConfig()``
unchanged. All N nodes share the source address 127.0.0.1, so each node's per-IP request limit
sees the whole simulated network as one host; requests it dropped are printed
(``rate_limited``). ``--rate-limit R`` sets rate and burst to R for a run where they bite (an
operator running many nodes behind one address would do the same).

Usage: ``python benchmarks/bench_dht.py [--sizes 64,256,1024] [--lookups 100]
[--node-lookups 100] [--join-concurrency 16] [--seed 1] [--no-peer]``. The last line of output is
one JSON object for the largest N (keys ``N``, ``success_rate``, ``median_hops``, ``p95_hops``,
``msgs_per_lookup``, ``median_latency_ms`` and the same prefixed ``kademlia_``, plus extras).
Traffic goes to 127.0.0.1 only; every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import trio

from p2pstore.dht import CountingTransport, DhtConfig, DhtService, Transport, UdpTransport
from p2pstore.dht.contact import distance
from p2pstore.dht.messages import Request, Response, decode, method_of
from p2pstore.errors import BootstrapError
from p2pstore.identity import Identity

HOST = "127.0.0.1"
K = 20
ALPHA = 3
QUIET_SECONDS = 0.1
"""The network counts as quiet (all replies in) after this long without a datagram sent."""
POLL_SECONDS = 0.01
"""How often the shared counter is polled while waiting for quiet."""
SETTLE_MAX_SECONDS = 10.0
"""Longest wait for the looker's quiet; longer than either side's request timeout (1 s / 5 s)."""
PRE_SETTLE_MAX_SECONDS = 1.0
"""Longest wait for the whole network's quiet before a lookup (the peer may never be quiet)."""
BUILD_SETTLE_MAX_SECONDS = 60.0
"""Longest wait for quiet after the build (verification PINGs, evictions)."""
SUBPROCESS_TIMEOUT = 1500.0
"""A phase (one implementation, one N) that takes longer than this is killed."""
FD_HEADROOM = 256
"""File descriptors needed beyond one per node (stdio, epoll, imports)."""


# --- shared helpers ----------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            sys.exit(f"need {needed} file descriptors, the hard limit is {hard}")


def _table_fill(ids: Sequence[int], sizes: Sequence[int]) -> float:
    """Contacts in all tables / the most they could hold: for each node, the sum over buckets
    (distance bit lengths) of min(k, live nodes at that distance). 1.0 = every bucket as full
    as the network allows."""
    ideal = 0
    for own in ids:
        per_bucket = Counter((own ^ other).bit_length() for other in ids if other != own)
        ideal += sum(min(K, count) for count in per_bucket.values())
    return sum(sizes) / ideal


def _nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class _Counter:
    """Datagrams sent by every node; by kind only with ``--breakdown`` (decoding costs time)."""

    sent: int = 0
    by_kind: Counter[str] | None = None
    involving: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Datagrams sent by or to each address."""

    def add(self, source: tuple[str, int], destination: tuple[str, int]) -> None:
        self.sent += 1
        self.involving[source] += 1
        self.involving[(str(destination[0]), int(destination[1]))] += 1


@dataclass
class _Samples:
    """Per-lookup samples of one workload."""

    ok: list[bool] = field(default_factory=list)
    msgs: list[int] = field(default_factory=list)
    msgs_at_return: list[int] = field(default_factory=list)
    looker_msgs: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, float]:
        n = len(self.ok)
        out: dict[str, float] = {
            "lookups": n,
            "success_rate": sum(self.ok) / n if n else 0.0,
            "msgs_per_lookup": statistics.median(self.msgs),
            "msgs_at_return": statistics.median(self.msgs_at_return),
            "looker_msgs": statistics.median(self.looker_msgs),
            "p95_msgs": _nearest_rank(self.msgs, 0.95),
            "median_latency_ms": round(statistics.median(self.latency_ms), 2),
            "p95_latency_ms": round(_nearest_rank(self.latency_ms, 0.95), 2),
        }
        if self.hops:
            out["median_hops"] = statistics.median(self.hops)
            out["p95_hops"] = _nearest_rank(self.hops, 0.95)
            out["max_hops"] = max(self.hops)
        return out

    def breakdown(self) -> dict[str, float]:
        """Mean datagrams per lookup of each kind (empty without ``--breakdown``)."""
        n = len(self.ok)
        return {kind: round(count / n, 2) for kind, count in sorted(self.kinds.items())}


async def _measure(
    counter: _Counter,
    settle: Callable[[Callable[[], int], float], Awaitable[None]],
    clock: Callable[[], float],
    looker: tuple[str, int],
    lookup: Callable[[], Awaitable[tuple[bool, int | None]]],
    samples: _Samples,
) -> None:
    """Run one lookup and record success, datagrams, latency and hops.

    Before: the whole network quiet (at most ``PRE_SETTLE_MAX_SECONDS``). After the return: the
    looker's traffic quiet (its in-flight requests answered), at most ``SETTLE_MAX_SECONDS``.
    """
    await settle(lambda: counter.sent, PRE_SETTLE_MAX_SECONDS)
    before = counter.sent
    looker_before = counter.involving[looker]
    kinds_before = Counter(counter.by_kind) if counter.by_kind is not None else None
    start = clock()
    ok, hops = await lookup()
    elapsed = clock() - start
    at_return = counter.sent
    await settle(lambda: counter.involving[looker], SETTLE_MAX_SECONDS)
    samples.looker_msgs.append(counter.involving[looker] - looker_before)
    if kinds_before is not None and counter.by_kind is not None:
        samples.kinds.update(counter.by_kind - kinds_before)
    samples.ok.append(ok)
    samples.msgs.append(counter.sent - before)
    samples.msgs_at_return.append(at_return - before)
    samples.latency_ms.append(elapsed * 1000.0)
    if hops is not None:
        samples.hops.append(hops)


# --- ours (Trio) -------------------------------------------------------------------------------


class _SharedCountingTransport(CountingTransport):
    """Counts this node's datagrams and adds each one to the network-wide counter."""

    def __init__(self, inner: Transport, counter: _Counter) -> None:
        super().__init__(inner)
        self._shared = counter

    async def send(self, data: bytes, address: tuple[str, int]) -> bool:
        self._shared.add(self.local_address, address)
        if self._shared.by_kind is not None:
            message = decode(data)
            if isinstance(message, Request):
                self._shared.by_kind[f"req {method_of(message.body)}"] += 1
            elif isinstance(message, Response):
                self._shared.by_kind[f"rep {message.method}"] += 1
        return await super().send(data, address)


async def _trio_settle(read: Callable[[], int], limit: float) -> None:
    """Wait until ``read()`` has not changed for ``QUIET_SECONDS`` (at most ``limit`` s)."""
    with trio.move_on_after(limit):
        last = read()
        quiet_since = trio.current_time()
        while trio.current_time() - quiet_since < QUIET_SECONDS:
            await trio.sleep(POLL_SECONDS)
            if read() != last:
                last = read()
                quiet_since = trio.current_time()


async def _run_ours(n: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    counter = _Counter(by_kind=Counter() if args.breakdown else None)
    config = DhtConfig()
    if args.rate_limit > 0:
        config = DhtConfig(rate_limit_per_second=args.rate_limit, rate_limit_burst=args.rate_limit)
    identities = [Identity.generate() for _ in range(n)]
    rss_before = _rss_bytes()
    nodes: list[DhtService] = []
    join_ms: list[float] = []
    join_failures = 0
    result: dict[str, Any] = {"impl": "ours", "N": n}

    async with trio.open_nursery() as nursery:
        build_start = time.perf_counter()
        for identity in identities:
            base = await UdpTransport.bind(HOST, 0)
            service = DhtService(identity, _SharedCountingTransport(base, counter), config=config)
            await nursery.start(service.run)
            nodes.append(service)
        joined = [nodes[0]]
        limiter = trio.Semaphore(args.join_concurrency)

        async def join(node: DhtService, via: DhtService) -> None:
            nonlocal join_failures
            try:
                start = time.perf_counter()
                try:
                    await node.bootstrap([via.address])
                except BootstrapError:
                    join_failures += 1
                    return
                join_ms.append((time.perf_counter() - start) * 1000.0)
                joined.append(node)
            finally:
                limiter.release()

        with trio.fail_after(args.build_timeout):
            async with trio.open_nursery() as joins:
                for node in nodes[1:]:
                    await limiter.acquire()
                    joins.start_soon(join, node, rng.choice(joined))
        result["join_s"] = round(time.perf_counter() - build_start, 2)
        await _trio_settle(lambda: counter.sent, BUILD_SETTLE_MAX_SECONDS)
        result["mem_per_node_KiB"] = round((_rss_bytes() - rss_before) / n / 1024, 1)
        result["join_median_ms"] = round(statistics.median(join_ms), 1)
        result["join_failures"] = join_failures
        result["build_msgs"] = counter.sent
        result["table_size_mean"] = round(statistics.mean(len(s.table) for s in nodes), 1)
        result["table_fill"] = round(
            _table_fill(
                [int.from_bytes(s.node_id, "big") for s in nodes], [len(s.table) for s in nodes]
            ),
            3,
        )
        result["build_rate_limited"] = sum(s.stats.dropped["rate_limited"] for s in nodes)

        settle = _trio_settle

        def two(exclude: DhtService | None = None) -> DhtService:
            while True:
                node = rng.choice(nodes)
                if node is not exclude:
                    return node

        # Provider records.
        providers = _Samples()
        for i in range(args.lookups):
            publisher = two()
            key = rng.randbytes(32)
            await publisher.announce_provider(key, 1024 + i)
            looker = two(publisher)

            async def find_provider(
                looker: DhtService = looker, key: bytes = key, publisher: DhtService = publisher
            ) -> tuple[bool, int | None]:
                found = await looker.lookup_providers(key, limit=1)
                ok = any(p.node_id == publisher.node_id for p in found.providers)
                return ok, found.rounds

            await _measure(
                counter, settle, trio.current_time, looker.address, find_provider, providers
            )
        result["providers"] = providers.summary()
        result["providers"]["kinds"] = providers.breakdown()

        # Signed values.
        values = _Samples()
        for _ in range(args.lookups):
            publisher = two()
            name = rng.randbytes(16)
            payload = rng.randbytes(64)
            await publisher.put_value(name, payload)
            looker = two(publisher)

            async def find_value(
                looker: DhtService = looker,
                publisher: DhtService = publisher,
                name: bytes = name,
                payload: bytes = payload,
            ) -> tuple[bool, int | None]:
                found = await looker.lookup_value(publisher.identity.public_key, name, first=True)
                ok = found.value is not None and found.value.value == payload
                return ok, found.rounds

            await _measure(counter, settle, trio.current_time, looker.address, find_value, values)
        result["values"] = values.summary()
        result["values"]["kinds"] = values.breakdown()

        # Node lookups.
        node_lookups = _Samples()
        exact_overlap: list[float] = []
        for _ in range(args.node_lookups):
            looker = two()
            target = rng.randbytes(32)
            truth = sorted(
                (s.node_id for s in nodes if s is not looker), key=lambda i: distance(i, target)
            )[:K]

            async def find_nodes(
                looker: DhtService = looker, target: bytes = target, truth: list[bytes] = truth
            ) -> tuple[bool, int | None]:
                found = await looker.lookup_nodes(target)
                got = [c.node_id for c in found.contacts]
                exact_overlap.append(len(set(got) & set(truth)) / len(truth))
                return got == truth, found.rounds

            await _measure(
                counter, settle, trio.current_time, looker.address, find_nodes, node_lookups
            )
        result["nodes"] = node_lookups.summary()
        result["nodes"]["kinds"] = node_lookups.breakdown()
        result["nodes"]["mean_overlap"] = round(statistics.mean(exact_overlap), 4)
        result["dropped"] = dict(
            sum((s.stats.dropped for s in nodes), start=type(nodes[0].stats.dropped)())
        )
        result["timeouts"] = sum(s.stats.timeouts for s in nodes)
        nursery.cancel_scope.cancel()
    return result


# --- the kademlia package (asyncio) -----------------------------------------------------------


async def _run_kademlia(n: int, args: argparse.Namespace) -> dict[str, Any]:
    import umsgpack  # type: ignore[import-untyped]
    from kademlia.crawling import NodeSpiderCrawl
    from kademlia.network import Server
    from kademlia.node import Node

    class HopCountingCrawl(NodeSpiderCrawl):  # type: ignore[misc]
        """NodeSpiderCrawl that records each request's round as MEASURING.md defines it."""

        def __init__(self, protocol: Any, node: Any, peers: list[Any], k: int, a: int) -> None:
            super().__init__(protocol, node, peers, k, a)
            self.round_of: dict[bytes, int] = {p.id: 1 for p in peers}
            self.hops = 0

        async def find(self) -> Any:
            return await self._find(self._ask)

        async def _ask(self, peer: Any, node: Any) -> Any:
            round_ = self.round_of.setdefault(peer.id, 1)
            self.hops = max(self.hops, round_)
            response = await self.protocol.call_find_node(peer, node)
            if response[0]:
                for entry in response[1] or []:
                    self.round_of.setdefault(entry[0], round_ + 1)
            return response

    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    rng = random.Random(args.seed)
    counter = _Counter(by_kind=Counter() if args.breakdown else None)
    loop = asyncio.get_running_loop()
    rss_before = _rss_bytes()
    servers: list[Any] = []
    result: dict[str, Any] = {"impl": "kademlia", "N": n}

    def address(server: Any) -> tuple[str, int]:
        host, port = server.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def wrap_send(server: Any) -> None:
        original = server.transport.sendto
        own = address(server)

        def sendto(data: bytes, addr: Any = None) -> None:
            counter.add(own, addr)
            original(data, addr)

        def sendto_by_kind(data: bytes, addr: Any = None) -> None:
            assert counter.by_kind is not None
            if data[:1] == b"\x00":
                counter.by_kind[f"req {umsgpack.unpackb(data[21:])[0]}"] += 1
            else:
                counter.by_kind["rep"] += 1
            sendto(data, addr)

        server.transport.sendto = sendto if counter.by_kind is None else sendto_by_kind
        assert server.protocol.transport is server.transport

    build_start = time.perf_counter()
    for _ in range(n):
        server = Server(ksize=K, alpha=ALPHA)
        await server.listen(0, interface=HOST)
        wrap_send(server)
        servers.append(server)
    joined = [servers[0]]
    join_ms: list[float] = []
    limiter = asyncio.Semaphore(args.join_concurrency)

    async def join(server: Any, via: Any) -> None:
        try:
            start = time.perf_counter()
            await server.bootstrap([address(via)])
            join_ms.append((time.perf_counter() - start) * 1000.0)
            joined.append(server)
        finally:
            limiter.release()

    tasks = []
    for server in servers[1:]:
        await limiter.acquire()
        tasks.append(asyncio.ensure_future(join(server, rng.choice(joined))))
    await asyncio.wait_for(asyncio.gather(*tasks), args.build_timeout)
    result["join_s"] = round(time.perf_counter() - build_start, 2)

    async def settle(read: Callable[[], int], limit: float) -> None:
        deadline = loop.time() + limit
        last = read()
        quiet_since = loop.time()
        while loop.time() - quiet_since < QUIET_SECONDS and loop.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            if read() != last:
                last = read()
                quiet_since = loop.time()

    await settle(lambda: counter.sent, BUILD_SETTLE_MAX_SECONDS)
    result["mem_per_node_KiB"] = round((_rss_bytes() - rss_before) / n / 1024, 1)
    result["join_median_ms"] = round(statistics.median(join_ms), 1)
    result["join_failures"] = n - len(joined)
    result["build_msgs"] = counter.sent
    table_sizes = [sum(len(b) for b in s.protocol.router.buckets) for s in servers]
    result["table_size_mean"] = round(statistics.mean(table_sizes), 1)
    result["table_fill"] = round(_table_fill([s.node.long_id for s in servers], table_sizes), 3)

    def two(exclude: Any = None) -> Any:
        while True:
            server = rng.choice(servers)
            if server is not exclude:
                return server

    records = _Samples()
    for _ in range(args.lookups):
        publisher = two()
        key = rng.randbytes(32)
        payload = rng.randbytes(64)
        await publisher.set(key, payload)
        looker = two(publisher)

        async def get(
            looker: Any = looker, key: bytes = key, payload: bytes = payload
        ) -> tuple[bool, int | None]:
            return (await looker.get(key)) == payload, None

        await _measure(counter, settle, loop.time, address(looker), get, records)
    result["values"] = records.summary()
    result["values"]["kinds"] = records.breakdown()

    node_lookups = _Samples()
    exact_overlap: list[float] = []
    for _ in range(args.node_lookups):
        looker = two()
        target = Node(rng.randbytes(20))
        truth = sorted(
            (s.node.id for s in servers if s is not looker),
            key=lambda i: int.from_bytes(i, "big") ^ target.long_id,
        )[:K]

        async def find_nodes(
            looker: Any = looker, target: Any = target, truth: list[bytes] = truth
        ) -> tuple[bool, int | None]:
            nearest = looker.protocol.router.find_neighbors(target)
            crawl = HopCountingCrawl(looker.protocol, target, nearest, K, ALPHA)
            found = await crawl.find()
            got = [node.id for node in found]
            exact_overlap.append(len(set(got) & set(truth)) / len(truth))
            return got == truth, crawl.hops

        await _measure(counter, settle, loop.time, address(looker), find_nodes, node_lookups)
    result["nodes"] = node_lookups.summary()
    result["nodes"]["kinds"] = node_lookups.breakdown()
    result["nodes"]["mean_overlap"] = round(statistics.mean(exact_overlap), 4)
    for server in servers:
        server.stop()
    return result


# --- driver ------------------------------------------------------------------------------------


def _phase(impl: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one (implementation, N) in a fresh interpreter; its last stdout line is JSON."""
    command = [
        sys.executable,
        __file__,
        "--phase",
        impl,
        "--sizes",
        str(n),
        "--lookups",
        str(args.lookups),
        "--node-lookups",
        str(args.node_lookups),
        "--join-concurrency",
        str(args.join_concurrency),
        "--seed",
        str(args.seed),
        "--rate-limit",
        str(args.rate_limit),
        "--build-timeout",
        str(args.build_timeout),
        *(["--breakdown"] if args.breakdown else []),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {impl} N={n} failed with exit code {done.returncode}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _row(label: str, s: dict[str, Any], hops: dict[str, Any] | None = None) -> str:
    h = hops or s
    hop_text = f"{h['median_hops']:>5} {h['p95_hops']:>5}" if "median_hops" in h else f"{'-':>11}"
    return (
        f"{label:<22} {s['success_rate'] * 100:>6.1f}% {hop_text} {s['msgs_per_lookup']:>6}"
        f" {s['msgs_at_return']:>6} {s['looker_msgs']:>6} {s['median_latency_ms']:>9.1f}"
        f" {s['p95_latency_ms']:>9.1f}"
    )


def _print_table(n: int, ours: dict[str, Any], peer: dict[str, Any] | None) -> None:
    target = math.ceil(math.log2(n) / 3) + 1
    print(f"\nN = {n}  (hops target: median <= {target})")
    print(
        f"{'workload':<22} {'success':>7} {'hops':>5} {'p95':>5} {'msgs':>6} {'@ret':>6}"
        f" {'looker':>6} {'med ms':>9} {'p95 ms':>9}"
    )
    print(_row("ours provider", ours["providers"]))
    print(_row("ours value", ours["values"]))
    if peer is not None:
        print(_row("kademlia get", peer["values"]))
    for label, res in (("ours", ours), ("kademlia", peer)):
        if res is None:
            continue
        nl = res["nodes"]
        print(
            f"{label + ' node lookup':<22} {nl['success_rate'] * 100:>5.1f}%x"
            f" {nl['median_hops']:>5} {nl['p95_hops']:>5} {nl['msgs_per_lookup']:>6}"
            f" {nl['msgs_at_return']:>6} {nl['looker_msgs']:>6} {nl['median_latency_ms']:>9.1f}"
            f" {nl['p95_latency_ms']:>9.1f}   overlap {nl['mean_overlap']:.3f}"
        )
    for label, res in (("ours", ours), ("kademlia", peer)):
        if res is None:
            continue
        print(
            f"{label:<9} join {res['join_s']:>7.2f} s total, {res['join_median_ms']:>7.1f} ms"
            f" median/node, {res['join_failures']} failed; {res['mem_per_node_KiB']:>7.1f} KiB"
            f"/node; table {res['table_size_mean']} contacts/node"
            f" (fill {res['table_fill']:.2f}); build {res['build_msgs']}"
            " datagrams"
        )
    for label, res in (("ours", ours), ("kademlia", peer)):
        if res is None:
            continue
        for workload in ("providers", "values", "nodes"):
            if workload in res and res[workload]["kinds"]:
                print(f"{label} {workload} datagrams/lookup by kind: {res[workload]['kinds']}")
    if "dropped" in ours:
        print(f"ours: dropped {ours['dropped']}, request timeouts {ours['timeouts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256,1024", help="comma-separated N values")
    parser.add_argument("--lookups", type=int, default=100, help="record lookups per N")
    parser.add_argument("--node-lookups", type=int, default=100, help="node lookups per N")
    parser.add_argument("--join-concurrency", type=int, default=16, help="joins at a time")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="our per-IP request rate and burst (0 = DhtConfig default)",
    )
    parser.add_argument("--build-timeout", type=float, default=600.0, help="seconds per build")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="decode every datagram to print the datagrams per lookup by kind (slower)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the kademlia package")
    parser.add_argument("--phase", choices=["ours", "kademlia"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run (N = 16, 5 look-ups of each kind), to check it works",
    )
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.lookups, args.node_lookups, args.build_timeout = "16", 5, 5, 60.0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 2 or args.lookups < 1 or args.node_lookups < 1:
        parser.error("sizes must be >= 2 and lookup counts >= 1")

    if args.phase is not None:
        (n,) = sizes
        _raise_fd_limit(n + FD_HEADROOM)
        if args.phase == "ours":
            result = trio.run(_run_ours, n, args)
        else:
            result = asyncio.run(_run_kademlia(n, args))
        print(json.dumps(result))
        return

    try:
        peer_version: str | None = version("kademlia")
        print(
            f"peer: kademlia {peer_version} (rpcudp {version('rpcudp')},"
            f" u-msgpack-python {version('u-msgpack-python')})"
        )
    except PackageNotFoundError:
        peer_version = None
        print("peer: kademlia not installed, ours only")
    if args.no_peer:
        peer_version = None
    print(
        f"p2pstore DHT, trio {version('trio')}, Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs; k={K}, alpha={ALPHA}; rate limit"
        f" {args.rate_limit if args.rate_limit > 0 else 'default'}; seed {args.seed}"
    )
    summary: dict[str, Any] = {}
    for n in sizes:
        ours = _phase("ours", n, args)
        peer = _phase("kademlia", n, args) if peer_version is not None else None
        _print_table(n, ours, peer)
        summary = {
            "N": n,
            "success_rate": ours["providers"]["success_rate"],
            "median_hops": ours["nodes"]["median_hops"],
            "p95_hops": ours["nodes"]["p95_hops"],
            "msgs_per_lookup": ours["providers"]["msgs_per_lookup"],
            "looker_msgs_per_lookup": ours["providers"]["looker_msgs"],
            "median_latency_ms": ours["providers"]["median_latency_ms"],
            "value_success_rate": ours["values"]["success_rate"],
            "value_msgs_per_lookup": ours["values"]["msgs_per_lookup"],
            "value_median_latency_ms": ours["values"]["median_latency_ms"],
            "node_lookup_exact": ours["nodes"]["success_rate"],
            "mem_per_node_KiB": ours["mem_per_node_KiB"],
            "join_s": ours["join_s"],
        }
        if peer is not None:
            summary.update(
                {
                    "kademlia_success_rate": peer["values"]["success_rate"],
                    "kademlia_median_hops": peer["nodes"]["median_hops"],
                    "kademlia_p95_hops": peer["nodes"]["p95_hops"],
                    "kademlia_msgs_per_lookup": peer["values"]["msgs_per_lookup"],
                    "kademlia_looker_msgs_per_lookup": peer["values"]["looker_msgs"],
                    "kademlia_median_latency_ms": peer["values"]["median_latency_ms"],
                    "kademlia_node_lookup_exact": peer["nodes"]["success_rate"],
                    "kademlia_mem_per_node_KiB": peer["mem_per_node_KiB"],
                    "kademlia_join_s": peer["join_s"],
                    "kademlia_version": peer_version,
                }
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
