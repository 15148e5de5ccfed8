"""Only 127.0.0.1 and ::1 are exempt from the provider caps: identities spread over other
127.0.0.0/8 addresses (a local Sybil, or a benchmark of one) are capped like remote hosts."""

from __future__ import annotations

import random

from p2pstore.dht.records import ProviderRecord, ProviderStore, select_providers

KEY = b"K" * 32


def _store() -> ProviderStore:
    return ProviderStore(ttl=100.0, max_keys=8, max_per_key=64, max_per_ip=4, max_per_subnet=8)


def _node_id(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_default_loopback_address_is_not_capped() -> None:
    store = _store()
    added = [store.add(KEY, _node_id(i), "127.0.0.1", 1000, 0.0).accepted for i in range(30)]
    assert all(added)
    added = [store.add(KEY, _node_id(100 + i), "::1", 1000, 0.0).accepted for i in range(10)]
    assert all(added)


def test_other_loopback_addresses_are_capped_per_ip_and_per_subnet() -> None:
    store = _store()
    one_ip = [store.add(KEY, _node_id(i), "127.0.0.2", 1000, 0.0).accepted for i in range(10)]
    assert sum(one_ip) == 4
    same_subnet = [
        store.add(KEY, _node_id(100 + i), f"127.0.0.{10 + i}", 1000, 0.0).accepted
        for i in range(10)
    ]
    assert sum(same_subnet) == 4  # 8 per /24, 4 of them already on 127.0.0.2
    other_subnet = store.add(KEY, _node_id(999), "127.0.1.5", 1000, 0.0)
    assert other_subnet.accepted
    assert store.add(KEY, _node_id(1000), "127.0.0.1", 1000, 0.0).accepted


def test_replies_cap_other_loopback_addresses_and_list_each_network_first() -> None:
    records = [ProviderRecord(KEY, _node_id(i), f"127.9.0.{i}", 1000, 100.0) for i in range(40)]
    honest = ProviderRecord(KEY, _node_id(1000), "127.0.0.1", 1000, 100.0)
    for seed in range(20):
        chosen = select_providers(
            [*records, honest], random.Random(seed), max_per_ip=4, max_per_subnet=8
        )
        assert len(chosen) == 9  # 8 of the one /24, plus the exempt honest record
        assert honest in chosen[:2]  # two networks: one record of each before any repeat
