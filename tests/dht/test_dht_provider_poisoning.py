"""Provider records resist poisoning: caps per IP and per subnet, random and diverse replies.

These drive the sans-IO node with real datagrams (no sockets, no clock), so they are exact and
deterministic: the node's randomness is a seeded ``random.Random``.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.dht.config import DhtConfig
from p2pstore.dht.messages import (
    Ack,
    AddProvider,
    ErrorReply,
    FindNode,
    GetProviders,
    NodesReply,
    ProvidersReply,
    Request,
    RequestBody,
    Response,
    decode,
    encode_request,
)
from p2pstore.dht.protocol import DhtNode, Send
from p2pstore.dht.records import ProviderRecord, select_providers, subnet_of

KEY = b"K" * 32
NODE = ("192.0.2.1", 4000)
PAD = 467


class Peer:
    """A hand-driven requester at one address, with its own node ID."""

    def __init__(self, node: DhtNode, host: str, rng: random.Random) -> None:
        self.node = node
        self.address = (host, 5000)
        self.node_id = rng.randbytes(32)
        self.rng = rng

    def ask(self, body: RequestBody, now: float = 1.0) -> Response:
        txid = self.rng.randbytes(8)
        data = encode_request(Request(txid, self.node_id, body), pad_to=PAD)
        effects = self.node.datagram_received(data, self.address, now)
        replies = [
            decode(e.payload)
            for e in effects
            if isinstance(e, Send) and e.address == self.address and isinstance(e.payload, bytes)
        ]
        [reply] = [r for r in replies if isinstance(r, Response) and r.txid == txid]
        return reply

    def announce(self, port: int = 8000) -> bool:
        reply = self.ask(FindNode(KEY))
        assert isinstance(reply.body, NodesReply)
        answer = self.ask(AddProvider(reply.body.token, KEY, port))
        return isinstance(answer.body, Ack)


def _node(seed: int = 1) -> DhtNode:
    config = DhtConfig(rate_limit_per_second=1e6, rate_limit_burst=1e6)
    return DhtNode(b"N" * 32, NODE, rng=random.Random(seed), now=0.0, config=config)


def test_records_per_ip_and_per_subnet_are_capped() -> None:
    node = _node()
    rng = random.Random(2)
    config = node.config
    # Fifty identities on one IP: only max_providers_per_ip of them are stored.
    sybils = [Peer(node, "198.51.100.7", rng) for _ in range(50)]
    stored = sum(p.announce() for p in sybils)
    assert stored == config.max_providers_per_ip
    # More of the same /24 on other IPs: the subnet cap holds.
    neighbours = [Peer(node, f"198.51.100.{i}", rng) for i in range(20, 40)]
    stored += sum(p.announce() for p in neighbours)
    assert stored == config.max_providers_per_subnet
    refused = sybils[-1].ask(AddProvider(bytes(16), KEY, 1))
    assert isinstance(refused.body, ErrorReply)
    # An honest provider elsewhere is still stored and returned.
    honest = Peer(node, "203.0.113.5", rng)
    assert honest.announce(9999)
    records = node.stored_providers(KEY, 1.0)
    assert honest.node_id in {r.node_id for r in records}
    assert len(records) == config.max_providers_per_subnet + 1
    # A stored provider re-announcing (refresh) is not refused by its own subnet's cap.
    assert sybils[0].announce()


def test_replies_are_a_random_diverse_subset_not_the_newest() -> None:
    """The honest record is the oldest of 40 (from 40 networks), and all 40 cannot fit one
    datagram. Newest-first replies never contained it; random diverse ones soon do."""
    node = _node()
    rng = random.Random(3)
    honest = Peer(node, "203.0.113.5", rng)
    assert honest.announce(9999)
    for i in range(39):
        assert Peer(node, f"10.{i}.0.1", rng).announce()
    asker = Peer(node, "192.0.2.200", rng)
    seen_honest = 0
    listed: set[bytes] = set()
    for _ in range(30):
        reply = asker.ask(GetProviders(KEY))
        assert isinstance(reply.body, ProvidersReply)
        providers = reply.body.providers
        assert 0 < len(providers) < 40, "the reply is cut at the datagram size"
        listed.update(p.node_id for p in providers)
        seen_honest += any(p.node_id == honest.node_id for p in providers)
    assert seen_honest >= 3
    assert len(listed) >= 35, "repeated replies show different subsets"


HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.9.9.9", "2001:db8::1"]
HOSTS += ["2001:db8::2", "2001:db8:0:1::1", "127.0.0.1", "::1"]


def _record(i: int, host: str) -> ProviderRecord:
    return ProviderRecord(KEY, i.to_bytes(32, "big"), host, 1000, 100.0)


@given(
    hosts=st.lists(
        st.sampled_from(HOSTS),
        max_size=60,
    ),
    seed=st.integers(0, 2**32),
)
def test_selection_caps_and_spreads_over_subnets(hosts: list[str], seed: int) -> None:
    records = [_record(i, h) for i, h in enumerate(hosts)]
    chosen = select_providers(records, random.Random(seed), max_per_ip=2, max_per_subnet=3)
    assert len({r.node_id for r in chosen}) == len(chosen)
    per_ip: dict[str, int] = {}
    per_subnet: dict[bytes, int] = {}
    for r in chosen:
        subnet = subnet_of(r.host)
        if subnet is None:
            continue  # loopback: one host runs every node of a local network
        per_ip[r.host] = per_ip.get(r.host, 0) + 1
        per_subnet[subnet] = per_subnet.get(subnet, 0) + 1
    assert all(n <= 2 for n in per_ip.values())
    assert all(n <= 3 for n in per_subnet.values())
    # Loopback records are never capped; every distinct network appears before any repeats.
    assert sum(subnet_of(r.host) is None for r in chosen) == sum(
        subnet_of(h) is None for h in hosts
    )
    networks = {subnet_of(r.host) if subnet_of(r.host) else r.node_id for r in chosen}
    head = [subnet_of(r.host) if subnet_of(r.host) else r.node_id for r in chosen][: len(networks)]
    assert len(set(head)) == len(networks)


def test_subnets() -> None:
    assert subnet_of("10.1.2.3") == bytes([10, 1, 2])
    assert subnet_of("2001:db8::1") == bytes.fromhex("20010db800000000")
    assert subnet_of("127.0.0.1") is None
    assert subnet_of("::1") is None
    assert subnet_of("not an ip") is None
