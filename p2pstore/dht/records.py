"""Provider records and signed values, and the bounded, expiring stores that keep them.

Value key: ``SHA-256(publisher_public_key || name)`` (the public key is always 32 bytes, so the
concatenation is unambiguous), as BEP 44 mutable items with ``name`` in the role of the salt.
Signature input: ``b"p2pstore-dht-value-v1" || u8(len(name)) || name || u64be(seq) || value``.
Both stores are sans-IO: every method takes ``now`` (Trio clock seconds).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from ..identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature
from .contact import NODE_ID_BYTES, pack_ip

MAX_NAME_BYTES = 64
"""A value's name (salt): enough for a label or a hash; keeps STORE well inside one datagram."""
MAX_VALUE_BYTES = 512
"""A signed value's payload: pointers and small records; a value reply still has room for nodes."""
MAX_SEQ = 2**63 - 1
"""Sequence numbers are unsigned 63-bit so they fit any msgpack integer reader."""
SIGNATURE_DOMAIN = b"p2pstore-dht-value-v1"
"""Prefix of every signed value's signature input, so the signature means nothing elsewhere."""

_T = TypeVar("_T")


def value_key(public_key: bytes, name: bytes) -> bytes:
    """The 32-byte DHT key of the value ``name`` published by ``public_key``."""
    return hashlib.sha256(public_key + name).digest()


def signature_input(name: bytes, seq: int, value: bytes) -> bytes:
    """The exact bytes a publisher signs for ``(name, seq, value)``."""
    return SIGNATURE_DOMAIN + bytes([len(name)]) + name + struct.pack(">Q", seq) + value


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A node that serves ``key`` over TCP at ``host:tcp_port``.

    ``host`` is the source IP of the ADD_PROVIDER datagram, never a claim of the message.
    ``expires_at`` is on Trio's clock, and ``None`` for records learned from other nodes.
    """

    key: bytes
    node_id: bytes
    host: str
    tcp_port: int
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class SignedValue:
    """A small value signed by its publisher with a sequence number (newer replaces older)."""

    public_key: bytes
    name: bytes
    seq: int
    value: bytes
    signature: bytes

    @property
    def key(self) -> bytes:
        """The DHT key this value is stored under."""
        return value_key(self.public_key, self.name)

    def well_formed(self) -> bool:
        """Whether every field is within its size and range limits (signature not checked)."""
        return (
            len(self.public_key) == PUBLIC_KEY_BYTES
            and len(self.name) <= MAX_NAME_BYTES
            and 0 <= self.seq <= MAX_SEQ
            and len(self.value) <= MAX_VALUE_BYTES
            and len(self.signature) == SIGNATURE_BYTES
        )

    def verify(self) -> bool:
        """Whether the value is well formed and its signature is valid (never raises)."""
        return self.well_formed() and verify_signature(
            self.public_key, self.signature, signature_input(self.name, self.seq, self.value)
        )

    @classmethod
    def sign(cls, identity: Identity, name: bytes, seq: int, value: bytes) -> SignedValue:
        """A value signed by ``identity``. Raises :class:`ValueError` if a field is out of range."""
        if len(name) > MAX_NAME_BYTES or len(value) > MAX_VALUE_BYTES or not 0 <= seq <= MAX_SEQ:
            raise ValueError(
                f"names are at most {MAX_NAME_BYTES} bytes, values at most {MAX_VALUE_BYTES} "
                f"bytes, and 0 <= seq <= {MAX_SEQ}"
            )
        signature = identity.sign(signature_input(name, seq, value))
        return cls(identity.public_key, name, seq, value, signature)


class StoreOutcome(Enum):
    """What a store did with an offered record."""

    ADDED = "added"
    REFRESHED = "refreshed"
    REPLACED = "replaced"
    REJECTED_FULL = "full"
    REJECTED_STALE = "stale"
    REJECTED_INVALID = "invalid"

    @property
    def accepted(self) -> bool:
        """Whether the record is now stored."""
        return self in (StoreOutcome.ADDED, StoreOutcome.REFRESHED, StoreOutcome.REPLACED)


#: The addresses exempt from the per-IP and per-subnet caps: the default loopback addresses, at
#: which every node of a test network or a demo on one machine shares one IP (there an IP says
#: nothing about who runs a node). Only these two: any other address of 127.0.0.0/8 is one a
#: local setup gave a node on purpose, and is capped like any host (its /24 as its subnet), so
#: identities spread over 127.x.y.z addresses cannot bypass the caps.
EXEMPT_HOSTS = (bytes([127, 0, 0, 1]), bytes(15) + b"\x01")


def subnet_of(host: str) -> bytes | None:
    """The /24 (IPv4) or /64 (IPv6) network of an IP literal; ``None`` (exempt from the caps)
    for the loopback addresses ``127.0.0.1`` and ``::1`` (also IPv4-mapped, see
    :data:`EXEMPT_HOSTS`) and for anything that is not an IP literal."""
    try:
        packed = pack_ip(host)
    except ValueError:
        return None
    if len(packed) == 16:
        mapped = ipaddress.IPv6Address(packed).ipv4_mapped
        if mapped is not None:
            packed = mapped.packed
    if packed in EXEMPT_HOSTS:
        return None
    return packed[:3] if len(packed) == 4 else packed[:8]


def select_providers(
    records: Sequence[ProviderRecord],
    rng: random.Random,
    *,
    max_per_ip: int,
    max_per_subnet: int,
) -> list[ProviderRecord]:
    """The records to put in a GET_PROVIDERS reply, in the order to list them.

    At most ``max_per_ip`` per IP address and ``max_per_subnet`` per /24 or /64 (127.0.0.1 and
    ::1 exempt), chosen at random; then ordered round-robin over the subnets in random order, so
    a reply cut at the datagram size holds as many networks as possible and a crowd of records
    from one place (newest or not) cannot push out the others. The order is drawn afresh for
    every reply, so repeated look-ups see different subsets when not all fit.
    """
    return spread_over_networks(
        records,
        lambda r: r.host,
        rng,
        max_per_ip=max_per_ip,
        max_per_subnet=max_per_subnet,
    )


def spread_over_networks(
    items: Sequence[_T],
    host_of: Callable[[_T], str],
    rng: random.Random,
    *,
    max_per_ip: int | None = None,
    max_per_subnet: int | None = None,
) -> list[_T]:
    """``items`` (each at the IP ``host_of(item)``) in a random order that lists one of each
    network (/24 or /64; each exempt address, see :func:`subnet_of`, counts as a network of its
    own) before a second of any, keeping at most ``max_per_ip`` per IP and ``max_per_subnet``
    per network (``None``: no cap), chosen at random.

    Used for provider replies, and by a downloader to choose whom to ask first: a crowd of
    identities in one place then costs it one attempt per round, not one per identity.
    """
    shuffled = list(items)
    rng.shuffle(shuffled)
    per_ip: dict[str, int] = {}
    groups: dict[bytes, list[_T]] = {}
    columns: list[list[_T]] = []
    for item in shuffled:
        host = host_of(item)
        subnet = subnet_of(host)
        if subnet is None:
            columns.append([item])
            continue
        group = groups.get(subnet)
        if group is None:
            group = groups[subnet] = []
            columns.append(group)
        if max_per_subnet is not None and len(group) >= max_per_subnet:
            continue
        if max_per_ip is not None and per_ip.get(host, 0) >= max_per_ip:
            continue
        per_ip[host] = per_ip.get(host, 0) + 1
        group.append(item)
    columns = [c for c in columns if c]
    rng.shuffle(columns)
    out: list[_T] = []
    depth = 0
    total = sum(len(c) for c in columns)
    while len(out) < total:
        out.extend(c[depth] for c in columns if depth < len(c))
        depth += 1
    return out


class ProviderStore:
    """Provider records by key, at most ``max_keys`` keys and ``max_per_key`` providers per key,
    of which at most ``max_per_ip`` from one IP and ``max_per_subnet`` from one /24 or /64
    (127.0.0.1 and ::1 exempt; see :func:`subnet_of`).

    A provider re-announcing itself refreshes its record (new address and expiry). When a bound is
    reached new keys / new providers are refused rather than evicting what is there, so a flood
    cannot push out established records; expired records free room on :meth:`expire`.
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_keys: int,
        max_per_key: int,
        max_per_ip: int | None = None,
        max_per_subnet: int | None = None,
    ) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        self._max_per_key = max_per_key
        self._max_per_ip = max_per_ip
        self._max_per_subnet = max_per_subnet
        self._records: dict[bytes, OrderedDict[bytes, ProviderRecord]] = {}

    def _crowded(
        self, providers: OrderedDict[bytes, ProviderRecord], node_id: bytes, host: str, now: float
    ) -> bool:
        """Whether ``host``'s IP or subnet already has its share of this key's records."""
        if self._max_per_ip is None and self._max_per_subnet is None:
            return False
        subnet = subnet_of(host)
        if subnet is None:
            return False
        same_ip = same_subnet = 0
        for other in providers.values():
            if other.node_id == node_id or (other.expires_at or 0.0) <= now:
                continue
            if other.host == host:
                same_ip += 1
            if subnet_of(other.host) == subnet:
                same_subnet += 1
        return (self._max_per_ip is not None and same_ip >= self._max_per_ip) or (
            self._max_per_subnet is not None and same_subnet >= self._max_per_subnet
        )

    def add(self, key: bytes, node_id: bytes, host: str, tcp_port: int, now: float) -> StoreOutcome:
        """Add or refresh the record of ``node_id`` providing ``key``."""
        if len(key) != NODE_ID_BYTES or len(node_id) != NODE_ID_BYTES:
            return StoreOutcome.REJECTED_INVALID
        if not 1 <= tcp_port <= 0xFFFF:
            return StoreOutcome.REJECTED_INVALID
        providers = self._records.get(key)
        if providers is None:
            if len(self._records) >= self._max_keys:
                return StoreOutcome.REJECTED_FULL
            providers = self._records[key] = OrderedDict()
        existed = node_id in providers
        if not existed and len(providers) >= self._max_per_key:
            return StoreOutcome.REJECTED_FULL
        if self._crowded(providers, node_id, host, now):
            return StoreOutcome.REJECTED_FULL
        providers[node_id] = ProviderRecord(key, node_id, host, tcp_port, now + self._ttl)
        providers.move_to_end(node_id)
        return StoreOutcome.REFRESHED if existed else StoreOutcome.ADDED

    def get(self, key: bytes, now: float) -> list[ProviderRecord]:
        """The unexpired records of ``key``, most recently announced last."""
        providers = self._records.get(key)
        if providers is None:
            return []
        return [r for r in providers.values() if r.expires_at is not None and r.expires_at > now]

    def expire(self, now: float) -> int:
        """Drop expired records (and keys left empty); return how many records were dropped."""
        dropped = 0
        for key in list(self._records):
            providers = self._records[key]
            for node_id in [n for n, r in providers.items() if (r.expires_at or 0.0) <= now]:
                del providers[node_id]
                dropped += 1
            if not providers:
                del self._records[key]
        return dropped

    def key_count(self) -> int:
        """Keys with at least one stored record (expired ones count until :meth:`expire`)."""
        return len(self._records)

    def record_count(self) -> int:
        """Stored records (expired ones count until :meth:`expire`)."""
        return sum(len(p) for p in self._records.values())


class ValueStore:
    """Signed values by value key, at most ``max_values``; each kept ``ttl`` seconds.

    Only a correctly signed value is accepted; it replaces the stored one only if it has a higher
    ``seq`` (the key binds the publisher, so "same key" means "same publisher and name"). The same
    ``seq`` with the same value refreshes the expiry; anything else is refused and changes nothing.
    """

    def __init__(self, *, ttl: float, max_values: int) -> None:
        self._ttl = ttl
        self._max_values = max_values
        self._values: dict[bytes, tuple[SignedValue, float]] = {}

    def put(self, value: SignedValue, now: float) -> StoreOutcome:
        """Offer ``value`` (its signature is verified here)."""
        if not value.verify():
            return StoreOutcome.REJECTED_INVALID
        key = value.key
        current = self._values.get(key)
        if current is None:
            if len(self._values) >= self._max_values:
                return StoreOutcome.REJECTED_FULL
            self._values[key] = (value, now + self._ttl)
            return StoreOutcome.ADDED
        old = current[0]
        if value.seq > old.seq:
            self._values[key] = (value, now + self._ttl)
            return StoreOutcome.REPLACED
        if value.seq == old.seq and value.value == old.value:
            self._values[key] = (old, now + self._ttl)
            return StoreOutcome.REFRESHED
        return StoreOutcome.REJECTED_STALE

    def get(self, key: bytes, now: float) -> SignedValue | None:
        """The unexpired value stored under ``key``, if any."""
        current = self._values.get(key)
        if current is None or current[1] <= now:
            return None
        return current[0]

    def expire(self, now: float) -> int:
        """Drop expired values; return how many were dropped."""
        expired = [k for k, (_, t) in self._values.items() if t <= now]
        for k in expired:
            del self._values[k]
        return len(expired)

    def __len__(self) -> int:
        return len(self._values)
