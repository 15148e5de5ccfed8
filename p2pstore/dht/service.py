"""The DHT node on Trio: a thin driver of the sans-IO :class:`~p2pstore.dht.protocol.DhtNode`.

:class:`DhtService` runs a receive loop (datagrams into the node), a timer loop (sleeps until the
node's next deadline, then ticks it) and carries out the node's effects: it sends datagrams,
wakes the caller waiting for an operation's result, and writes the routing table in a worker
thread. Every decision (answers, lookups, timeouts, eviction, republishing, what to save) is the
node's; see ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import math
import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..errors import BootstrapError
from ..identity import Identity
from .config import DhtConfig
from .contact import Address, Contact, canonical_host
from .messages import RequestBody, Response
from .persist import TABLE_FILE_NAME, load_contacts, save_contacts
from .protocol import (
    EARLY_STOP_PROBES,
    BootstrapFailed,
    DhtNode,
    DhtStats,
    Effect,
    LookupResult,
    OperationDone,
    ProviderLookupResult,
    SaveTable,
    Send,
    ValueLookupResult,
)
from .records import ProviderRecord, SignedValue
from .routing import RoutingTable
from .transport import Transport, TransportWrapper, UdpTransport

log = logging.getLogger(__name__)

SHUTDOWN_SAVE_TIMEOUT = 5.0
"""Seconds the routing-table save on shutdown may take before it is abandoned."""

__all__ = [
    "EARLY_STOP_PROBES",
    "DhtService",
    "DhtStats",
    "LookupResult",
    "ProviderLookupResult",
    "ValueLookupResult",
    "open_dht",
]


class _Waiter:
    __slots__ = ("done", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.done = False
        self.result: object = None


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
        self._transport = transport
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self.node = DhtNode(
            self.node_id,
            transport.local_address,
            rng=random.SystemRandom(),
            now=trio.current_time(),
            config=self.config,
            persist=self._data_dir is not None,
        )
        """The sans-IO node this service drives (read it; feed it only through the service)."""
        self._waiters: dict[int, _Waiter] = {}
        self._nursery: trio.Nursery | None = None
        self._wakeup = trio.Event()
        self._sleeping_until = math.inf
        self._save_lock = trio.Lock()

    # Properties ------------------------------------------------------------------------------

    @property
    def stats(self) -> DhtStats:
        """The node's counters."""
        return self.node.stats

    @property
    def address(self) -> Address:
        """The (host, port) the transport is bound to."""
        return self._transport.local_address

    @property
    def table(self) -> RoutingTable:
        """The routing table (read it; do not modify it)."""
        return self.node.table

    def routing_table_size(self) -> int:
        """Contacts in the routing table."""
        return len(self.node.table)

    def contacts(self) -> list[Contact]:
        """Every contact in the routing table."""
        return self.node.table.contacts()

    def providing(self) -> dict[bytes, int]:
        """Keys this node announces (and republishes), with their TCP ports."""
        return self.node.providing()

    def stop_providing(self, key: bytes) -> None:
        """Stop republishing ``key``; its records expire on the other nodes after their TTL."""
        self.node.stop_providing(key)

    def stored_providers(self, key: bytes) -> list[ProviderRecord]:
        """Provider records of ``key`` that this node stores for others."""
        return self.node.stored_providers(key, trio.current_time())

    def stored_value(self, key: bytes) -> SignedValue | None:
        """The value this node stores under ``key``, if any."""
        return self.node.stored_value(key, trio.current_time())

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
                nursery.start_soon(self._timer_loop)
                self._nursery = nursery
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_SAVE_TIMEOUT):
                await self._save_table(self.node.table.contacts())

    async def _save_table(self, contacts: list[Contact]) -> None:
        if self._data_dir is None:
            return
        path = self._data_dir / TABLE_FILE_NAME
        async with self._save_lock:
            try:
                await trio.to_thread.run_sync(save_contacts, path, self.node_id, contacts)
            except OSError as exc:
                log.warning("could not save the DHT routing table to %s: %s", path, exc)

    async def _receive_loop(self) -> None:
        while True:
            data, source = await self._transport.receive()
            await self._apply(self.node.datagram_received(data, source, trio.current_time()))

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.node.next_deadline()
            self._sleeping_until = math.inf if deadline is None else deadline
            self._wakeup = trio.Event()
            with trio.move_on_at(self._sleeping_until):
                await self._wakeup.wait()
            now = trio.current_time()
            deadline = self.node.next_deadline()
            if deadline is not None and deadline <= now:
                await self._apply(self.node.tick(now))

    async def _apply(self, effects: list[Effect]) -> None:
        """Carry out the node's effects in order, then wake the timer if it must wake sooner."""
        for effect in effects:
            if isinstance(effect, Send):
                assert isinstance(effect.payload, bytes)
                if not await self._transport.send(effect.payload, effect.address):
                    await self._apply(self.node.send_failed(effect.txid, trio.current_time()))
            elif isinstance(effect, OperationDone):
                waiter = self._waiters.get(effect.op)
                if waiter is not None:
                    waiter.result = effect.result
                    waiter.done = True
                    waiter.event.set()
            elif isinstance(effect, SaveTable) and self._nursery is not None:
                self._nursery.start_soon(self._save_table, effect.contacts)
        deadline = self.node.next_deadline()
        if deadline is not None and deadline < self._sleeping_until:
            self._wakeup.set()

    async def _operate(self, started: tuple[int, list[Effect]]) -> object:
        """Wait for the result of the operation just started; cancelling abandons it."""
        op, effects = started
        waiter = self._waiters[op] = _Waiter()
        try:
            await self._apply(effects)
            await waiter.event.wait()
        finally:
            del self._waiters[op]
            if not waiter.done:
                self.node.cancel(op)
        return waiter.result

    # Requests and lookups --------------------------------------------------------------------

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
        result = await self._operate(
            self.node.start_request(
                address,
                body,
                trio.current_time(),
                expected_id=expected_id,
                reply_within=reply_within,
                pad=pad,
            )
        )
        assert result is None or isinstance(result, Response)
        return result

    async def lookup_nodes(self, target: bytes) -> LookupResult:
        """Iterative FIND_NODE: the k closest live nodes to ``target`` (never this node),
        with the lookup's hop count. Returns what it found if ``lookup_timeout`` expires."""
        result = await self._operate(self.node.start_lookup_nodes(target, trio.current_time()))
        assert isinstance(result, LookupResult)
        return result

    async def find_node(self, target: bytes) -> list[Contact]:
        """The k closest live nodes to ``target``, closest first (see :meth:`lookup_nodes`)."""
        return (await self.lookup_nodes(target)).contacts

    async def announce_provider(self, key: bytes, tcp_port: int) -> int:
        """Register this node (its source IP and ``tcp_port``) as a provider of ``key`` on the
        k closest nodes, and republish it every ``republish_interval`` until
        :meth:`stop_providing`. Returns how many nodes acknowledged."""
        result = await self._operate(self.node.start_announce(key, tcp_port, trio.current_time()))
        assert isinstance(result, int)
        return result

    async def lookup_providers(
        self, key: bytes, *, limit: int | None = None
    ) -> ProviderLookupResult:
        """Iterative GET_PROVIDERS. Collects providers from the k closest nodes, or stops as soon
        as at least ``limit`` distinct providers are known, returning every one known by then
        (one reply often names several). Records this node stores are included."""
        result = await self._operate(
            self.node.start_lookup_providers(key, trio.current_time(), limit=limit)
        )
        assert isinstance(result, ProviderLookupResult)
        return result

    async def find_providers(self, key: bytes, *, limit: int | None = None) -> list[ProviderRecord]:
        """Providers of ``key`` (see :meth:`lookup_providers`)."""
        return (await self.lookup_providers(key, limit=limit)).providers

    async def lookup_value(
        self, public_key: bytes, name: bytes, *, first: bool = False
    ) -> ValueLookupResult:
        """Iterative FIND_VALUE for the value ``name`` of ``public_key``: the correctly signed
        value with the highest ``seq`` among the k closest nodes (or the first one found, if
        ``first``)."""
        result = await self._operate(
            self.node.start_lookup_value(public_key, name, trio.current_time(), first=first)
        )
        assert isinstance(result, ValueLookupResult)
        return result

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
        if seq is not None:
            SignedValue.sign(self.identity, name, seq, value)  # checks the ranges up front

        def sign(chosen: int) -> SignedValue:
            return SignedValue.sign(self.identity, name, chosen, value)

        result = await self._operate(
            self.node.start_put_value(
                self.identity.public_key, name, value, sign, trio.current_time(), seq=seq
            )
        )
        assert isinstance(result, int)
        return result

    # Joining ---------------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> Address | None:
        try:
            return (canonical_host(host), port)
        except ValueError:
            pass
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
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

        PINGs them all (with ``store_retries`` retries), then looks up this node's own ID and a
        random ID in every non-full bucket to fill the table, and saves the table. Returns the
        routing table's size afterwards. Raises :class:`~p2pstore.errors.BootstrapError` if none
        answered.
        """
        wanted = list(addresses)
        resolved: list[Address] = []
        for host, port in wanted:
            address = await self._resolve(host, port)
            if address is not None:
                resolved.append(address)
        saved = await trio.to_thread.run_sync(self.saved_contacts)
        result = await self._operate(
            self.node.start_bootstrap(resolved, saved, trio.current_time())
        )
        if isinstance(result, BootstrapFailed):
            shown = ", ".join(f"{h}:{p}" for h, p in wanted) or "none given"
            raise BootstrapError(
                f"could not join the DHT: no bootstrap address answered ({shown}) "
                f"and none of {len(saved)} saved contacts answered"
            )
        assert isinstance(result, int)
        await self._save_table(self.node.table.contacts())
        return result


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
