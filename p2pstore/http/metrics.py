"""``/metrics``: the node's counters in the Prometheus text format, via ``prometheus_client``.

A custom collector reads the node at scrape time (its :class:`~p2pstore.telemetry.Telemetry`,
the DHT's :class:`~p2pstore.dht.service.DhtStats`, the store, the connection pool), so counting
costs the rest of the node one integer increment per event and nothing per scrape in between.
Every node has its own registry (several nodes may share a process, as the tests do). Names
follow the Prometheus conventions: ``p2pstore_`` prefix, ``_total`` for counters, base units
(bytes, seconds). :data:`METRICS` lists them with their help text (also in ``docs/http.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Media type of the text exposition format."""

METRICS: dict[str, str] = {
    "p2pstore_network_bytes_total": "Bytes moved, by direction (sent/received) and kind "
    "(dht = UDP datagrams, chunk = chunk payloads over TCP, http = HTTP bodies).",
    "p2pstore_chunks_served_total": "Chunks this node's chunk server sent to peers.",
    "p2pstore_chunks_fetched_total": "Verified chunks downloads received from peers.",
    "p2pstore_chunks_received_total": "Chunks peers pushed to this node (dispersal).",
    "p2pstore_chunk_verify_failures_total": "Chunks from peers that did not hash to their ID.",
    "p2pstore_peers_connected": "Open chunk-protocol connections to peers.",
    "p2pstore_routing_table_contacts": "Contacts in the DHT routing table.",
    "p2pstore_routing_table_buckets": "Non-empty k-buckets of the DHT routing table.",
    "p2pstore_dht_datagrams_total": "DHT datagrams, by direction (sent/received).",
    "p2pstore_dht_requests_total": "DHT requests answered, by method.",
    "p2pstore_dht_dropped_total": "DHT datagrams dropped, by reason.",
    "p2pstore_dht_send_failures_total": "DHT datagrams the socket refused to send.",
    "p2pstore_dht_timeouts_total": "DHT requests that got no answer in time.",
    "p2pstore_dht_lookups_total": "Iterative DHT look-ups started.",
    "p2pstore_lookup_duration_seconds": "Latency of the node's DHT look-ups, by kind.",
    "p2pstore_transfers_active": "Puts, gets, gateway reads and uploads running, by kind.",
    "p2pstore_store_bytes": "Bytes of chunks in the local store.",
    "p2pstore_store_quota_bytes": "Store quota for chunks pushed by peers (absent if none).",
    "p2pstore_store_files": "Files the store knows.",
    "p2pstore_gc_runs_total": "Garbage collections run.",
    "p2pstore_gc_freed_bytes_total": "Bytes freed by garbage collection.",
    "p2pstore_http_requests_total": "HTTP requests answered, by method and status code.",
}


def bucket_count(own_id: bytes, contact_ids: list[bytes]) -> int:
    """Distinct k-buckets (by XOR-distance bit length) that ``contact_ids`` fall in."""
    own = int.from_bytes(own_id, "big")
    return len({(own ^ int.from_bytes(c, "big")).bit_length() for c in contact_ids})


class NodeCollector(Collector):
    """Collects one node's metrics at scrape time (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        t = node.telemetry
        stats = node.dht.stats

        def counter(name: str, labels: list[str] | None = None) -> CounterMetricFamily:
            base = name.removesuffix("_total")
            return CounterMetricFamily(base, METRICS[name], labels=labels)

        def gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, METRICS[name], labels=labels)

        net = counter("p2pstore_network_bytes_total", ["direction", "kind"])
        net.add_metric(["sent", "dht"], stats.sent_bytes)
        net.add_metric(["received", "dht"], stats.received_bytes)
        net.add_metric(["sent", "chunk"], t.chunk_bytes_served)
        net.add_metric(["received", "chunk"], t.chunk_bytes_fetched + t.chunk_bytes_pushed_to_us)
        net.add_metric(["sent", "http"], t.http_bytes_sent)
        net.add_metric(["received", "http"], t.http_bytes_received)
        yield net
        for name, value in (
            ("p2pstore_chunks_served_total", t.chunks_served),
            ("p2pstore_chunks_fetched_total", t.chunks_fetched),
            ("p2pstore_chunks_received_total", t.chunks_pushed_to_us),
            ("p2pstore_chunk_verify_failures_total", t.chunk_verify_failures),
            ("p2pstore_dht_send_failures_total", stats.send_failures),
            ("p2pstore_dht_timeouts_total", stats.timeouts),
            ("p2pstore_dht_lookups_total", stats.lookups),
            ("p2pstore_gc_runs_total", t.gc_runs),
            ("p2pstore_gc_freed_bytes_total", t.gc_bytes_freed),
        ):
            family = counter(name)
            family.add_metric([], value)
            yield family
        datagrams = counter("p2pstore_dht_datagrams_total", ["direction"])
        datagrams.add_metric(["sent"], stats.sent)
        datagrams.add_metric(["received"], stats.received)
        yield datagrams
        requests = counter("p2pstore_dht_requests_total", ["method"])
        for method, n in sorted(stats.requests.items()):
            requests.add_metric([method], n)
        yield requests
        dropped = counter("p2pstore_dht_dropped_total", ["reason"])
        for reason, n in sorted(stats.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        http = counter("p2pstore_http_requests_total", ["method", "code"])
        for (method, status), n in sorted(t.http_requests.items()):
            http.add_metric([method, str(status)], n)
        yield http

        latency = HistogramMetricFamily(
            "p2pstore_lookup_duration_seconds",
            METRICS["p2pstore_lookup_duration_seconds"],
            labels=["kind"],
        )
        for kind, histogram in sorted(t.lookups.items()):
            latency.add_metric([kind], histogram.cumulative(), histogram.total)
        yield latency

        contacts = node.dht.contacts()
        for name, value in (
            ("p2pstore_peers_connected", len(node.pool)),
            ("p2pstore_routing_table_contacts", len(contacts)),
            (
                "p2pstore_routing_table_buckets",
                bucket_count(node.node_id, [c.node_id for c in contacts]),
            ),
            ("p2pstore_store_bytes", node.store.stored_bytes),
            ("p2pstore_store_files", len(node.store.list_files())),
        ):
            level = gauge(name)
            level.add_metric([], value)
            yield level
        if node.store.quota_bytes is not None:
            quota = gauge("p2pstore_store_quota_bytes")
            quota.add_metric([], node.store.quota_bytes)
            yield quota
        transfers = gauge("p2pstore_transfers_active", ["kind"])
        kinds: dict[str, int] = {"get": 0, "put": 0, "gateway": 0, "upload": 0}
        for transfer in node.status().transfers:
            kinds[transfer.kind] = kinds.get(transfer.kind, 0) + 1
        for kind, n in sorted(kinds.items()):
            transfers.add_metric([kind], n)
        yield transfers


def make_registry(node: Node) -> CollectorRegistry:
    """A registry holding only ``node``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    return generate_latest(registry)
