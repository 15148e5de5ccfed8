"""Which chunks of which file a node has just stored, for the peers WATCHing that file.

The node's downloads :meth:`~HoldingsHub.publish` every chunk they verify and store; the chunk
server :meth:`~HoldingsHub.subscribe`\\ s one :class:`Subscription` per WATCH it serves and pushes
what accumulates there as HAVE_UPDATE messages. Synchronous and bounded: a subscription keeps at
most one pending entry per chunk index (a set), and a file has at most ``max_subscribers``
watchers (the server refuses more).
"""

from __future__ import annotations

import trio

#: Watches of one file served at once, over all connections.
DEFAULT_MAX_SUBSCRIBERS = 256


class Subscription:
    """Indices published for one file since the last :meth:`take`; :meth:`wait` blocks until
    there is at least one."""

    def __init__(self, hub: HoldingsHub | None, file_id: bytes) -> None:
        self.hub = hub
        self.file_id = file_id
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

    def __init__(self, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS) -> None:
        self.max_subscribers = max_subscribers
        self._subs: dict[bytes, set[Subscription]] = {}

    def subscribe(self, file_id: bytes) -> Subscription | None:
        """A new subscription to ``file_id``, or ``None`` if the file has too many already."""
        subs = self._subs.setdefault(file_id, set())
        if len(subs) >= self.max_subscribers:
            return None
        sub = Subscription(self, file_id)
        subs.add(sub)
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
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.file_id]
