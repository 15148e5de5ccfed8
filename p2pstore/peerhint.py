"""A share link's peer hint as one more place to look for a file, beside the DHT.

A link (:mod:`p2pstore.links`) may name a chunk server ``HOST:PORT`` that held the file when the
link was made. :class:`HintedProviders` wraps a download's provider look-up: the first look-up
for the file also dials the hinted address (its node ID is learnt from the authenticated
handshake, since the link does not carry one) and asks it HAVE for the file; only a peer that
answers that it knows the file is offered as a provider, beside those the DHT names. Nothing it
sends is trusted more than any provider's: the manifest and every chunk are verified against the
file ID as always. A dead, slow or wrong hint costs at most :data:`HINT_TIMEOUT` when the DHT
found nobody, and at most :data:`HINT_GRACE` when it did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from .errors import P2PStoreError
from .transfer.download import FindProviders, Provider
from .wire.client import ConnectionPool, PeerAddress

log = logging.getLogger(__name__)

HINT_TIMEOUT = 3.0
"""Longest wait for the hinted peer (dial, handshake, HAVE)."""

HINT_GRACE = 0.5
"""How long a look-up that found providers in the DHT still waits for the hinted peer."""


class HintedProviders:
    """A :class:`~p2pstore.transfer.download.FindProviders` for ``file_id``: ``find``'s answers,
    plus the peer at ``hint`` once it has shown that it knows the file.

    The hint is tried until one attempt completes (found or refused), then never again; its
    provider, once found, is part of every later answer (first, so the download tries it early).
    """

    def __init__(
        self,
        find: FindProviders,
        pool: ConnectionPool,
        file_id: bytes,
        hint: tuple[str, int],
        self_node_id: bytes,
    ) -> None:
        self._find = find
        self._pool = pool
        self._file_id = file_id
        self._hint = hint
        self._self_node_id = self_node_id
        self._tried = False
        self.provider: Provider | None = None
        """The hinted peer, once it answered HAVE for the file."""

    async def __call__(self, key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        if key != self._file_id or self._tried:
            return self._merged(await self._find(key, quick=quick), key)
        found: list[Provider] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe)
            found.extend(await self._find(key, quick=quick))
            if found:  # only a hint: do not hold up what the DHT found for long
                nursery.cancel_scope.deadline = min(
                    nursery.cancel_scope.deadline, trio.current_time() + HINT_GRACE
                )
        return self._merged(found, key)

    def _merged(self, found: Sequence[Provider], key: bytes) -> list[Provider]:
        hinted = self.provider
        if key != self._file_id or hinted is None:
            return list(found)
        return [hinted, *(p for p in found if p.node_id != hinted.node_id)]

    async def _probe(self) -> None:
        host, port = self._hint
        where = f"{host}:{port}"
        try:
            with trio.fail_after(HINT_TIMEOUT):
                conn = await self._pool.connect(PeerAddress(None, host, port))
                if conn.peer_node_id == self._self_node_id:
                    log.info("peer hint %s is this node", where)
                elif await conn.have(self._file_id) is None:
                    log.info("peer hint %s does not know file %s", where, self._file_id.hex()[:16])
                else:
                    self.provider = Provider(conn.peer_node_id, host, port)
        except (OSError, P2PStoreError, trio.TooSlowError) as exc:
            log.info("peer hint %s is no use: %s", where, exc or type(exc).__name__)
        self._tried = True  # not reached if cancelled: a later look-up tries again
