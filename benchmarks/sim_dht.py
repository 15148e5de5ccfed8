"""Discrete-event simulation of a large DHT: the production node class, simulated time and links.

Every node is a :class:`p2pstore.dht.protocol.DhtNode`, the very class ``DhtService`` drives on
Trio, with its default :class:`~p2pstore.dht.config.DhtConfig`. The simulator feeds it decoded
messages (:class:`~p2pstore.dht.protocol.ObjectCodec`: msgpack is skipped, datagram sizes are
estimated, replies are trimmed by the same rule) and timer ticks at simulated times; nothing
else is stubbed. Signatures are never computed because the workload uses provider records only
(signed values are not simulated). Everything is seeded: the same arguments give the same
figures.

Network model (definitions: ``MEASURING.md``, sim_dht.py):

- Each node has an access delay drawn from a log-normal distribution (median
  ``ACCESS_MEDIAN_MS``, sigma ``ACCESS_SIGMA``, at most ``ACCESS_MAX_MS``); a datagram from a to b
  takes ``delay(a) + delay(b)``, so a round trip is ``2 (delay(a) + delay(b))``. Measured over
  random pairs: median about 100 ms, p90 above 250 ms (printed as ``rtt_median_ms`` /
  ``rtt_p90_ms``).
- ``--loss`` (default 1 %) of datagrams vanish at random; datagrams to a node that has left vanish.
- Churn: ``--churn`` (default 10 %) of the nodes per hour leave without notice (a Poisson
  process over the live nodes), and as many new nodes join, each through a random live node with
  the real join (``start_bootstrap``: PING, own-ID lookup, a lookup per non-full bucket).

Initial network (fast, without a join per node): node IDs are sorted once; for every node and
every bucket, the IDs that fall in that bucket's range are one contiguous slice of the sorted
list, and up to the bucket's capacity (k, or ``far_bucket_sizes`` for the farthest) of them,
chosen at random, are given to the node's own table
(``RoutingTable.adopt_bucket``: the admission rules of ``update`` for a bucket with room: k per
bucket, never itself, one node per address), as if they had all answered at one random moment
of the last ``bucket_refresh_interval``; each
bucket's refresh clock starts at a random point of the last ``bucket_refresh_interval``, so
maintenance is spread as in a network that has been running. That is the table a node would hold
after contacts from every bucket had answered it in random order.

Workload: ``--lookups`` provider look-ups. For every ``--lookups-per-key`` of them a random live
node announces a fresh key (``start_announce``, the real announce: lookup + ADD_PROVIDER with
tokens); ``SETTLE_S`` later each look-up starts at a random live node other than the publisher,
spread over the run: ``start_lookup_providers(key, limit=1)``, exactly what a download does. A
look-up succeeds if it returns the publisher's record. Latency is simulated time from the start
to the result; ``msgs_per_lookup`` counts the look-up's requests and the replies that came back to
them; rounds as in ``docs/protocol.md``. Maintenance (expiry, refresh, republish) runs throughout.

Usage: ``python benchmarks/sim_dht.py [--nodes 100000] [--minutes 30] [--churn 0.1]
[--loss 0.01] [--lookups 1000] [--seed 1] [--smoke]``. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import heapq
import json
import math
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pstore.dht.config import DhtConfig
from p2pstore.dht.contact import Address, Contact
from p2pstore.dht.messages import Request, Response
from p2pstore.dht.protocol import (
    DhtNode,
    Effect,
    ObjectCodec,
    OperationDone,
    ProviderLookupResult,
    Send,
)

ACCESS_MEDIAN_MS = 20.0
"""Median one-way access delay of a node."""
ACCESS_SIGMA = 1.05
"""Log-normal shape of the access delay: a long tail of slow links."""
ACCESS_MAX_MS = 300.0
"""Cap of one access delay (a satellite-like link): no round trip exceeds 1.2 s."""
SETTLE_S = 20.0
"""Seconds between a key's announcement and its first look-up."""
WARMUP_S = 10.0
"""Seconds before the first announcement."""
TCP_PORT = 7000
UDP_PORT = 4000

_DELIVER = 0
_TIMER = 1
_CALL = 2


class SimNode:
    """One simulated host: a production DhtNode plus its access delay and liveness."""

    __slots__ = ("alive", "contact", "delay", "node", "ops", "timer_at")

    def __init__(self, node: DhtNode, contact: Contact, delay: float) -> None:
        self.node = node
        self.contact = contact
        self.delay = delay
        self.alive = True
        self.timer_at = math.inf
        self.ops: dict[int, Callable[[object], None]] = {}


@dataclass
class _LookupStats:
    ok: list[bool] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    msgs: list[int] = field(default_factory=list)
    looker_delay_ms: list[float] = field(default_factory=list)
    """The access delay of each look-up's starting node (where the slow tail comes from)."""


def _sample(rng: random.Random, lo: int, count: int, room: int) -> list[int]:
    """``room`` distinct integers of ``[lo, lo + count)`` (``room < count``), sorted: a
    uniformly random subset, faster than :meth:`random.Random.sample` for these sizes."""
    rand = rng.random
    picks = {lo + int(rand() * count) for _ in range(room)}
    while len(picks) < room:
        picks.add(lo + int(rand() * count))
    return sorted(picks)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


class Simulation:
    """The event loop, the network model, churn and the workload."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        """The network: node identities and delays, the build, churn (who leaves, who joins)."""
        self.work_rng = random.Random(f"{args.seed}/workload")
        """Publishers, keys, lookers and their times."""
        self.loss_rng = random.Random(f"{args.seed}/loss")
        """Which datagrams are lost. Three streams, so a change of the nodes' behaviour (which
        changes how many datagrams are sent) leaves the network, its churn and the workload as
        they were: A/B runs compare the same look-ups from the same nodes."""
        self.config = (
            DhtConfig()
            if args.far_bucket_sizes is None
            else DhtConfig(far_bucket_sizes=args.far_bucket_sizes)
        )
        self.codec = ObjectCodec()
        self.now = 0.0
        self.events: list[tuple[float, int, int, object, object, object, object]] = []
        self.seq = 0
        self.nodes: list[SimNode] = []
        self.live: list[SimNode] = []
        self._live_index: dict[int, int] = {}
        self.by_address: dict[Address, SimNode] = {}
        self.datagrams = 0
        self.lost = 0
        self.lookups = _LookupStats()
        self.joins = 0
        self.join_failures = 0
        self.leaves = 0
        self._tracked: dict[bytes, list[int]] = {}
        """txid -> [request count, reply count] cell of the look-up that sent it."""
        self._op_cells: dict[tuple[int, int | None], list[int]] = {}
        """(node, operation) of each measured look-up -> its [requests, replies] cell."""

    # Nodes -------------------------------------------------------------------------------

    def _new_node(self) -> SimNode:
        index = len(self.nodes)
        host = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
        if index >= 1 << 24:
            raise SystemExit("at most 2**24 nodes")
        node_id = self.rng.randbytes(32)
        contact = Contact(node_id, host, UDP_PORT)
        node = DhtNode(
            node_id,
            contact.address,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
            config=self.config,
            codec=self.codec,
            persist=False,
        )
        delay = min(ACCESS_MAX_MS, ACCESS_MEDIAN_MS * math.exp(self.rng.gauss(0.0, ACCESS_SIGMA)))
        sim_node = SimNode(node, contact, delay / 1000.0)
        self.nodes.append(sim_node)
        self.by_address[contact.address] = sim_node
        self._live_index[id(sim_node)] = len(self.live)
        self.live.append(sim_node)
        self._arm(sim_node)
        return sim_node

    def _kill(self, sim_node: SimNode) -> None:
        sim_node.alive = False
        del self.by_address[sim_node.contact.address]
        i = self._live_index.pop(id(sim_node))
        last = self.live.pop()
        if last is not sim_node:
            self.live[i] = last
            self._live_index[id(last)] = i
        sim_node.node = None  # type: ignore[assignment]  # its memory goes with it
        sim_node.ops.clear()

    def random_live(
        self, exclude: SimNode | None = None, rng: random.Random | None = None
    ) -> SimNode:
        draw = (rng or self.rng).randrange
        while True:
            candidate = self.live[draw(len(self.live))]
            if candidate is not exclude or len(self.live) == 1:
                return candidate

    def build(self, n: int) -> None:
        """``n`` nodes with tables filled from the sorted global view (see the module doc)."""
        for _ in range(n):
            self._new_node()
        ranked = sorted(self.nodes, key=lambda s: s.contact.node_id)
        ids = [int.from_bytes(s.contact.node_id, "big") for s in ranked]
        contacts = [s.contact for s in ranked]
        interval = self.config.bucket_refresh_interval
        for sim_node in self.nodes:
            table = sim_node.node.table
            own = int.from_bytes(sim_node.contact.node_id, "big")
            nearest = 255
            for j in range(255, -1, -1):
                low = ((own >> j) ^ 1) << j
                lo = bisect.bisect_left(ids, low)
                hi = bisect.bisect_left(ids, low + (1 << j), lo)
                count = hi - lo
                if count > 0:
                    room = table.capacity(j)
                    picked = (
                        contacts[lo:hi]
                        if count <= room
                        else [contacts[p] for p in _sample(self.rng, lo, count, room)]
                    )
                    table.adopt_bucket(j, picked, -self.rng.random() * interval)
                    nearest = j
                # Nodes sharing our prefix down to bit j: none but us means no nearer bucket.
                mine = (own >> j) << j
                first = bisect.bisect_left(ids, mine)
                if bisect.bisect_left(ids, mine + (1 << j), first) - first <= 1:
                    break
            for index in range(nearest, 256):
                table.touch(index, -self.rng.random() * interval)

    # Events ------------------------------------------------------------------------------

    def _push(self, when: float, kind: int, a: object, b: object = None, c: object = None,
              d: object = None) -> None:  # fmt: skip
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, a, b, c, d))

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._push(when, _CALL, fn)

    def _arm(self, sim_node: SimNode) -> None:
        deadline = sim_node.node.next_deadline()
        if deadline is not None and deadline < sim_node.timer_at:
            sim_node.timer_at = deadline
            self._push(deadline, _TIMER, sim_node, deadline)

    def apply(self, sim_node: SimNode, effects: list[Effect]) -> None:
        rng = self.loss_rng
        for effect in effects:
            if isinstance(effect, Send):
                self.datagrams += 1
                if effect.txid is not None:
                    cell = self._cell_of(sim_node, effect.txid)
                    if cell is not None:
                        cell[0] += 1
                        self._tracked[effect.txid] = cell
                if rng.random() < self.args.loss:
                    self.lost += 1
                    continue
                target = self.by_address.get(effect.address)
                if target is None:
                    continue
                delay = sim_node.delay + target.delay
                self._push(self.now + delay, _DELIVER, effect.address, effect.payload,
                           sim_node.contact.address, effect.size)  # fmt: skip
            elif isinstance(effect, OperationDone):
                callback = sim_node.ops.pop(effect.op, None)
                if callback is not None:
                    callback(effect.result)
        if sim_node.alive:
            self._arm(sim_node)

    def _cell_of(self, sim_node: SimNode, txid: bytes) -> list[int] | None:
        op = sim_node.node.operation_of(txid)
        return self._op_cells.get((id(sim_node), op)) if op else None

    def run_until(self, end: float) -> None:
        events = self.events
        while events and events[0][0] <= end:
            when, _, kind, a, b, c, d = heapq.heappop(events)
            self.now = when
            if kind == _DELIVER:
                target = self.by_address.get(a)  # type: ignore[arg-type]
                if target is None:
                    continue
                message = b
                assert isinstance(message, Request | Response)
                if isinstance(message, Response):
                    cell = self._tracked.pop(message.txid, None)
                    if cell is not None:
                        cell[1] += 1
                self.apply(
                    target,
                    target.node.message_received(message, c, d, when),  # type: ignore[arg-type]
                )
            elif kind == _TIMER:
                sim_node = a
                assert isinstance(sim_node, SimNode)
                if not sim_node.alive or sim_node.timer_at != b:
                    continue
                sim_node.timer_at = math.inf
                self.apply(sim_node, sim_node.node.tick(when))
            else:
                a()  # type: ignore[operator]
        self.now = end

    # Churn and workload ------------------------------------------------------------------

    def schedule_churn(self, end: float) -> None:
        rate = self.args.churn * self.args.nodes / 3600.0
        if rate <= 0:
            return
        t = self.rng.expovariate(rate)
        while t < end:
            self.at(t, self._churn_once)
            t += self.rng.expovariate(rate)

    def _churn_once(self) -> None:
        if len(self.live) > 2:
            self._kill(self.random_live())
            self.leaves += 1
        via = self.random_live()
        joiner = self._new_node()
        self.joins += 1

        def joined(result: object) -> None:
            if not isinstance(result, int):
                self.join_failures += 1

        op, effects = joiner.node.start_bootstrap([via.contact.address], [], self.now)
        joiner.ops[op] = joined
        self.apply(joiner, effects)

    def schedule_workload(self, end: float) -> None:
        args = self.args
        keys = max(1, math.ceil(args.lookups / args.lookups_per_key))
        span = max(1.0, end - WARMUP_S - SETTLE_S - self.config.lookup_timeout)
        remaining = args.lookups
        for i in range(keys):
            publish_at = WARMUP_S + span * i / keys
            count = min(args.lookups_per_key, remaining)
            remaining -= count
            offsets = sorted(self.work_rng.uniform(0.0, span / keys) for _ in range(count))
            self.at(publish_at, self._publisher(offsets))

    def _publisher(self, offsets: list[float]) -> Callable[[], None]:
        def publish() -> None:
            publisher = self.random_live(rng=self.work_rng)
            key = self.work_rng.randbytes(32)
            op, effects = publisher.node.start_announce(key, TCP_PORT, self.now)
            publisher.ops[op] = lambda _acked: None
            self.apply(publisher, effects)
            for offset in offsets:
                self.at(self.now + SETTLE_S + offset, self._looker(key, publisher.contact.node_id))

        return publish

    def _looker(self, key: bytes, publisher_id: bytes) -> Callable[[], None]:
        def look() -> None:
            looker = self.random_live(rng=self.work_rng)
            while looker.contact.node_id == publisher_id and len(self.live) > 1:
                looker = self.random_live(rng=self.work_rng)
            start = self.now
            cell = [0, 0]
            op, effects = looker.node.start_lookup_providers(key, start, limit=1)
            self._op_cells[(id(looker), op)] = cell

            def done(result: object) -> None:
                assert isinstance(result, ProviderLookupResult)
                self._op_cells.pop((id(looker), op), None)
                self.lookups.ok.append(any(p.node_id == publisher_id for p in result.providers))
                self.lookups.latency_ms.append((self.now - start) * 1000.0)
                self.lookups.rounds.append(result.rounds)
                self.lookups.msgs.append(cell[0] + cell[1])
                self.lookups.looker_delay_ms.append(looker.delay * 1000.0)

            looker.ops[op] = done
            self.apply(looker, effects)  # the cell is registered: the first requests count

        return look

    def rtt_sample(self, pairs: int = 20000) -> tuple[float, float]:
        rng = random.Random(self.args.seed + 1)
        delays = [s.delay for s in self.nodes]
        rtts = [2000.0 * (rng.choice(delays) + rng.choice(delays)) for _ in range(pairs)]
        return statistics.median(rtts), _nearest_rank(rtts, 0.9)


def _progress(sim: Simulation, minute: int, wall_start: float) -> None:
    stats = sim.lookups
    n = len(stats.ok)
    median = statistics.median(stats.latency_ms) if n else 0.0
    print(
        f"minute {minute}: {n} lookups, success {sum(stats.ok)}/{n}, median {median:.0f} ms,"
        f" p99 {_nearest_rank(stats.latency_ms, 0.99):.0f} ms, {sim.datagrams} datagrams,"
        f" {sim.joins} joins, RSS {_peak_rss_mib():.0f} MiB, wall"
        f" {time.perf_counter() - wall_start:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, run the churn and the workload, and return the figures (the JSON line)."""
    return simulate(args)[1]


def simulate(args: argparse.Namespace) -> tuple[Simulation, dict[str, Any]]:
    """:func:`run`, also returning the simulation (its nodes, for inspection)."""
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    sim = Simulation(args)
    # The build makes tens of millions of objects that live for the whole run: no collection
    # during it, then they are moved out of the collector's sight (gc.freeze) so the later
    # collections only scan what the run makes.
    gc.disable()
    try:
        sim.build(args.nodes)
    finally:
        gc.freeze()
        gc.enable()
    build_s = time.perf_counter() - wall_start
    end = args.minutes * 60.0
    sim.schedule_churn(end)
    sim.schedule_workload(end)
    if args.progress:
        print(f"built {args.nodes} nodes in {build_s:.1f} s", file=sys.stderr, flush=True)
        for minute in range(1, math.ceil(args.minutes) + 1):
            sim.at(minute * 60.0, lambda m=minute: _progress(sim, m, wall_start))
    sim.run_until(end)
    # Let look-ups started near the end finish (no new churn or work is scheduled past ``end``).
    sim.run_until(end + sim.config.lookup_timeout + 1.0)
    gc.unfreeze()  # the caller may drop the simulation: let the collector have it back
    rtt_median, rtt_p90 = sim.rtt_sample()
    stats = sim.lookups
    n = len(stats.ok)
    return sim, {
        "nodes": args.nodes,
        "rtt_median_ms": round(rtt_median, 1),
        "rtt_p90_ms": round(rtt_p90, 1),
        "loss": args.loss,
        "churn_per_hour": args.churn,
        "minutes": args.minutes,
        "lookups": n,
        "success_rate": round(sum(stats.ok) / n, 4) if n else 0.0,
        "median_ms": round(statistics.median(stats.latency_ms), 1) if n else 0.0,
        "p95_ms": round(_nearest_rank(stats.latency_ms, 0.95), 1),
        "p99_ms": round(_nearest_rank(stats.latency_ms, 0.99), 1),
        "median_rounds": statistics.median(stats.rounds) if n else 0,
        "msgs_per_lookup": statistics.median(stats.msgs) if n else 0,
        "joins": sim.joins,
        "join_failures": sim.join_failures,
        "datagrams": sim.datagrams,
        "build_s": round(build_s, 1),
        "peak_rss_MiB": round(_peak_rss_mib(), 1),
        "wall_s": round(time.perf_counter() - wall_start, 1),
        "cpu_s": round(time.process_time() - cpu_start, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--smoke`` already applied)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes")
    parser.add_argument("--churn", type=float, default=0.1, help="fraction of nodes per hour")
    parser.add_argument("--loss", type=float, default=0.01, help="datagram loss rate")
    parser.add_argument("--lookups", type=int, default=1000, help="provider look-ups")
    parser.add_argument("--lookups-per-key", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--far-bucket-sizes",
        type=lambda text: tuple(int(x) for x in text.split(",") if x),
        default=None,
        help="override DhtConfig.far_bucket_sizes, e.g. '' (plain k-buckets) or 128,64,32",
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 300 nodes, 2 min")
    parser.add_argument(
        "--progress", action="store_true", help="a line on stderr per simulated minute"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.minutes, args.lookups = 300, 2.0, 40
    if args.nodes < 2 or args.minutes <= 0 or args.lookups < 1:
        parser.error("need at least 2 nodes, a positive duration and one look-up")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(
        f"nodes {result['nodes']}, {args.minutes:g} simulated min, churn {args.churn:.0%}/h,"
        f" loss {args.loss:.0%}; RTT median {result['rtt_median_ms']} ms,"
        f" p90 {result['rtt_p90_ms']} ms"
    )
    print(
        f"{'lookups':>8} {'success':>8} {'median':>8} {'p95':>8} {'p99':>8}"
        f" {'rounds':>7} {'msgs':>6}"
    )
    print(
        f"{result['lookups']:>8} {result['success_rate'] * 100:>7.2f}%"
        f" {result['median_ms']:>6.0f}ms"
        f" {result['p95_ms']:>6.0f}ms {result['p99_ms']:>6.0f}ms {result['median_rounds']:>7}"
        f" {result['msgs_per_lookup']:>6}"
    )
    print(
        f"joins {result['joins']} ({result['join_failures']} failed), datagrams"
        f" {result['datagrams']}, build {result['build_s']} s, peak RSS"
        f" {result['peak_rss_MiB']} MiB, wall {result['wall_s']} s"
    )
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
