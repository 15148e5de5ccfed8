"""The DHT node: a thin Trio layer moving datagrams between the transport and the sans-IO cores.

:class:`DhtService` owns a routing table, write tokens, a rate limiter and the provider/value
stores; it answers requests in its receive task and drives iterative lookups
(:class:`~p2pstore.dht.lookup.Lookup`) by sending requests and awaiting replies, each request in
its own cancel scope with ``request_timeout`` and each lookup within ``lookup_timeout``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import BootstrapError
from ..identity import Identity
from .config import DhtConfig
from .contact import Address, Contact, canonical_host, is_ipv6
from .lookup import Lookup
from .messages import (
    MAX_DATAGRAM_BYTES,
    TXID_MIN_BYTES,
    Ack,
    AddProvider,
    ErrorCode,
    ErrorReply,
    FindNode,
    FindValue,
    GetProviders,
    Method,
    NodesReply,
    Ping,
    Pong,
    ProvidersReply,
    ReplyBody,
    Request,
    RequestBody,
    Response,
    Store,
    ValueReply,
    decode,
    encode_request,
    encode_response,
    method_of,
)
from .persist import TABLE_FILE_NAME, load_contacts, save_contacts
from .ratelimit import RateLimiter
from .records import (
    MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
    ProviderRecord,
    ProviderStore,
    SignedValue,
    ValueStore,
    value_key,
)
from .routing import RoutingTable
from .tokens import TokenManager
from .transport import Transport, TransportWrapper, UdpTransport

log = logging.getLogger(__name__)

#: Sequential probes of look-ups that stop at the first record (see :class:`Lookup`): two cover
#: the usual case; a record that is absent costs at most two extra round trips.
EARLY_STOP_PROBES = 2

MAX_RECENT_VERIFICATIONS = 4096
"""Addresses remembered as recently PINGed for verification, so a chatty stranger costs one PING."""
VERIFY_RETRY_FACTOR = 10
"""A stranger is re-verified at most once per this many request timeouts."""
REPUBLISH_CONCURRENCY = 8
"""Keys re-announced at once: enough to get through thousands of chunk IDs per interval without
flooding the network (each announcement is a lookup plus k ADD_PROVIDERs)."""
SHUTDOWN_SAVE_TIMEOUT = 5.0
"""Seconds the routing-table save on shutdown may take before it is abandoned."""


@dataclass
class DhtStats:
    """Counters of one node. ``dropped`` maps a reason to the number of datagrams dropped."""

    sent: int = 0
    sent_bytes: int = 0
    send_failures: int = 0
    received: int = 0
    received_bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    """Requests answered, by method."""
    timeouts: int = 0
    lookups: int = 0


@dataclass(frozen=True)
class LookupResult:
    """Outcome of a node lookup: the k closest contacts that answered, closest first;
    ``rounds`` (hops) and ``messages`` (requests sent) as defined in :mod:`.lookup`."""

    contacts: list[Contact]
    rounds: int
    messages: int


@dataclass(frozen=True)
class ProviderLookupResult:
    """Outcome of a provider lookup."""

    providers: list[ProviderRecord]
    contacts: list[Contact]
    rounds: int
    messages: int


@dataclass(frozen=True)
class ValueLookupResult:
    """Outcome of a value lookup: the newest correctly signed value found, if any."""

    value: SignedValue | None
    contacts: list[Contact]
    rounds: int
    messages: int


@dataclass
class _Pending:
    address: Address
    method: Method
    expected_id: bytes | None
    event: trio.Event = field(default_factory=trio.Event)
    response: Response | None = None


class DhtService:
    """One Kademlia node on one datagram transport.

    Construct inside a Trio run, then ``await nursery.start(service.run)``; the public coroutines
    may be called once it has started. Cancelling ``run`` stops every task the service started;
    a public coroutine cancelled halfway leaves no request outstanding.
    """

    def __init__(
        self,
        identity: Identity,
        transport: Transport,
        *,
        config: DhtConfig | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.identity = identity
        self.node_id: bytes = identity.node_id
        self.config = config or DhtConfig()
        self.stats = DhtStats()
        self._transport = transport
        self._data_dir = Path(data_dir) if data_dir is not None else None
        now = trio.current_time()
        cfg = self.config
        self._table = RoutingTable(
            self.node_id,
            k=cfg.k,
            replacement_cache_size=cfg.replacement_cache_size,
            max_failures=cfg.max_failures,
            now=now,
        )
        self._tokens = TokenManager(cfg.token_rotation, now)
        self._limiter = RateLimiter(
            cfg.rate_limit_per_second, cfg.rate_limit_burst, cfg.rate_limit_max_sources
        )
        self._providers = ProviderStore(
            ttl=cfg.provider_ttl,
            max_keys=cfg.max_provider_keys,
            max_per_key=cfg.max_providers_per_key,
        )
        self._values = ValueStore(ttl=cfg.value_ttl, max_values=cfg.max_values)
        self._pending: dict[bytes, _Pending] = {}
        self._providing: dict[bytes, tuple[int, float]] = {}
        self._published: dict[bytes, tuple[SignedValue, float]] = {}
        self._verifying: set[bytes] = set()
        self._recently_verified: OrderedDict[Address, float] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self._ipv6 = is_ipv6(transport.local_address[0])
        self._pad_to = math.ceil(MAX_DATAGRAM_BYTES / cfg.amplification_factor)
        self._last_save = now

    # Properties ------------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The (host, port) the transport is bound to."""
        return self._transport.local_address

    @property
    def table(self) -> RoutingTable:
        """The routing table (read it; do not modify it)."""
        return self._table

    def routing_table_size(self) -> int:
        """Contacts in the routing table."""
        return len(self._table)

    def contacts(self) -> list[Contact]:
        """Every contact in the routing table."""
        return self._table.contacts()

    def providing(self) -> dict[bytes, int]:
        """Keys this node announces (and republishes), with their TCP ports."""
        return {key: port for key, (port, _) in self._providing.items()}

    def stop_providing(self, key: bytes) -> None:
        """Stop republishing ``key``; its records expire on the other nodes after their TTL."""
        self._providing.pop(key, None)

    def stored_providers(self, key: bytes) -> list[ProviderRecord]:
        """Provider records of ``key`` that this node stores for others."""
        return self._providers.get(key, trio.current_time())

    def stored_value(self, key: bytes) -> SignedValue | None:
        """The value this node stores under ``key``, if any."""
        return self._values.get(key, trio.current_time())

    # Running ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. ``task_status.started()`` once datagrams are being received.

        On cancellation every task the service started is cancelled and, with a data directory,
        the routing table is saved (shielded, at most ``SHUTDOWN_SAVE_TIMEOUT`` seconds).
        """
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._transport.run)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._maintenance_loop)
                self._nursery = nursery
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_SAVE_TIMEOUT):
                await self._save_table()

    async def _save_table(self) -> None:
        if self._data_dir is None:
            return
        path = self._data_dir / TABLE_FILE_NAME
        contacts = self._table.contacts()
        try:
            await trio.to_thread.run_sync(save_contacts, path, self.node_id, contacts)
        except OSError as exc:
            log.warning("could not save the DHT routing table to %s: %s", path, exc)
        self._last_save = trio.current_time()

    async def _maintenance_loop(self) -> None:
        cfg = self.config
        while True:
            await trio.sleep(cfg.maintenance_interval)
            now = trio.current_time()
            self._providers.expire(now)
            self._values.expire(now)
            await self._republish(now)
            for index in self._table.buckets_to_refresh(now, cfg.bucket_refresh_interval):
                await self.lookup_nodes(self._table.random_id_in_bucket(index))
                self._table.touch(index, trio.current_time())
            if trio.current_time() - self._last_save >= cfg.table_save_interval:
                await self._save_table()

    async def _republish(self, now: float) -> None:
        """Re-announce every provided key and re-store every published value that is due."""
        limiter = trio.CapacityLimiter(REPUBLISH_CONCURRENCY)

        async def announce(key: bytes, port: int) -> None:
            async with limiter:
                if key in self._providing:  # not stopped meanwhile
                    await self.announce_provider(key, port)

        async def store(key: bytes, record: SignedValue) -> None:
            async with limiter:
                await self._store_value(key, _same(record))

        async with trio.open_nursery() as nursery:
            for key, (port, due) in list(self._providing.items()):
                if due <= now:
                    nursery.start_soon(announce, key, port)
            for key, (record, due) in list(self._published.items()):
                if due <= now:
                    nursery.start_soon(store, key, record)

    # Datagrams -------------------------------------------------------------------------------

    async def _send(self, data: bytes, address: Address) -> bool:
        self.stats.sent += 1
        self.stats.sent_bytes += len(data)
        ok = await self._transport.send(data, address)
        if not ok:
            self.stats.send_failures += 1
        return ok

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1

    async def _receive_loop(self) -> None:
        while True:
            data, source = await self._transport.receive()
            self.stats.received += 1
            self.stats.received_bytes += len(data)
            message = decode(data)
            if not isinstance(message, Request | Response):
                self._drop(message.reason)
                continue
            if message.sender_id == self.node_id:
                self._drop("self")
                continue
            if isinstance(message, Request):
                await self._handle_request(message, source, len(data))
            else:
                self._handle_response(message, source)

    def _handle_response(self, response: Response, source: Address) -> None:
        pending = self._pending.get(response.txid)
        if pending is None:
            self._drop("unexpected_reply")
        elif pending.address != source:
            self._drop("wrong_address")
        elif pending.method is not response.method:
            self._drop("wrong_method")
        elif pending.expected_id is not None and pending.expected_id != response.sender_id:
            self._drop("wrong_node_id")
        elif pending.response is not None:
            self._drop("duplicate_reply")
        else:
            pending.response = response
            pending.event.set()

    async def _handle_request(self, request: Request, source: Address, size: int) -> None:
        now = trio.current_time()
        if not self._limiter.allow(source[0], now):
            self._drop("rate_limited")
            return
        self.stats.requests[request.method.value] += 1
        body = self._answer(request, source, now)
        known = self._table.by_address(source)
        verified = known is not None and known.node_id == request.sender_id
        budget = (
            MAX_DATAGRAM_BYTES
            if verified
            else min(MAX_DATAGRAM_BYTES, self.config.amplification_factor * size)
        )
        try:
            data = encode_response(
                Response(request.txid, self.node_id, request.method, body), budget=budget
            )
        except ValueError:  # a reply field out of range: a bug of ours, never the peer's input
            log.exception("could not encode a reply to %s", request.method)
            self._drop("encode_error")
            return
        if len(data) > budget:
            self._drop("amplification")
        else:
            await self._send(data, source)
        if not verified:
            self._maybe_verify(Contact(request.sender_id, source[0], source[1]), now)

    def _closest_for(self, target: bytes, requester: bytes) -> tuple[Contact, ...]:
        nodes = self._table.closest(target, self.config.k + 1)
        return tuple(c for c in nodes if c.node_id != requester)[: self.config.k]

    def _answer(self, request: Request, source: Address, now: float) -> ReplyBody:
        body = request.body
        host = source[0]
        if isinstance(body, Ping):
            return Pong()
        if isinstance(body, FindNode):
            nodes = self._closest_for(body.target, request.sender_id)
            return NodesReply(nodes, self._tokens.issue(host, now))
        if isinstance(body, GetProviders):
            nodes = self._closest_for(body.key, request.sender_id)
            records = reversed(self._providers.get(body.key, now))  # freshest first
            providers = [Contact(r.node_id, r.host, r.tcp_port) for r in records]
            own = self._providing.get(body.key)
            if own is not None and all(p.node_id != self.node_id for p in providers):
                # A node that provides the key says so itself; the requester reads this entry
                # with the reply's source IP (we may not know the address others see us at).
                providers.insert(0, Contact(self.node_id, self.address[0], own[0]))
            return ProvidersReply(nodes, self._tokens.issue(host, now), tuple(providers))
        if isinstance(body, FindValue):
            nodes = self._closest_for(body.key, request.sender_id)
            value = self._values.get(body.key, now)
            return ValueReply(nodes, self._tokens.issue(host, now), value)
        if not self._tokens.check(host, body.token, now):
            self._drop("bad_token")
            return ErrorReply(ErrorCode.BAD_TOKEN, "invalid or expired write token")
        if isinstance(body, Store):
            outcome = self._values.put(body.value, now)
        else:
            outcome = self._providers.add(body.key, request.sender_id, host, body.tcp_port, now)
        if outcome.accepted:
            return Ack()
        self._drop(f"refused_{outcome.value}")
        return ErrorReply(ErrorCode.REFUSED, f"record refused: {outcome.value}")

    # Requests --------------------------------------------------------------------------------

    async def request(
        self,
        address: Address,
        body: RequestBody,
        *,
        expected_id: bytes | None = None,
        reply_within: float | None = None,
        pad: bool = False,
    ) -> Response | None:
        """Send one request to ``address`` and wait for its reply.

        Returns the reply (possibly an :class:`ErrorReply` body), or ``None`` if none matching
        (same address, transaction ID and method, and node ID if ``expected_id``) arrived within
        ``reply_within`` seconds (default ``request_timeout``). A replying node is added to the
        routing table; a silent ``expected_id`` is marked failed there. Cancellation abandons
        the request.
        """
        txid = os.urandom(TXID_MIN_BYTES)
        while txid in self._pending:
            txid = os.urandom(TXID_MIN_BYTES)
        data = encode_request(Request(txid, self.node_id, body), pad_to=self._pad_to if pad else 0)
        pending = _Pending(address, method_of(body), expected_id)
        self._pending[txid] = pending
        try:
            with trio.move_on_after(
                reply_within if reply_within is not None else self.config.request_timeout
            ):
                if await self._send(data, address):
                    await pending.event.wait()
        finally:
            del self._pending[txid]
        response = pending.response
        if response is None:
            self.stats.timeouts += 1
            if expected_id is not None:
                self._table.mark_failed(expected_id)
            return None
        self._add_verified(Contact(response.sender_id, address[0], address[1]))
        return response

    def _add_verified(self, contact: Contact) -> None:
        if self._ipv6 != is_ipv6(contact.host):
            return
        to_ping = self._table.update(contact, trio.current_time())
        if to_ping is not None:
            if self._nursery is None:
                self._table.abandon_ping(to_ping.node_id)
            else:
                self._nursery.start_soon(self._check_oldest, to_ping)

    async def _check_oldest(self, contact: Contact) -> None:
        resolved = False
        try:
            response = await self.request(contact.address, Ping(), expected_id=contact.node_id)
            self._table.ping_result(contact.node_id, response is not None, trio.current_time())
            resolved = True
        finally:
            if not resolved:
                self._table.abandon_ping(contact.node_id)

    def _maybe_verify(self, contact: Contact, now: float) -> None:
        """PING a stranger that sent us a request, so it can enter the table if it answers.

        Only when its bucket has room: in a full bucket a verified stranger could at best wait in
        the replacement cache, which our own lookups fill anyway, so the PING (two datagrams per
        requester, the bulk of a lookup's traffic in a large network) would buy nothing.
        """
        if (
            self._nursery is None
            or not self._table.has_room_for(contact.node_id)
            or self._table.get(contact.node_id) == contact  # known at this very address
            or contact.node_id in self._verifying
            or len(self._verifying) >= self.config.max_pending_verifications
            or self._ipv6 != is_ipv6(contact.host)
        ):
            return
        last = self._recently_verified.get(contact.address)
        if last is not None and now - last < VERIFY_RETRY_FACTOR * self.config.request_timeout:
            return
        self._recently_verified[contact.address] = now
        self._recently_verified.move_to_end(contact.address)
        while len(self._recently_verified) > MAX_RECENT_VERIFICATIONS:
            self._recently_verified.popitem(last=False)
        self._verifying.add(contact.node_id)
        self._nursery.start_soon(self._verify, contact)

    async def _verify(self, contact: Contact) -> None:
        try:
            await self.request(contact.address, Ping(), expected_id=contact.node_id)
        finally:
            self._verifying.discard(contact.node_id)

    async def _request_with_retries(self, contact: Contact, body: RequestBody) -> Response | None:
        for _ in range(self.config.store_retries + 1):
            response = await self.request(contact.address, body, expected_id=contact.node_id)
            if response is not None:
                return response
        return None

    async def _send_to_all(
        self, contacts: Sequence[Contact], make_body: Callable[[Contact], RequestBody | None]
    ) -> int:
        """Send a write request to each contact concurrently; the number acknowledged."""
        acked = 0

        async def one(contact: Contact, body: RequestBody) -> None:
            nonlocal acked
            response = await self._request_with_retries(contact, body)
            if response is not None and isinstance(response.body, Ack):
                acked += 1

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                body = make_body(contact)
                if body is not None:
                    nursery.start_soon(one, contact, body)
        return acked

    # Lookups ---------------------------------------------------------------------------------

    def _accept(self, contact: Contact) -> bool:
        return self._ipv6 == is_ipv6(contact.host)

    async def _lookup(
        self,
        target: bytes,
        body: RequestBody,
        on_reply: Callable[[Contact, ReplyBody], bool] | None = None,
        *,
        probes: int = 0,
    ) -> Lookup:
        """Run an iterative lookup; ``on_reply`` sees every reply and returns ``True`` to stop.

        ``probes``: see :class:`Lookup` (for look-ups that stop at the first record found).
        """
        self.stats.lookups += 1
        now = trio.current_time()
        if target != self.node_id:
            self._table.touch(self._table.bucket_index(target), now)
        lookup = Lookup(
            target,
            self._table.closest(target, self.config.k),
            k=self.config.k,
            alpha=self.config.alpha,
            own_id=self.node_id,
            accept=self._accept,
            probes=probes,
        )
        send_channel, receive_channel = trio.open_memory_channel[tuple[Contact, Response | None]](
            math.inf
        )

        async def query(contact: Contact) -> None:
            response = await self.request(
                contact.address, body, expected_id=contact.node_id, pad=True
            )
            send_channel.send_nowait((contact, response))

        with trio.move_on_after(self.config.lookup_timeout):
            async with trio.open_nursery() as nursery:
                stop = False
                while not stop:
                    for contact, _round in lookup.next_requests():
                        nursery.start_soon(query, contact)
                    if lookup.done or lookup.in_flight == 0:
                        break
                    contact, response = await receive_channel.receive()
                    if response is None or isinstance(response.body, ErrorReply):
                        lookup.on_failure(contact.node_id)
                        continue
                    reply = response.body
                    nodes = (
                        reply.nodes
                        if isinstance(reply, NodesReply | ProvidersReply | ValueReply)
                        else ()
                    )
                    lookup.on_reply(contact.node_id, nodes)
                    if on_reply is not None and on_reply(contact, reply):
                        stop = True
                nursery.cancel_scope.cancel()
        return lookup

    async def lookup_nodes(self, target: bytes) -> LookupResult:
        """Iterative FIND_NODE: the k closest live nodes to ``target`` (never this node),
        with the lookup's hop count. Returns what it found if ``lookup_timeout`` expires."""
        lookup = await self._lookup(target, FindNode(target))
        return LookupResult(lookup.result(), lookup.rounds, lookup.messages)

    async def find_node(self, target: bytes) -> list[Contact]:
        """The k closest live nodes to ``target``, closest first (see :meth:`lookup_nodes`)."""
        return (await self.lookup_nodes(target)).contacts

    async def announce_provider(self, key: bytes, tcp_port: int) -> int:
        """Register this node (its source IP and ``tcp_port``) as a provider of ``key`` on the
        k closest nodes, and republish it every ``republish_interval`` until
        :meth:`stop_providing`. Returns how many nodes acknowledged."""
        if len(key) != 32 or not 1 <= tcp_port <= 0xFFFF:
            raise ValueError("keys are 32 bytes and TCP ports 1..65535")
        self._providing[key] = (tcp_port, trio.current_time() + self.config.republish_interval)
        tokens: dict[bytes, bytes] = {}

        def on_reply(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, NodesReply):
                tokens[contact.node_id] = reply.token
            return False

        lookup = await self._lookup(key, FindNode(key), on_reply)

        def make(contact: Contact) -> RequestBody | None:
            token = tokens.get(contact.node_id)
            return None if token is None else AddProvider(token, key, tcp_port)

        return await self._send_to_all(lookup.result(), make)

    async def lookup_providers(
        self, key: bytes, *, limit: int | None = None
    ) -> ProviderLookupResult:
        """Iterative GET_PROVIDERS. Collects providers from the k closest nodes, or stops as soon
        as at least ``limit`` distinct providers are known, returning every one known by then
        (one reply often names several). Records this node stores are included."""
        now = trio.current_time()
        found: dict[bytes, ProviderRecord] = {
            r.node_id: r for r in self._providers.get(key, now) if r.node_id != self.node_id
        }

        def enough() -> bool:
            return limit is not None and len(found) >= limit

        def on_reply(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, ProvidersReply):
                for p in reply.providers:
                    if p.node_id != self.node_id and p.node_id not in found:
                        # The replier naming itself: its address is where the reply came from.
                        host = contact.host if p.node_id == contact.node_id else p.host
                        found[p.node_id] = ProviderRecord(key, p.node_id, host, p.port)
            return enough()

        if enough():
            return ProviderLookupResult(list(found.values()), [], 0, 0)
        probes = EARLY_STOP_PROBES if limit is not None else 0
        lookup = await self._lookup(key, GetProviders(key), on_reply, probes=probes)
        providers = list(found.values())
        return ProviderLookupResult(providers, lookup.result(), lookup.rounds, lookup.messages)

    async def find_providers(self, key: bytes, *, limit: int | None = None) -> list[ProviderRecord]:
        """Providers of ``key`` (see :meth:`lookup_providers`)."""
        return (await self.lookup_providers(key, limit=limit)).providers

    async def lookup_value(
        self, public_key: bytes, name: bytes, *, first: bool = False
    ) -> ValueLookupResult:
        """Iterative FIND_VALUE for the value ``name`` of ``public_key``: the correctly signed
        value with the highest ``seq`` among the k closest nodes (or the first one found, if
        ``first``)."""
        key = value_key(public_key, name)
        best = self._values.get(key, trio.current_time())

        def on_reply(contact: Contact, reply: ReplyBody) -> bool:
            nonlocal best
            if isinstance(reply, ValueReply) and reply.value is not None:
                v = reply.value
                if v.key == key and (best is None or v.seq > best.seq) and v.verify():
                    best = v
            return first and best is not None

        if first and best is not None:
            return ValueLookupResult(best, [], 0, 0)
        probes = EARLY_STOP_PROBES if first else 0
        lookup = await self._lookup(key, FindValue(key), on_reply, probes=probes)
        return ValueLookupResult(best, lookup.result(), lookup.rounds, lookup.messages)

    async def get_value(
        self, public_key: bytes, name: bytes, *, first: bool = False
    ) -> bytes | None:
        """The payload of the newest value ``name`` of ``public_key``, or ``None``."""
        found = (await self.lookup_value(public_key, name, first=first)).value
        return None if found is None else found.value

    async def put_value(self, name: bytes, value: bytes, seq: int | None = None) -> int:
        """Sign ``value`` under ``name`` with this node's key and store it on the k closest
        nodes (one FIND_VALUE lookup, then STOREs); republished every ``republish_interval``.
        ``seq`` defaults to one more than the highest sequence number seen (locally and in the
        lookup); a ``seq`` not above what nodes hold is refused by them. Returns how many nodes
        acknowledged.

        Raises :class:`ValueError` if ``name``/``value``/``seq`` are out of range.
        """
        if len(name) > MAX_NAME_BYTES or len(value) > MAX_VALUE_BYTES:
            raise ValueError(f"names are at most {MAX_NAME_BYTES} bytes, values {MAX_VALUE_BYTES}")
        key = value_key(self.identity.public_key, name)
        seen: list[int] = []
        local = self._values.get(key, trio.current_time())
        if local is not None:
            seen.append(local.seq)
        if key in self._published:
            seen.append(self._published[key][0].seq)
        if seq is None:

            def choose(found: list[SignedValue]) -> SignedValue:
                best = max([*seen, *(v.seq for v in found)], default=-1)
                return SignedValue.sign(self.identity, name, best + 1, value)

            return await self._store_value(key, choose)
        return await self._store_value(
            key, _same(SignedValue.sign(self.identity, name, seq, value))
        )

    async def _store_value(
        self, key: bytes, choose: Callable[[list[SignedValue]], SignedValue]
    ) -> int:
        """Look up ``key`` (collecting write tokens and the valid values held), let ``choose``
        make the record from those values, keep it for republishing and STORE it."""
        tokens: dict[bytes, bytes] = {}
        found: list[SignedValue] = []

        def on_reply(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, ValueReply):
                tokens[contact.node_id] = reply.token
                v = reply.value
                if v is not None and v.key == key and v.verify():
                    found.append(v)
            return False

        lookup = await self._lookup(key, FindValue(key), on_reply)
        record = choose(found)
        now = trio.current_time()
        self._values.put(record, now)
        self._published[key] = (record, now + self.config.republish_interval)

        def make(contact: Contact) -> RequestBody | None:
            token = tokens.get(contact.node_id)
            return None if token is None else Store(token, record)

        return await self._send_to_all(lookup.result(), make)

    # Joining ---------------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> Address | None:
        try:
            return (canonical_host(host), port)
        except ValueError:
            pass
        family = socket.AF_INET6 if self._ipv6 else socket.AF_INET
        try:
            infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        except OSError:
            return None
        for info in infos:
            sockaddr = info[4]
            return (canonical_host(str(sockaddr[0])), int(sockaddr[1]))
        return None

    def saved_contacts(self) -> list[Contact]:
        """Contacts saved in the data directory by an earlier run (unverified)."""
        if self._data_dir is None:
            return []
        return load_contacts(self._data_dir / TABLE_FILE_NAME, self.node_id)

    async def bootstrap(self, addresses: Iterable[tuple[str, int]] = ()) -> int:
        """Join the network through ``addresses`` and/or the contacts saved by an earlier run.

        PINGs them all (with ``store_retries`` retries), then looks up this node's own ID to
        fill the table. Returns the routing table's size afterwards. Raises
        :class:`~p2pstore.errors.BootstrapError` if none answered.
        """
        wanted = list(addresses)
        targets: dict[Address, None] = {}
        for host, port in wanted:
            resolved = await self._resolve(host, port)
            if resolved is not None and resolved != self.address:
                targets[resolved] = None
        saved = await trio.to_thread.run_sync(self.saved_contacts)
        for contact in saved:
            if self._accept(contact):
                targets[contact.address] = None

        async def ping(address: Address) -> None:
            for _ in range(self.config.store_retries + 1):
                if await self.request(address, Ping()) is not None:
                    return

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(ping, address)
        if len(self._table) == 0:
            shown = ", ".join(f"{h}:{p}" for h, p in wanted) or "none given"
            raise BootstrapError(
                f"could not join the DHT: no bootstrap address answered ({shown}) "
                f"and none of {len(saved)} saved contacts answered"
            )
        await self.lookup_nodes(self.node_id)
        await self._fill_table()
        await self._save_table()
        return len(self._table)

    async def _fill_table(self) -> None:
        """Look up a random ID in every non-full bucket beyond the nearest neighbour, so a new
        node knows the whole ID space, not just its own neighbourhood (paper, section 2.3);
        ``alpha`` look-ups at a time."""
        limit = trio.Semaphore(self.config.alpha)

        async def refresh(index: int) -> None:
            async with limit:
                await self.lookup_nodes(self._table.random_id_in_bucket(index))
                self._table.touch(index, trio.current_time())

        async with trio.open_nursery() as nursery:
            for index in self._table.sparse_buckets():
                nursery.start_soon(refresh, index)


def _same(record: SignedValue) -> Callable[[list[SignedValue]], SignedValue]:
    """A record chooser for :meth:`DhtService._store_value` that ignores what it found."""

    def choose(_found: list[SignedValue]) -> SignedValue:
        return record

    return choose


@asynccontextmanager
async def open_dht(
    identity: Identity,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    config: DhtConfig | None = None,
    data_dir: Path | None = None,
    transport_wrapper: TransportWrapper | None = None,
    transport: Transport | None = None,
) -> AsyncIterator[DhtService]:
    """A running :class:`DhtService` on a UDP socket bound to ``host:port`` (or on
    ``transport`` if given, e.g. an in-memory one), optionally wrapped by ``transport_wrapper``.

    The service's tasks run in a nursery owned by this context; leaving it cancels them all,
    saves the routing table (with ``data_dir``) and closes the transport. Raises
    :class:`OSError` if the address cannot be bound.
    """
    base = transport if transport is not None else await UdpTransport.bind(host, port)
    wrapped = transport_wrapper(base) if transport_wrapper is not None else base
    try:
        async with trio.open_nursery() as nursery:
            service = DhtService(identity, wrapped, config=config, data_dir=data_dir)
            await nursery.start(service.run)
            try:
                yield service
            finally:
                nursery.cancel_scope.cancel()
    finally:
        wrapped.close()
