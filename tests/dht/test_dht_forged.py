"""Forged and malformed traffic, on an in-memory network where source addresses can be forged.

Nothing here touches a socket: the "attacker" is a raw endpoint of a MemoryNetwork.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from p2pstore.dht import DhtConfig, DhtService, MemoryNetwork, open_dht
from p2pstore.dht.contact import Contact
from p2pstore.dht.messages import (
    Ack,
    AddProvider,
    ErrorCode,
    ErrorReply,
    FindNode,
    FindValue,
    Message,
    Method,
    NodesReply,
    Ping,
    Pong,
    Request,
    RequestBody,
    Response,
    Store,
    ValueReply,
    decode,
    encode_request,
    encode_response,
)
from p2pstore.dht.records import SignedValue
from p2pstore.dht.transport import MemoryTransport
from p2pstore.identity import Identity

CONFIG = DhtConfig(request_timeout=0.2, lookup_timeout=2.0)
VICTIM = ("10.0.0.1", 4000)
ATTACKER = ("10.0.0.2", 5000)
ELSEWHERE = ("10.0.0.3", 5000)
KEY = b"K" * 32


@asynccontextmanager
async def victim(network: MemoryNetwork) -> AsyncIterator[DhtService]:
    async with open_dht(
        Identity.generate(), transport=network.transport(*VICTIM), config=CONFIG
    ) as dht:
        yield dht


class Raw:
    """A hand-driven endpoint speaking raw datagrams."""

    def __init__(self, network: MemoryNetwork, address: tuple[str, int]) -> None:
        self.network = network
        self.endpoint: MemoryTransport = network.transport(*address)
        self.identity = Identity.generate()

    def forge(self, body: RequestBody, source: tuple[str, int]) -> None:
        """Send a request with a forged source address (its reply goes there, unseen)."""
        data = encode_request(Request(os.urandom(8), self.identity.node_id, body), pad_to=500)
        self.network.inject(data, source, VICTIM)

    async def ask(self, body: RequestBody) -> Message:
        txid = os.urandom(8)
        data = encode_request(Request(txid, self.identity.node_id, body), pad_to=500)
        await self.endpoint.send(data, VICTIM)
        with trio.fail_after(1):
            while True:
                reply, _ = await self.endpoint.receive()
                message = decode(reply)
                if isinstance(message, Response) and message.txid == txid:
                    return message

    async def token(self) -> bytes:
        reply = await self.ask(FindNode(KEY))
        assert isinstance(reply, Response)
        assert isinstance(reply.body, NodesReply)
        return reply.body.token


async def test_add_provider_needs_a_token_issued_to_the_same_ip() -> None:
    network = MemoryNetwork()
    async with victim(network) as dht:
        attacker = Raw(network, ATTACKER)
        # No valid token at all.
        reply = await attacker.ask(AddProvider(os.urandom(16), KEY, 8000))
        assert isinstance(reply, Response)
        assert reply.body == ErrorReply(ErrorCode.BAD_TOKEN, "invalid or expired write token")
        assert dht.stored_providers(KEY) == []
        # A real token, replayed from a forged source address (another IP).
        token = await attacker.token()
        attacker.forge(AddProvider(token, KEY, 8000), ELSEWHERE)
        await trio.sleep(0.05)
        assert dht.stored_providers(KEY) == []
        # A token issued to another IP, used from ours.
        other = Raw(network, ELSEWHERE)
        their_token = await other.token()
        reply = await attacker.ask(AddProvider(their_token, KEY, 8000))
        assert isinstance(reply, Response)
        assert isinstance(reply.body, ErrorReply)
        assert dht.stored_providers(KEY) == []
        assert dht.stats.dropped["bad_token"] == 3
        # The genuine article is stored, with the IP of the datagram.
        reply = await attacker.ask(AddProvider(token, KEY, 8000))
        assert isinstance(reply, Response)
        assert reply.body == Ack()
        [record] = dht.stored_providers(KEY)
        assert (record.node_id, record.host, record.tcp_port) == (
            attacker.identity.node_id,
            ATTACKER[0],
            8000,
        )


async def test_values_need_a_valid_signature_and_a_newer_sequence_number() -> None:
    network = MemoryNetwork()
    async with victim(network) as dht:
        attacker = Raw(network, ATTACKER)
        token = await attacker.token()
        publisher = Identity.generate()
        v5 = SignedValue.sign(publisher, b"name", 5, b"five")
        assert (await attacker.ask(Store(token, v5))).body == Ack()
        bad_signature = SignedValue(publisher.public_key, b"name", 9, b"evil", bytes(64))
        older = SignedValue.sign(publisher, b"name", 4, b"four")
        same_seq = SignedValue.sign(publisher, b"name", 5, b"other")
        impostor = Identity.generate()
        # Signed by someone else but claiming the publisher's key.
        wrong_key = SignedValue(
            publisher.public_key,
            b"name",
            9,
            b"evil",
            SignedValue.sign(impostor, b"name", 9, b"evil").signature,
        )
        for forged in (bad_signature, older, same_seq, wrong_key):
            reply = await attacker.ask(Store(token, forged))
            assert isinstance(reply, Response)
            assert isinstance(reply.body, ErrorReply)
            assert reply.body.code == ErrorCode.REFUSED
            assert dht.stored_value(v5.key) == v5
        # A forged STORE from an address that never got a token changes nothing either.
        v9 = SignedValue.sign(publisher, b"name", 9, b"nine")
        attacker.forge(Store(token, v9), ELSEWHERE)
        await trio.sleep(0.05)
        assert dht.stored_value(v5.key) == v5
        reply = await attacker.ask(FindValue(v5.key))
        assert isinstance(reply, Response)
        assert isinstance(reply.body, ValueReply)
        assert reply.body.value == v5
        assert (await attacker.ask(Store(token, v9))).body == Ack()
        assert dht.stored_value(v5.key) == v9


async def test_replies_with_wrong_txid_or_from_wrong_address_are_dropped() -> None:
    network = MemoryNetwork()
    async with victim(network) as dht:
        peer = Raw(network, ATTACKER)
        outcome: list[Response | None] = []

        async def ask_peer() -> None:
            outcome.append(await dht.request(ATTACKER, Ping(), reply_within=1.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_peer)
            data, source = await peer.endpoint.receive()
            assert source == VICTIM
            request = decode(data)
            assert isinstance(request, Request)
            me = peer.identity.node_id

            def reply(txid: bytes, method: object = request.method) -> bytes:
                return encode_response(Response(txid, me, method, Pong()))  # type: ignore[arg-type]

            await peer.endpoint.send(reply(os.urandom(8)), VICTIM)  # wrong txid
            network.inject(reply(request.txid), ELSEWHERE, VICTIM)  # right txid, wrong address
            wrong_method = encode_response(
                Response(request.txid, me, Method.FIND_NODE, NodesReply((), bytes(16)))
            )
            await peer.endpoint.send(wrong_method, VICTIM)
            await trio.sleep(0.05)
            assert len(dht.table) == 0
            assert not outcome
            await peer.endpoint.send(reply(request.txid), VICTIM)  # the real one
            await peer.endpoint.send(reply(request.txid), VICTIM)  # and a duplicate
        [response] = outcome
        assert response is not None
        assert response.sender_id == peer.identity.node_id
        await trio.sleep(0.05)
        dropped = dht.stats.dropped
        assert dropped["unexpected_reply"] + dropped["duplicate_reply"] == 2  # wrong txid, copy
        assert dht.stats.dropped["wrong_address"] == 1
        assert dht.stats.dropped["wrong_method"] == 1
        assert dht.table.contacts() == [Contact(me, *ATTACKER)]


async def test_a_requester_enters_the_table_only_after_answering_our_ping() -> None:
    network = MemoryNetwork()
    async with victim(network) as dht:
        stranger = Raw(network, ATTACKER)
        await stranger.ask(FindNode(KEY))
        # The victim now PINGs the stranger to verify it; the stranger stays silent.
        with trio.fail_after(1):
            while True:
                data, _ = await stranger.endpoint.receive()
                message = decode(data)
                if isinstance(message, Request) and message.method == "ping":
                    break
        await trio.sleep(CONFIG.request_timeout * 2)
        assert len(dht.table) == 0
        # A node that does answer is added.
        friendly = Identity.generate()
        async with open_dht(
            friendly, transport=network.transport("10.0.0.4", 6000), config=CONFIG
        ) as other:
            await other.bootstrap([VICTIM])
            assert other.table.get(dht.node_id) is not None
            for _ in range(100):
                if dht.table.get(friendly.node_id) is not None:
                    break
                await trio.sleep(0.01)
            assert dht.table.get(friendly.node_id) is not None


async def test_replies_to_unverified_sources_are_not_amplified() -> None:
    network = MemoryNetwork()
    async with victim(network) as dht:
        for i in range(20):
            dht.table.update(Contact(os.urandom(32), "2001:db8::%x" % (i + 1), 4000), 0.0)
        stranger = Raw(network, ATTACKER)
        txid = os.urandom(8)
        small = encode_request(Request(txid, stranger.identity.node_id, FindNode(KEY)))
        await stranger.endpoint.send(small, VICTIM)
        reply, _ = await stranger.endpoint.receive()
        assert len(reply) <= CONFIG.amplification_factor * len(small)
        decoded = decode(reply)
        assert isinstance(decoded, Response)
        assert isinstance(decoded.body, NodesReply)
        assert 0 < len(decoded.body.nodes) < 20
        # A padded request earns the full answer.
        padded = await stranger.ask(FindNode(KEY))
        assert isinstance(padded, Response)
        assert isinstance(padded.body, NodesReply)
        assert len(padded.body.nodes) == 20


async def test_rate_limit_drops_excess_requests_per_ip() -> None:
    network = MemoryNetwork()
    config = DhtConfig(request_timeout=0.2, rate_limit_per_second=0.001, rate_limit_burst=3)
    async with open_dht(
        Identity.generate(), transport=network.transport(*VICTIM), config=config
    ) as dht:
        flooder = Raw(network, ATTACKER)
        for _ in range(10):
            data = encode_request(Request(os.urandom(8), flooder.identity.node_id, Ping()))
            await flooder.endpoint.send(data, VICTIM)
        await trio.sleep(0.05)
        assert dht.stats.requests["ping"] == 3
        assert dht.stats.dropped["rate_limited"] == 7
        # Another IP is not affected.
        other = Raw(network, ELSEWHERE)
        assert isinstance((await other.ask(Ping())), Response)
