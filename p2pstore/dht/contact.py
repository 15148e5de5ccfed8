"""Contacts, the XOR metric, and the compact byte encoding of (node ID, IP, port).

A packed contact is ``node_id (32 bytes) || IP (4 bytes IPv4 / 16 bytes IPv6) || port (2 bytes,
big-endian)``: 38 or 50 bytes, its family known from its length.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from ..errors import ProtocolError

NODE_ID_BYTES = 32
"""Node IDs and keys are SHA-256 digests."""
ID_BITS = NODE_ID_BYTES * 8
PACKED_IPV4_CONTACT_BYTES = NODE_ID_BYTES + 4 + 2
PACKED_IPV6_CONTACT_BYTES = NODE_ID_BYTES + 16 + 2

Address = tuple[str, int]
"""A UDP or TCP address: (IP literal in canonical form, port)."""


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia XOR distance between two equal-length IDs, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


HOST_CACHE_SIZE = 4096
"""Distinct IP literals whose parsed forms are cached (parsing is a hot path)."""


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def pack_ip(host: str) -> bytes:
    """The 4- or 16-byte network form of an IP literal. Raises :class:`ValueError` otherwise."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, host)
        except OSError:
            pass
    return ipaddress.ip_address(host).packed  # scoped IPv6 ("fe80::1%eth0"), or ValueError


def unpack_ip(packed: bytes) -> str:
    """The canonical text of a 4- or 16-byte IP. Raises :class:`ValueError` for other lengths."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if len(packed) == 16:
        return socket.inet_ntop(socket.AF_INET6, packed)
    raise ValueError("an IP address is 4 or 16 bytes")


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def canonical_host(host: str) -> str:
    """``host`` as the canonical text of its IP address (``::0001`` -> ``::1``), the same form
    :func:`unpack_ip` gives. Raises :class:`ValueError` if ``host`` is not an IP literal."""
    if "%" in host:
        return str(ipaddress.ip_address(host))
    return unpack_ip(pack_ip(host))


def is_ipv6(host: str) -> bool:
    """Whether the IP literal ``host`` is IPv6."""
    return ":" in host


@dataclass(frozen=True, slots=True)
class Contact:
    """A DHT node: its node ID and the UDP address it answered from."""

    node_id: bytes
    host: str
    port: int
    address: Address = field(init=False, compare=False, repr=False)
    """``(host, port)``, made once (routing tables key their address index by it)."""
    id_int: int = field(init=False, compare=False, repr=False)
    """``node_id`` as a big-endian integer, made once (XOR distances are computed from it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", (self.host, self.port))
        object.__setattr__(self, "id_int", int.from_bytes(self.node_id, "big"))

    def __repr__(self) -> str:
        return f"Contact({self.node_id.hex()[:12]}.., {self.host!r}, {self.port})"


def pack_endpoint(node_id: bytes, host: str, port: int) -> bytes:
    """The 38/50-byte packed form. Raises :class:`ValueError` on a bad ID, IP or port."""
    if len(node_id) != NODE_ID_BYTES:
        raise ValueError("node IDs are 32 bytes")
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return node_id + pack_ip(host) + struct.pack(">H", port)


def unpack_endpoint(data: bytes) -> tuple[bytes, str, int]:
    """``(node_id, host, port)`` of a packed contact. Raises :class:`ProtocolError` if malformed."""
    if len(data) not in (PACKED_IPV4_CONTACT_BYTES, PACKED_IPV6_CONTACT_BYTES):
        raise ProtocolError(f"a packed contact is 38 or 50 bytes, not {len(data)}")
    host = unpack_ip(data[NODE_ID_BYTES:-2])
    (port,) = struct.unpack(">H", data[-2:])
    if port == 0:
        raise ProtocolError("port 0 in a packed contact")
    return data[:NODE_ID_BYTES], host, port


def pack_contact(contact: Contact) -> bytes:
    """The packed form of a :class:`Contact`."""
    return pack_endpoint(contact.node_id, contact.host, contact.port)


def unpack_contact(data: bytes) -> Contact:
    """The :class:`Contact` of a packed contact. Raises :class:`ProtocolError` if malformed."""
    node_id, host, port = unpack_endpoint(data)
    return Contact(node_id, host, port)
