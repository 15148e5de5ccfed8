"""Which chunks of which file a node has just stored, for the peers WATCHing that file.

The node's downloads :meth:`~HoldingsHub.publish` every chunk they verify and store; the chunk
server :meth:`~HoldingsHub.subscribe`\\ s one :class:`Subscription` per WATCH it serves and pushes
what accumulates there as HAVE_UPDATE messages. Synchronous and bounded: a subscription keeps at
most one pending entry per chunk index (a set), and a file has at most ``max_subscribers``
watchers (the server refuses more), at most ``max_per_peer`` of them from one node ID and at
most ``max_per_host`` from one source address, so one peer (or one host with throw-away
identities) cannot take every watch of a file and lock the honest downloaders out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable

import trio

#: Watches of one file served at once, over all connections.
DEFAULT_MAX_SUBSCRIBERS = 256
#: ... from one node ID (an honest downloader needs one; two covers a reconnect's overlap).
DEFAULT_MAX_PER_PEER = 2
#: ... from one source address (IPv6: its /64), whatever node IDs it proves.
DEFAULT_MAX_PER_HOST = 32


class Subscription:
    """Indices published for one file since the last :meth:`take`; :meth:`wait` blocks until
    there is at least one."""

    def __init__(
        self,
        hub: HoldingsHub | None,
        file_id: bytes,
        peer: Hashable = None,
        host: Hashable = None,
    ) -> None:
        self.hub = hub
        self.file_id = file_id
        self.peer = peer
        self.host = host
        self._pending: set[int] = set()
        self._ready = trio.Event()

    def add(self, index: int) -> None:
        self._pending.add(index)
        self._ready.set()

    @property
    def pending(self) -> int:
        """Indices waiting to be taken."""
        return len(self._pending)

    def take(self, limit: int) -> list[int]:
        """Up to ``limit`` pending indices (smallest first), removed from the pending set."""
        out = sorted(self._pending)[:limit]
        self._pending.difference_update(out)
        if not self._pending:
            self._ready = trio.Event()
        return out

    async def wait(self) -> None:
        await self._ready.wait()

    def close(self) -> None:
        if self.hub is not None:
            self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class HoldingsHub:
    """Fan-out of "chunk ``index`` of file ``file_id`` is now stored here" to subscriptions."""

    def __init__(
        self,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        *,
        max_per_peer: int = DEFAULT_MAX_PER_PEER,
        max_per_host: int = DEFAULT_MAX_PER_HOST,
    ) -> None:
        self.max_subscribers = max_subscribers
        self.max_per_peer = max_per_peer
        self.max_per_host = max_per_host
        self._subs: dict[bytes, set[Subscription]] = {}
        self._by_peer: dict[tuple[bytes, Hashable], int] = {}
        self._by_host: dict[tuple[bytes, Hashable], int] = {}

    def subscribe(
        self, file_id: bytes, peer: Hashable = None, host: Hashable = None
    ) -> Subscription | None:
        """A new subscription to ``file_id`` for ``peer`` (its node ID) connected from ``host``
        (its address key, see :func:`host_key`), or ``None`` if the file has too many already,
        or too many from that peer or that host (``None`` for either: not counted)."""
        subs = self._subs.get(file_id, set())
        if len(subs) >= self.max_subscribers:
            return None
        if peer is not None and self._by_peer.get((file_id, peer), 0) >= self.max_per_peer:
            return None
        if host is not None and self._by_host.get((file_id, host), 0) >= self.max_per_host:
            return None
        sub = Subscription(self, file_id, peer, host)
        self._subs.setdefault(file_id, set()).add(sub)
        if peer is not None:
            self._by_peer[file_id, peer] = self._by_peer.get((file_id, peer), 0) + 1
        if host is not None:
            self._by_host[file_id, host] = self._by_host.get((file_id, host), 0) + 1
        return sub

    def publish(self, file_id: bytes, index: int) -> None:
        """Chunk ``index`` (manifest order) of ``file_id`` was stored and verified here."""
        for sub in self._subs.get(file_id, ()):
            sub.add(index)

    def watchers(self, file_id: bytes) -> int:
        """Subscriptions to ``file_id``."""
        return len(self._subs.get(file_id, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.file_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.file_id]
        for counts, key in ((self._by_peer, sub.peer), (self._by_host, sub.host)):
            if key is not None:
                left = counts[sub.file_id, key] - 1
                if left:
                    counts[sub.file_id, key] = left
                else:
                    del counts[sub.file_id, key]


def host_key(host: str) -> str:
    """The address a per-host limit counts by: an IPv4 address as is, an IPv6 address by its
    /64 (one host is given a whole /64, so its single addresses are free to it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
