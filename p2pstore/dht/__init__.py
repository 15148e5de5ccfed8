"""The Kademlia DHT over UDP: node discovery, provider records and small signed values.

Start a node with :func:`open_dht` (or run a :class:`DhtService` in your nursery). The wire format
is in ``docs/protocol.md``; each concern lives in its own module (``messages``, ``routing``,
``lookup``, ``records``, ``tokens``, ``ratelimit``, ``transport``, ``persist``); the node's logic is
the sans-IO :class:`DhtNode` (``protocol``), which :class:`DhtService` (``service``) drives on Trio.
"""

from __future__ import annotations

from ..errors import BootstrapError
from .config import DhtConfig
from .contact import Contact, distance
from .lookup import Lookup
from .protocol import DhtNode, ObjectCodec, WireCodec
from .records import ProviderRecord, SignedValue, value_key
from .routing import RoutingTable
from .service import (
    DhtService,
    DhtStats,
    LookupResult,
    ProviderLookupResult,
    ValueLookupResult,
    open_dht,
)
from .transport import (
    CountingTransport,
    FaultyTransport,
    MemoryNetwork,
    MemoryTransport,
    Transport,
    TransportWrapper,
    UdpTransport,
)

__all__ = [
    "BootstrapError",
    "Contact",
    "CountingTransport",
    "DhtConfig",
    "DhtNode",
    "DhtService",
    "DhtStats",
    "FaultyTransport",
    "Lookup",
    "LookupResult",
    "MemoryNetwork",
    "MemoryTransport",
    "ObjectCodec",
    "ProviderLookupResult",
    "ProviderRecord",
    "RoutingTable",
    "SignedValue",
    "Transport",
    "TransportWrapper",
    "UdpTransport",
    "ValueLookupResult",
    "WireCodec",
    "distance",
    "open_dht",
    "value_key",
]
