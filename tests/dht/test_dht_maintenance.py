"""Time-driven behaviour (republish, expiry, bucket refresh, token rotation) on a MockClock.

Nodes talk over an in-memory network, so the clock can jump without real I/O in flight.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import trio
import trio.testing

from p2pstore.dht import DhtConfig, DhtService, MemoryNetwork, open_dht
from p2pstore.identity import Identity

CONFIG = DhtConfig(
    request_timeout=1.0,
    lookup_timeout=20.0,
    provider_ttl=100.0,
    value_ttl=100.0,
    republish_interval=40.0,
    bucket_refresh_interval=60.0,
    token_rotation=30.0,
    maintenance_interval=5.0,
)


async def _memory_network(stack: AsyncExitStack, n: int) -> list[DhtService]:
    network = MemoryNetwork()
    nodes: list[DhtService] = []
    for i in range(n):
        transport = network.transport(f"10.0.1.{i + 1}", 4000)
        node = await stack.enter_async_context(
            open_dht(Identity.generate(), transport=transport, config=CONFIG)
        )
        if nodes:
            await node.bootstrap([nodes[0].address])
        nodes.append(node)
    return nodes


async def test_republish_keeps_records_alive_until_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with AsyncExitStack() as stack:
        nodes = await _memory_network(stack, 12)
        provider, publisher, reader = nodes[3], nodes[5], nodes[9]
        key = os.urandom(32)
        assert await provider.announce_provider(key, 1234) == 11
        assert await publisher.put_value(b"name", b"payload") == 11
        lookups_before = sum(n.stats.lookups for n in nodes)
        # Far beyond one TTL: only republishing (every 40 s, through fresh tokens) keeps them.
        await trio.sleep(250.0)
        records = await reader.find_providers(key)
        assert [r.node_id for r in records] == [provider.node_id]
        value = await reader.get_value(publisher.identity.public_key, b"name")
        assert value == b"payload"
        # Buckets idle for bucket_refresh_interval were refreshed with lookups.
        assert sum(n.stats.lookups for n in nodes) > lookups_before + 12
        provider.stop_providing(key)
        assert provider.providing() == {}
        await trio.sleep(150.0)
        assert await reader.find_providers(key) == []
        assert all(n.stored_providers(key) == [] for n in nodes)


async def test_find_providers_can_stop_early(autojump_clock: trio.testing.MockClock) -> None:
    async with AsyncExitStack() as stack:
        nodes = await _memory_network(stack, 15)
        key = os.urandom(32)
        for provider in nodes[:3]:
            await provider.announce_provider(key, 1000)
        full = await nodes[10].lookup_providers(key)
        assert {r.node_id for r in full.providers} == {n.node_id for n in nodes[:3]}
        early = await nodes[11].lookup_providers(key, limit=1)
        assert 1 <= len(early.providers) <= 3
        assert {r.node_id for r in early.providers} <= {n.node_id for n in nodes[:3]}
        assert early.messages < full.messages
