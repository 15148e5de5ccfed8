"""The Kademlia node's logic, sans-IO: fed datagrams, operation starts and timer ticks, it returns
effects.

A :class:`DhtNode` never touches a socket, a clock, a task or ``os.urandom``. Its inputs, each
with the current time ``now`` (seconds on any monotonic clock):

- :meth:`DhtNode.datagram_received` (or :meth:`DhtNode.message_received` for an already decoded
  message, as the simulator does),
- ``start_*`` methods that begin an operation (a lookup, an announcement, a bootstrap, one raw
  request...) and return its operation ID,
- :meth:`DhtNode.tick` once :meth:`DhtNode.next_deadline` has passed,
- :meth:`DhtNode.send_failed` when the transport refused a datagram, :meth:`DhtNode.cancel` when
  the caller abandons an operation.

Each returns a list of effects, to be carried out in order: :class:`Send` (a datagram),
:class:`OperationDone` (an operation's result), :class:`SaveTable` (the routing table's contacts
to write to disk). Randomness (transaction IDs, token secrets, refresh targets) comes from the
injected :class:`random.Random`. :class:`~p2pstore.dht.service.DhtService` is the Trio driver of
this class; ``benchmarks/sim_dht.py`` drives the same class in a discrete-event simulation.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .config import DhtConfig
from .contact import Address, Contact, is_ipv6
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
    Rejection,
    ReplyBody,
    Request,
    RequestBody,
    Response,
    Store,
    ValueReply,
    decode,
    encode_request,
    encode_response,
    estimated_size,
    method_of,
    shrink_reply,
)
from .ratelimit import RateLimiter
from .records import (
    MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
    ProviderRecord,
    ProviderStore,
    SignedValue,
    ValueStore,
    select_providers,
    value_key,
)
from .routing import RoutingTable
from .tokens import TokenManager

#: Probes of look-ups that stop at the first record (see :class:`Lookup`), ``PROBE_WIDTH`` at a
#: time: two waves cover the usual case; a record that is absent costs at most two extra round
#: trips. Three at once rather than one: at 100,000 nodes a probe holds the record only about
#: half the time, and a lost or slow probe would cost a round trip; three cut the median look-up
#: from 207 to about 160 ms in the simulator (benchmarks/sim_dht.py) for two more requests.
EARLY_STOP_PROBES = 6
PROBE_WIDTH = 3

MAX_RECENT_VERIFICATIONS = 4096
"""Addresses remembered as recently PINGed for verification, so a chatty stranger costs one PING."""
VERIFY_RETRY_FACTOR = 10
"""A stranger is re-verified at most once per this many request timeouts."""
REPUBLISH_CONCURRENCY = 8
"""Keys re-announced at once: enough to get through thousands of chunk IDs per interval without
flooding the network (each announcement is a lookup plus k ADD_PROVIDERs)."""
STALL_FLOOR = 0.2
"""Shortest stall timeout (seconds): below it, a busy event loop (or a loaded host) would pass
for slow peers and every request would stall, each stall sending another request."""
MAINTENANCE_MAX_SLEEP = 10
"""A node with nothing due sleeps at most this many ``maintenance_interval``s between rounds."""
INTERNAL = 0
"""Operation ID of the node's own background work (maintenance, eviction and verification PINGs):
never reported, never cancelled."""

Message = Request | Response
Payload = bytes | Message
"""What a :class:`Send` carries: datagram bytes (:class:`WireCodec`) or the message itself
(:class:`ObjectCodec`, for the simulator)."""


# Results ------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class BootstrapFailed:
    """Result of a bootstrap in which no address and no saved contact answered."""

    tried: int


# Effects ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``payload`` (``size`` bytes on the wire) to ``address``. ``txid`` is set for requests:
    if the transport refuses the datagram, report it with :meth:`DhtNode.send_failed`."""

    address: Address
    payload: Payload
    size: int
    txid: bytes | None = None


@dataclass(frozen=True, slots=True)
class OperationDone:
    """Operation ``op`` (from a ``start_*`` method) finished with ``result``."""

    op: int
    result: object


@dataclass(frozen=True, slots=True)
class SaveTable:
    """Write these routing-table contacts to disk (they changed, or a periodic save is due)."""

    contacts: list[Contact]


Effect = Send | OperationDone | SaveTable


# Codecs -------------------------------------------------------------------------------------


class Codec(Protocol):
    """Turns outgoing messages into payloads and says their size on the wire."""

    def request(self, request: Request, pad_to: int) -> tuple[Payload, int]:
        """The payload of ``request``, padded to at least ``pad_to`` bytes."""
        ...

    def response(self, response: Response, budget: int) -> tuple[Payload, int]:
        """The payload of ``response`` trimmed towards ``budget`` bytes (providers first, then
        the farthest contacts, then a value), and its size (which may still exceed ``budget``).
        Raises :class:`ValueError` if a field is out of range."""
        ...


class WireCodec:
    """msgpack datagrams exactly as ``docs/protocol.md`` specifies (the production codec)."""

    def request(self, request: Request, pad_to: int) -> tuple[Payload, int]:
        data = encode_request(request, pad_to=pad_to)
        return data, len(data)

    def response(self, response: Response, budget: int) -> tuple[Payload, int]:
        data = encode_response(response, budget=budget)
        return data, len(data)


class ObjectCodec:
    """Passes messages as objects, with their sizes estimated (for the simulator, which skips
    msgpack). Replies are trimmed by the same rule as :func:`encode_response`."""

    def request(self, request: Request, pad_to: int) -> tuple[Payload, int]:
        return request, max(pad_to, estimated_size(request))

    def response(self, response: Response, budget: int) -> tuple[Payload, int]:
        size = estimated_size(response)
        while size > budget:
            smaller = shrink_reply(response.body, size - budget)
            if smaller is None:
                break
            response = Response(response.txid, response.sender_id, response.method, smaller)
            size = estimated_size(response)
        return response, size


# Internals ----------------------------------------------------------------------------------


class _Requester(Protocol):
    def on_response(self, pending: _Pending, response: Response | None, now: float) -> None: ...


class _Pending:
    """One request awaiting its reply."""

    __slots__ = ("address", "expected_id", "method", "op", "owner", "sent_at", "timer", "txid")

    def __init__(
        self,
        txid: bytes,
        address: Address,
        method: Method,
        expected_id: bytes | None,
        owner: _Requester,
        op: int,
        timer: list[object],
        sent_at: float,
    ) -> None:
        self.txid = txid
        self.sent_at = sent_at
        self.address = address
        self.method = method
        self.expected_id = expected_id
        self.owner = owner
        self.op = op
        self.timer = timer


class _Call:
    """One request, retried up to ``attempts`` times while unanswered; then ``then(response)``."""

    def __init__(
        self,
        node: DhtNode,
        op: int,
        address: Address,
        body: RequestBody,
        *,
        expected_id: bytes | None,
        attempts: int,
        timeout: float,
        then: Callable[[Response | None, float], None],
        now: float,
    ) -> None:
        self.node = node
        self.op = op
        self.address = address
        self.body = body
        self.expected_id = expected_id
        self.attempts = attempts
        self.timeout = timeout
        self.then = then
        self._send(now)

    def _send(self, now: float) -> None:
        self.attempts -= 1
        self.node._send_request(
            self.address,
            self.body,
            expected_id=self.expected_id,
            pad=False,
            owner=self,
            op=self.op,
            timeout=self.timeout,
            now=now,
        )

    def on_response(self, pending: _Pending, response: Response | None, now: float) -> None:
        if not self.node._alive(self.op):
            return
        if response is None and self.attempts > 0:
            self._send(now)
        else:
            self.then(response, now)


class _Broadcast:
    """A write request to each contact at once, each with retries; then ``then(acked)``."""

    def __init__(
        self,
        node: DhtNode,
        op: int,
        items: Sequence[tuple[Contact, RequestBody]],
        then: Callable[[int, float], None],
        now: float,
    ) -> None:
        self.then = then
        self.acked = 0
        self.left = len(items)
        if not items:
            then(0, now)
            return
        for contact, body in items:
            _Call(
                node,
                op,
                contact.address,
                body,
                expected_id=contact.node_id,
                attempts=node.config.store_retries + 1,
                timeout=node.config.request_timeout,
                then=self._one,
                now=now,
            )

    def _one(self, response: Response | None, now: float) -> None:
        if response is not None and isinstance(response.body, Ack):
            self.acked += 1
        self.left -= 1
        if self.left == 0:
            self.then(self.acked, now)


ReplyHook = Callable[[Contact, ReplyBody], bool]
"""Sees every reply of a lookup; returns ``True`` to stop the lookup there."""


class _LookupRun:
    """One iterative lookup (see :class:`~p2pstore.dht.lookup.Lookup`), within
    ``lookup_timeout``; then ``then(lookup)``."""

    def __init__(
        self,
        node: DhtNode,
        op: int,
        target: bytes,
        body: RequestBody,
        hook: ReplyHook | None,
        probes: int,
        then: Callable[[Lookup, float], None],
        now: float,
    ) -> None:
        self.node = node
        self.op = op
        self.body = body
        self.hook = hook
        self.then = then
        self.finished = False
        self.txids: set[bytes] = set()
        self.stall_timers: dict[bytes, list[object]] = {}
        self.retries: dict[bytes, int] = {}
        """Requests re-sent to a candidate after a timeout, by node ID."""
        cfg = node.config
        node.stats.lookups += 1
        if target != node.node_id:
            node.table.touch(node.table.bucket_index(target), now)
        self.lookup = Lookup(
            target,
            node.table.closest(target, cfg.k),
            k=cfg.k,
            alpha=cfg.alpha,
            own_id=node.node_id,
            accept=node._accept,
            probes=probes,
            probe_width=PROBE_WIDTH,
        )
        node._schedule(now + cfg.lookup_timeout, self._expired, None)
        self._advance(now)

    def _advance(self, now: float) -> None:
        lookup = self.lookup
        for contact, _round in lookup.next_requests():
            self._ask(contact.address, contact.node_id, now)
        if lookup.done or lookup.outstanding == 0:
            self._finish(now)

    def _ask(self, address: Address, node_id: bytes, now: float) -> None:
        txid = self.node._send_request(
            address,
            self.body,
            expected_id=node_id,
            pad=True,
            owner=self,
            op=self.op,
            timeout=self.node.config.request_timeout,
            now=now,
        )
        self.txids.add(txid)
        self.stall_timers[txid] = self.node._schedule(
            now + self.node.stall_timeout(), self._stalled, txid
        )

    def _stalled(self, now: float, txid: object) -> None:
        """A request slower than the node's stall timeout stops holding up the lookup."""
        assert isinstance(txid, bytes)
        pending = self.node._pending.get(txid)
        if self.finished or pending is None or not self.node._alive(self.op):
            return
        assert pending.expected_id is not None
        if self.lookup.outstanding - self.lookup.in_flight >= self.node.config.alpha:
            return  # at most alpha stalled requests: a lookup never has over 2 alpha out
        self.lookup.on_stalled(pending.expected_id)
        self._advance(now)

    def on_response(self, pending: _Pending, response: Response | None, now: float) -> None:
        timer = self.stall_timers.pop(pending.txid, None)
        if timer is not None:
            timer[2] = None  # answered or failed: no stall to declare (and no wake-up)
        if self.finished or not self.node._alive(self.op):
            return
        node_id = pending.expected_id
        assert node_id is not None
        if response is None and self.retries.get(node_id, 0) < self.node.config.lookup_retries:
            # Unanswered: ask again before giving the candidate up. Without this, a lost
            # datagram drops a live node from the result for good (at 20 % loss a third of the
            # requests fail, and a lookup could end with half of the k closest).
            self.retries[node_id] = self.retries.get(node_id, 0) + 1
            self.txids.discard(pending.txid)
            self._ask(pending.address, node_id, now)
            return
        if response is None or isinstance(response.body, ErrorReply):
            self.lookup.on_failure(node_id)
        else:
            reply = response.body
            nodes = (
                reply.nodes if isinstance(reply, NodesReply | ProvidersReply | ValueReply) else ()
            )
            self.lookup.on_reply(node_id, nodes)
            if self.hook is not None and self.hook(Contact(node_id, *pending.address), reply):
                self._finish(now)
                return
        self._advance(now)

    def _expired(self, now: float, _arg: object) -> None:
        if not self.finished and self.node._alive(self.op):
            self._finish(now)

    def _finish(self, now: float) -> None:
        self.finished = True
        for timer in self.stall_timers.values():
            timer[2] = None
        self.stall_timers.clear()
        self.node._abandon(self.txids)
        self.then(self.lookup, now)


class _Limited:
    """Runs queued jobs (each a function of ``(now, done)``) ``limit`` at a time; then
    ``then()``."""

    def __init__(
        self,
        jobs: Iterable[Callable[[float, Callable[[float], None]], None]],
        limit: int,
        then: Callable[[float], None],
        now: float,
    ) -> None:
        self.jobs = list(jobs)
        self.jobs.reverse()
        self.running = 0
        self.then = then
        self.finished = False
        for _ in range(limit):
            self._next(now)
        if self.running == 0 and not self.finished:
            self.finished = True
            then(now)

    def _next(self, now: float) -> None:
        if self.jobs:
            job = self.jobs.pop()
            self.running += 1
            job(now, self._done)

    def _done(self, now: float) -> None:
        self.running -= 1
        self._next(now)
        if self.running == 0 and not self.jobs and not self.finished:
            self.finished = True
            self.then(now)


# The node -----------------------------------------------------------------------------------


class DhtNode:
    """One Kademlia node's state and decisions.

    ``node_id`` and ``address`` (the UDP address it is bound to) identify it; ``rng`` supplies
    every random choice (use :class:`random.SystemRandom` in production: transaction IDs and token
    secrets must be unpredictable). ``codec`` turns messages into payloads (default
    :class:`WireCodec`). With ``persist`` false no :class:`SaveTable` effect is ever returned.
    """

    def __init__(
        self,
        node_id: bytes,
        address: Address,
        *,
        rng: random.Random,
        now: float,
        config: DhtConfig | None = None,
        codec: Codec | None = None,
        persist: bool = True,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.config = cfg = config or DhtConfig()
        self.rng = rng
        self.codec: Codec = codec or WireCodec()
        self.persist = persist
        self.stats = DhtStats()
        self.table = RoutingTable(
            node_id,
            k=cfg.k,
            replacement_cache_size=cfg.replacement_cache_size,
            max_failures=cfg.max_failures,
            now=now,
            far_bucket_sizes=cfg.far_bucket_sizes,
        )
        self._tokens = TokenManager(cfg.token_rotation, now, rng=rng)
        self._limiter = RateLimiter(
            cfg.rate_limit_per_second, cfg.rate_limit_burst, cfg.rate_limit_max_sources
        )
        self._providers = ProviderStore(
            ttl=cfg.provider_ttl,
            max_keys=cfg.max_provider_keys,
            max_per_key=cfg.max_providers_per_key,
            max_per_ip=cfg.max_providers_per_ip,
            max_per_subnet=cfg.max_providers_per_subnet,
        )
        self._values = ValueStore(ttl=cfg.value_ttl, max_values=cfg.max_values)
        self._pending: dict[bytes, _Pending] = {}
        self._providing: dict[bytes, tuple[int, float]] = {}
        self._published: dict[bytes, tuple[SignedValue, float]] = {}
        self._verifying: set[bytes] = set()
        self._recently_verified: OrderedDict[Address, float] = OrderedDict()
        self._ipv6 = is_ipv6(address[0])
        self._pad_to = math.ceil(MAX_DATAGRAM_BYTES / cfg.amplification_factor)
        self._timers: list[list[object]] = []
        self._timer_seq = itertools.count()
        self._out: list[Effect] = []
        self._ops: dict[int, bool] = {INTERNAL: False}
        """Running operations; the value says whether the caller waits for its result."""
        self._op_ids = itertools.count(1)
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._last_save = now
        self._saved_version = self.table.version
        self._save_due: float | None = None
        self._schedule(now + cfg.maintenance_interval, self._maintenance, None)

    # Queries ---------------------------------------------------------------------------------

    def providing(self) -> dict[bytes, int]:
        """Keys this node announces (and republishes), with their TCP ports."""
        return {key: port for key, (port, _) in self._providing.items()}

    def stop_providing(self, key: bytes) -> None:
        """Stop republishing ``key``; its records expire on the other nodes after their TTL."""
        self._providing.pop(key, None)

    def stored_providers(self, key: bytes, now: float) -> list[ProviderRecord]:
        """Provider records of ``key`` that this node stores for others."""
        return self._providers.get(key, now)

    def stored_value(self, key: bytes, now: float) -> SignedValue | None:
        """The value this node stores under ``key``, if any."""
        return self._values.get(key, now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called (``None``: only on other input)."""
        timers = self._timers
        while timers and timers[0][2] is None:
            heapq.heappop(timers)
        return float(timers[0][0]) if timers else None  # type: ignore[arg-type]

    def pending_requests(self) -> int:
        """Requests sent and not yet answered, timed out or abandoned."""
        return len(self._pending)

    def stall_timeout(self) -> float:
        """How long a lookup waits for one reply before it stops counting that request against
        ``alpha``: the smoothed round trip plus four deviations (as TCP's retransmission timer,
        RFC 6298), measured on this node's answered requests, between :data:`STALL_FLOOR` and
        ``request_timeout`` (the latter until a round trip has been measured)."""
        limit = self.config.request_timeout
        if self._srtt is None:
            return limit
        return min(limit, max(STALL_FLOOR, self._srtt + 4.0 * self._rttvar))

    def _measured(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2.0
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def operation_of(self, txid: bytes) -> int | None:
        """The operation an outstanding request belongs to (:data:`INTERNAL` for the node's own
        background work), ``None`` if no request with this transaction ID is outstanding."""
        pending = self._pending.get(txid)
        return None if pending is None else pending.op

    # Inputs ----------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: Address, now: float) -> list[Effect]:
        """A datagram arrived from ``source`` (host in canonical form)."""
        message = decode(data)
        if isinstance(message, Rejection):
            self.stats.received += 1
            self.stats.received_bytes += len(data)
            self._drop(message.reason)
            return self._take(now)
        return self.message_received(message, source, len(data), now)

    def message_received(
        self, message: Message, source: Address, size: int, now: float
    ) -> list[Effect]:
        """A decoded datagram of ``size`` bytes arrived from ``source``."""
        self.stats.received += 1
        self.stats.received_bytes += size
        if message.sender_id == self.node_id:
            self._drop("self")
        elif isinstance(message, Request):
            self._handle_request(message, source, size, now)
        else:
            self._handle_response(message, source, now)
        return self._take(now)

    def tick(self, now: float) -> list[Effect]:
        """Run every timer that is due at ``now``."""
        timers = self._timers
        while timers and float(timers[0][0]) <= now:  # type: ignore[arg-type]
            entry = heapq.heappop(timers)
            fn = entry[2]
            if fn is not None:
                fn(now, entry[3])  # type: ignore[operator]
        return self._take(now)

    def send_failed(self, txid: bytes | None, now: float) -> list[Effect]:
        """The transport refused the datagram of a :class:`Send` (its ``txid``): a request is
        treated as unanswered at once."""
        self.stats.send_failures += 1
        if txid is not None and txid in self._pending:
            self._timed_out(now, txid)
        return self._take(now)

    def cancel(self, op: int) -> list[Effect]:
        """Abandon operation ``op``: its outstanding requests are forgotten (late replies are
        dropped as unexpected) and no result is reported."""
        if op != INTERNAL and op in self._ops:
            del self._ops[op]
            self._abandon([t for t, p in self._pending.items() if p.op == op])
        return []

    # Operations ------------------------------------------------------------------------------

    def start_request(
        self,
        address: Address,
        body: RequestBody,
        now: float,
        *,
        expected_id: bytes | None = None,
        reply_within: float | None = None,
        pad: bool = False,
    ) -> tuple[int, list[Effect]]:
        """One request; the result is the :class:`Response` (possibly an :class:`ErrorReply`
        body) or ``None`` if nothing matching arrived within ``reply_within`` (default
        ``request_timeout``). A replying node enters the routing table; a silent ``expected_id``
        is marked failed there."""
        op = self._new_op()
        timeout = reply_within if reply_within is not None else self.config.request_timeout

        class _One:
            def on_response(_, pending: _Pending, response: Response | None, now: float) -> None:
                self._finish(op, response)

        self._send_request(
            address,
            body,
            expected_id=expected_id,
            pad=pad,
            owner=_One(),
            op=op,
            timeout=timeout,
            now=now,
        )
        return op, self._take(now)

    def start_lookup_nodes(self, target: bytes, now: float) -> tuple[int, list[Effect]]:
        """Iterative FIND_NODE; the result is a :class:`LookupResult`."""
        op = self._new_op()
        self._lookup_nodes(op, target, now, lambda r, _now: self._finish(op, r))
        return op, self._take(now)

    def start_announce(self, key: bytes, tcp_port: int, now: float) -> tuple[int, list[Effect]]:
        """Register this node as a provider of ``key`` on the k closest nodes and republish it
        until :meth:`stop_providing`; the result is the number of nodes that acknowledged.
        Raises :class:`ValueError` for a bad key or port."""
        if len(key) != 32 or not 1 <= tcp_port <= 0xFFFF:
            raise ValueError("keys are 32 bytes and TCP ports 1..65535")
        op = self._new_op()
        self._announce(op, key, tcp_port, now, lambda acked, _now: self._finish(op, acked))
        return op, self._take(now)

    def start_lookup_providers(
        self, key: bytes, now: float, *, limit: int | None = None
    ) -> tuple[int, list[Effect]]:
        """Iterative GET_PROVIDERS; the result is a :class:`ProviderLookupResult`. Collects
        providers from the k closest nodes, or stops as soon as at least ``limit`` distinct
        providers are known (records this node stores count)."""
        op = self._new_op()
        found: dict[bytes, ProviderRecord] = {
            r.node_id: r for r in self._providers.get(key, now) if r.node_id != self.node_id
        }

        def enough() -> bool:
            return limit is not None and len(found) >= limit

        def hook(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, ProvidersReply):
                for p in reply.providers:
                    if p.node_id != self.node_id and p.node_id not in found:
                        # The replier naming itself: its address is where the reply came from.
                        host = contact.host if p.node_id == contact.node_id else p.host
                        found[p.node_id] = ProviderRecord(key, p.node_id, host, p.port)
            return enough()

        if enough():
            self._finish(op, ProviderLookupResult(list(found.values()), [], 0, 0))
            return op, self._take(now)

        def then(lookup: Lookup, _now: float) -> None:
            self._finish(
                op,
                ProviderLookupResult(
                    list(found.values()), lookup.result(), lookup.rounds, lookup.messages
                ),
            )

        probes = EARLY_STOP_PROBES if limit is not None else 0
        _LookupRun(self, op, key, GetProviders(key), hook, probes, then, now)
        return op, self._take(now)

    def start_lookup_value(
        self, public_key: bytes, name: bytes, now: float, *, first: bool = False
    ) -> tuple[int, list[Effect]]:
        """Iterative FIND_VALUE for the value ``name`` of ``public_key``; the result is a
        :class:`ValueLookupResult` with the correctly signed value of highest ``seq`` among the
        k closest nodes (or the first found, if ``first``)."""
        op = self._new_op()
        key = value_key(public_key, name)
        best = self._values.get(key, now)

        def hook(_contact: Contact, reply: ReplyBody) -> bool:
            nonlocal best
            if isinstance(reply, ValueReply) and reply.value is not None:
                v = reply.value
                if v.key == key and (best is None or v.seq > best.seq) and v.verify():
                    best = v
            return first and best is not None

        if first and best is not None:
            self._finish(op, ValueLookupResult(best, [], 0, 0))
            return op, self._take(now)

        def then(lookup: Lookup, _now: float) -> None:
            self._finish(
                op, ValueLookupResult(best, lookup.result(), lookup.rounds, lookup.messages)
            )

        probes = EARLY_STOP_PROBES if first else 0
        _LookupRun(self, op, key, FindValue(key), hook, probes, then, now)
        return op, self._take(now)

    def start_put_value(
        self,
        public_key: bytes,
        name: bytes,
        value: bytes,
        sign: Callable[[int], SignedValue],
        now: float,
        *,
        seq: int | None = None,
    ) -> tuple[int, list[Effect]]:
        """Store the value ``name`` of ``public_key`` (``sign(seq)`` makes the signed record) on
        the k closest nodes and republish it; the result is the number that acknowledged.
        ``seq`` defaults to one more than the highest seen locally and in the lookup. Raises
        :class:`ValueError` if ``name`` or ``value`` is too long."""
        if len(name) > MAX_NAME_BYTES or len(value) > MAX_VALUE_BYTES:
            raise ValueError(f"names are at most {MAX_NAME_BYTES} bytes, values {MAX_VALUE_BYTES}")
        op = self._new_op()
        key = value_key(public_key, name)
        seen: list[int] = []
        local = self._values.get(key, now)
        if local is not None:
            seen.append(local.seq)
        if key in self._published:
            seen.append(self._published[key][0].seq)

        def choose(found: list[SignedValue]) -> SignedValue:
            if seq is not None:
                return sign(seq)
            return sign(max([*seen, *(v.seq for v in found)], default=-1) + 1)

        self._store_value(op, key, choose, now, lambda acked, _now: self._finish(op, acked))
        return op, self._take(now)

    def start_bootstrap(
        self, addresses: Iterable[Address], saved: Iterable[Contact], now: float
    ) -> tuple[int, list[Effect]]:
        """Join through ``addresses`` and the ``saved`` contacts of an earlier run: PING them all
        (with ``store_retries`` retries), look up this node's own ID, then a random ID in every
        non-full bucket beyond the nearest neighbour (``alpha`` at a time). The result is the
        routing table's size, or :class:`BootstrapFailed` if nobody answered."""
        op = self._new_op()
        targets: dict[Address, None] = {a: None for a in addresses if a != self.address}
        for contact in saved:
            if self._accept(contact):
                targets[contact.address] = None
        left = len(targets)

        def joined(now: float) -> None:
            if len(self.table) == 0:
                self._finish(op, BootstrapFailed(len(targets)))
                return
            self._lookup_nodes(
                op,
                self.node_id,
                now,
                lambda r, now: self._fill_table(
                    op, self._touch_covered(r, now), now, lambda _now: self._finish_join(op)
                ),
            )

        def pinged(_response: Response | None, now: float) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                joined(now)

        if not targets:
            joined(now)
        for address in targets:
            _Call(
                self,
                op,
                address,
                Ping(),
                expected_id=None,
                attempts=self.config.store_retries + 1,
                timeout=self.config.request_timeout,
                then=pinged,
                now=now,
            )
        return op, self._take(now)

    # Operation plumbing ----------------------------------------------------------------------

    def _new_op(self) -> int:
        op = next(self._op_ids)
        self._ops[op] = True
        return op

    def _alive(self, op: int) -> bool:
        return op in self._ops

    def _finish(self, op: int, result: object) -> None:
        if op != INTERNAL and self._ops.pop(op, False):
            self._out.append(OperationDone(op, result))

    def _finish_join(self, op: int) -> None:
        self._finish(op, len(self.table))

    def _lookup_nodes(
        self, op: int, target: bytes, now: float, then: Callable[[LookupResult, float], None]
    ) -> None:
        def done(lookup: Lookup, now: float) -> None:
            then(LookupResult(lookup.result(), lookup.rounds, lookup.messages), now)

        _LookupRun(self, op, target, FindNode(target), None, 0, done, now)

    def _announce(
        self, op: int, key: bytes, port: int, now: float, then: Callable[[int, float], None]
    ) -> None:
        self._providing[key] = (port, now + self.config.republish_interval)
        tokens: dict[bytes, bytes] = {}

        def hook(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, NodesReply):
                tokens[contact.node_id] = reply.token
            return False

        def found(lookup: Lookup, now: float) -> None:
            items: list[tuple[Contact, RequestBody]] = [
                (c, AddProvider(tokens[c.node_id], key, port))
                for c in lookup.result()
                if c.node_id in tokens
            ]
            _Broadcast(self, op, items, then, now)

        _LookupRun(self, op, key, FindNode(key), hook, 0, found, now)

    def _store_value(
        self,
        op: int,
        key: bytes,
        choose: Callable[[list[SignedValue]], SignedValue],
        now: float,
        then: Callable[[int, float], None],
    ) -> None:
        """Look up ``key`` (collecting write tokens and the valid values held), let ``choose``
        make the record from those values, keep it for republishing and STORE it."""
        tokens: dict[bytes, bytes] = {}
        values: list[SignedValue] = []

        def hook(contact: Contact, reply: ReplyBody) -> bool:
            if isinstance(reply, ValueReply):
                tokens[contact.node_id] = reply.token
                v = reply.value
                if v is not None and v.key == key and v.verify():
                    values.append(v)
            return False

        def found(lookup: Lookup, now: float) -> None:
            record = choose(values)
            self._values.put(record, now)
            self._published[key] = (record, now + self.config.republish_interval)
            items: list[tuple[Contact, RequestBody]] = [
                (c, Store(tokens[c.node_id], record))
                for c in lookup.result()
                if c.node_id in tokens
            ]
            _Broadcast(self, op, items, then, now)

        _LookupRun(self, op, key, FindValue(key), hook, 0, found, now)

    def _fill_table(self, op: int, covered: int, now: float, then: Callable[[float], None]) -> None:
        """Look up a random ID in every non-full bucket beyond the nearest neighbour, so a new
        node knows the whole ID space, not just its own neighbourhood (paper, section 2.3);
        ``alpha`` look-ups at a time. Buckets below ``covered`` (see :meth:`_touch_covered`)
        are complete already and skipped."""
        sparse = [i for i in self.table.sparse_buckets() if i >= covered]
        self._refresh(op, sparse, self.config.alpha, now, then)

    def _touch_covered(self, result: LookupResult, now: float) -> int:
        """After a lookup of our own ID: every node of a bucket nearer than the farthest of the
        k closest nodes found is one of those k, and each of them answered (so entered the
        table): those buckets are complete and count as refreshed. Returns the index of the
        farthest one's bucket (buckets below it are touched); 0 if the lookup found nobody."""
        if not result.contacts:
            return 0
        covered = self.table.bucket_index(result.contacts[-1].node_id)
        nearest = self.table.nearest_occupied()
        if nearest is not None:
            for index in range(nearest, covered):
                self.table.touch(index, now)
        return covered

    def _refresh(
        self,
        op: int,
        indices: list[int],
        limit: int,
        now: float,
        then: Callable[[float], None],
        *,
        stale_after: float | None = None,
    ) -> None:
        """Refresh buckets ``indices`` (``limit`` at a time); with ``stale_after``, a bucket
        touched meanwhile (a contact of it answered an earlier refresh) is skipped, and if any
        of them is not full, a lookup of our own ID goes first: it refreshes every bucket
        nearer than our k-th closest node at once (:meth:`_touch_covered`), where the paper's
        rule pays a lookup per bucket (most of a large network's background traffic)."""

        def job(index: int) -> Callable[[float, Callable[[float], None]], None]:
            def run(now: float, done: Callable[[float], None]) -> None:
                def looked(_r: object, now: float) -> None:
                    self.table.touch(index, now)
                    done(now)

                if stale_after is not None and not self.table.is_stale(index, now, stale_after):
                    done(now)
                    return

                contacts = self.table.bucket_contacts(index)
                if len(contacts) >= self.config.k:
                    # A full bucket already knows k nodes of its range: check the one seen
                    # longest ago (a miss replaces it from the replacement cache) rather than
                    # pay a whole lookup. Non-full buckets get the paper's lookup.
                    oldest = contacts[0]
                    _Call(
                        self, op, oldest.address, Ping(), expected_id=oldest.node_id,
                        attempts=1, timeout=self.config.request_timeout, then=looked, now=now,
                    )  # fmt: skip
                    return
                target = self.table.random_id_in_bucket(index, self.rng)
                self._lookup_nodes(op, target, now, looked)

            return run

        def own_lookup(now: float, done: Callable[[float], None]) -> None:
            def looked(result: LookupResult, now: float) -> None:
                self._touch_covered(result, now)
                done(now)

            self._lookup_nodes(op, self.node_id, now, looked)

        jobs = [job(i) for i in indices]
        k = self.config.k
        if stale_after is not None and any(len(self.table.bucket_contacts(i)) < k for i in indices):
            jobs.insert(0, own_lookup)
        _Limited(jobs, limit, then, now)

    # Maintenance -----------------------------------------------------------------------------

    def _maintenance(self, now: float, _arg: object) -> None:
        """Expiry, republishing, bucket refresh and the periodic table save; the next round is
        due ``maintenance_interval`` after this one finishes."""
        cfg = self.config
        self._providers.expire(now)
        self._values.expire(now)
        jobs: list[Callable[[float, Callable[[float], None]], None]] = []
        for key, (port, due) in list(self._providing.items()):
            if due <= now:
                jobs.append(self._republish_provider(key, port))
        for key, (record, due) in list(self._published.items()):
            if due <= now:
                jobs.append(self._republish_value(key, record))
        # Farthest first: a lookup in a far sparse bucket hears from nodes of the nearer ones,
        # which are then fresh and skipped.
        refresh = self.table.buckets_to_refresh(now, cfg.bucket_refresh_interval)[::-1]

        def refreshed(now: float) -> None:
            if self.persist and now - self._last_save >= cfg.table_save_interval:
                self._save(now, None)
            self._schedule(self._next_maintenance(now), self._maintenance, None)

        def republished(now: float) -> None:
            self._refresh(
                INTERNAL, refresh, 1, now, refreshed, stale_after=cfg.bucket_refresh_interval
            )

        _Limited(jobs, REPUBLISH_CONCURRENCY, republished, now)

    def _next_maintenance(self, now: float) -> float:
        """When the next maintenance round is due: ``maintenance_interval`` after this one,
        or later if no bucket refresh, republication or table save falls due before, but at
        most :data:`MAINTENANCE_MAX_SLEEP` rounds later (record expiry is only memory hygiene:
        reads never return an expired record). A node with nothing to do sleeps."""
        cfg = self.config
        due = now + MAINTENANCE_MAX_SLEEP * cfg.maintenance_interval
        refresh = self.table.next_refresh_due(cfg.bucket_refresh_interval)
        if refresh is not None and refresh < due:
            due = refresh
        for _, when in self._providing.values():
            if when < due:
                due = when
        for _, when in self._published.values():
            if when < due:
                due = when
        if self.persist:
            due = min(due, self._last_save + cfg.table_save_interval)
        return max(now + cfg.maintenance_interval, due)

    def _republish_provider(
        self, key: bytes, port: int
    ) -> Callable[[float, Callable[[float], None]], None]:
        def run(now: float, done: Callable[[float], None]) -> None:
            if key not in self._providing:  # stopped meanwhile
                done(now)
                return
            self._announce(INTERNAL, key, port, now, lambda _acked, now: done(now))

        return run

    def _republish_value(
        self, key: bytes, record: SignedValue
    ) -> Callable[[float, Callable[[float], None]], None]:
        def run(now: float, done: Callable[[float], None]) -> None:
            self._store_value(INTERNAL, key, lambda _found: record, now, lambda _a, now: done(now))

        return run

    def _save(self, now: float, _arg: object) -> None:
        self._save_due = None
        self._last_save = now
        self._saved_version = self.table.version
        self._out.append(SaveTable(self.table.contacts()))

    def _take(self, now: float) -> list[Effect]:
        if self.persist and self._save_due is None and self.table.version != self._saved_version:
            self._save_due = now + self.config.table_save_delay
            self._schedule(self._save_due, self._save, None)
        out = self._out
        self._out = []
        return out

    # Timers and requests ---------------------------------------------------------------------

    def _schedule(
        self, when: float, fn: Callable[[float, object], None], arg: object
    ) -> list[object]:
        entry: list[object] = [when, next(self._timer_seq), fn, arg]
        heapq.heappush(self._timers, entry)
        return entry

    def _send_request(
        self,
        address: Address,
        body: RequestBody,
        *,
        expected_id: bytes | None,
        pad: bool,
        owner: _Requester,
        op: int,
        timeout: float,
        now: float,
    ) -> bytes:
        txid = self.rng.randbytes(TXID_MIN_BYTES)
        while txid in self._pending:
            txid = self.rng.randbytes(TXID_MIN_BYTES)
        payload, size = self.codec.request(
            Request(txid, self.node_id, body), self._pad_to if pad else 0
        )
        timer = self._schedule(now + timeout, self._timed_out, txid)
        self._pending[txid] = _Pending(
            txid, address, method_of(body), expected_id, owner, op, timer, now
        )
        self._emit(address, payload, size, txid)
        return txid

    def _emit(self, address: Address, payload: Payload, size: int, txid: bytes | None) -> None:
        self.stats.sent += 1
        self.stats.sent_bytes += size
        self._out.append(Send(address, payload, size, txid))

    def _timed_out(self, now: float, txid: object) -> None:
        assert isinstance(txid, bytes)
        pending = self._pending.pop(txid, None)
        if pending is None:
            return
        pending.timer[2] = None
        self.stats.timeouts += 1
        if pending.expected_id is not None:
            self.table.mark_failed(pending.expected_id)
        pending.owner.on_response(pending, None, now)

    def _abandon(self, txids: Iterable[bytes]) -> None:
        for txid in txids:
            pending = self._pending.pop(txid, None)
            if pending is not None:
                pending.timer[2] = None

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1

    def _accept(self, contact: Contact) -> bool:
        return self._ipv6 == is_ipv6(contact.host)

    def _handle_response(self, response: Response, source: Address, now: float) -> None:
        pending = self._pending.get(response.txid)
        if pending is None:
            self._drop("unexpected_reply")
        elif pending.address != source:
            self._drop("wrong_address")
        elif pending.method is not response.method:
            self._drop("wrong_method")
        elif pending.expected_id is not None and pending.expected_id != response.sender_id:
            self._drop("wrong_node_id")
        else:
            del self._pending[response.txid]
            pending.timer[2] = None
            self._measured(now - pending.sent_at)
            self._add_verified(Contact(response.sender_id, source[0], source[1]), now)
            pending.owner.on_response(pending, response, now)

    def _add_verified(self, contact: Contact, now: float) -> None:
        if self._ipv6 != is_ipv6(contact.host):
            return
        to_ping = self.table.update(contact, now)
        if to_ping is not None:
            table = self.table
            node_id = to_ping.node_id

            def result(response: Response | None, now: float) -> None:
                table.ping_result(node_id, response is not None, now)

            _Call(
                self,
                INTERNAL,
                to_ping.address,
                Ping(),
                expected_id=node_id,
                attempts=1,
                timeout=self.config.request_timeout,
                then=result,
                now=now,
            )

    def _maybe_verify(self, contact: Contact, now: float) -> None:
        """PING a stranger that sent us a request, so it can enter the table if it answers.

        Only when its bucket has room: in a full bucket a verified stranger could at best wait in
        the replacement cache, which our own lookups fill anyway, so the PING (two datagrams per
        requester, the bulk of a lookup's traffic in a large network) would buy nothing.
        """
        if (
            not self.table.has_room_for(contact.node_id)
            or self.table.get(contact.node_id) == contact  # known at this very address
            or contact.node_id in self._verifying
            or len(self._verifying) >= self.config.max_pending_verifications
            or self._ipv6 != is_ipv6(contact.host)
        ):
            return
        recent = self._recently_verified
        window = VERIFY_RETRY_FACTOR * self.config.request_timeout
        last = recent.get(contact.address)
        if last is not None and now - last < window:
            return
        recent[contact.address] = now
        recent.move_to_end(contact.address)
        while recent and (
            len(recent) > MAX_RECENT_VERIFICATIONS or now - next(iter(recent.values())) >= window
        ):
            recent.popitem(last=False)
        self._verifying.add(contact.node_id)
        node_id = contact.node_id

        def verified(_response: Response | None, _now: float) -> None:
            self._verifying.discard(node_id)

        _Call(
            self,
            INTERNAL,
            contact.address,
            Ping(),
            expected_id=node_id,
            attempts=1,
            timeout=self.config.request_timeout,
            then=verified,
            now=now,
        )

    # Answering -------------------------------------------------------------------------------

    def _handle_request(self, request: Request, source: Address, size: int, now: float) -> None:
        if not self._limiter.allow(source[0], now):
            self._drop("rate_limited")
            return
        self.stats.requests[request.method.value] += 1
        body = self._answer(request, source, now)
        known = self.table.get(request.sender_id)
        verified = known is not None and known.host == source[0] and known.port == source[1]
        budget = (
            MAX_DATAGRAM_BYTES
            if verified
            else min(MAX_DATAGRAM_BYTES, self.config.amplification_factor * size)
        )
        try:
            payload, out_size = self.codec.response(
                Response(request.txid, self.node_id, request.method, body), budget
            )
        except ValueError:  # a reply field out of range: a bug of ours, never the peer's input
            self._drop("encode_error")
            return
        if out_size > budget:
            self._drop("amplification")
        else:
            self._emit(source, payload, out_size, None)
        if not verified:
            self._maybe_verify(Contact(request.sender_id, source[0], source[1]), now)

    def _closest_for(self, target: bytes, requester: bytes) -> tuple[Contact, ...]:
        return tuple(self.table.closest(target, self.config.k, exclude=requester))

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
            providers = [
                Contact(r.node_id, r.host, r.tcp_port)
                for r in select_providers(
                    self._providers.get(body.key, now),
                    self.rng,
                    max_per_ip=self.config.max_providers_per_ip,
                    max_per_subnet=self.config.max_providers_per_subnet,
                )
            ]
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
