"""Dispersal: push a stored file's shares to other peers so it outlives its uploader.

:func:`plan_dispersal` (pure) decides which peer keeps which share: the ``n`` shares of every
stripe go to ``n`` distinct peers when at least ``n`` exist (rotated per stripe so the load is
even), else spread as evenly as the peers allow. Every holder also receives the manifest chunks
(index chunks first, root last), which is what makes it adopt the file and announce itself as
a provider. :func:`disperse` carries the plan out, each target in its own task and cancel scope;
shares of a target that fails are handed to the surviving targets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from .._groups import collapse_exception_groups
from ..errors import P2PStoreError
from ..manifest import Manifest
from ..wire.client import ConnectionPool, PeerAddress
from .download import LocalChunks, Provider

log = logging.getLogger(__name__)

#: PUTs in flight per target: enough to keep a loopback or LAN pipe busy, few enough that one
#: slow target does not hold many MiB of this node's memory.
DEFAULT_PUTS_IN_FLIGHT = 4
#: Seconds for one PUT to be acknowledged (1 MiB over a slow uplink plus an fsync).
DEFAULT_PUT_TIMEOUT = 30.0
#: Seconds for the TCP connect + handshake to one target.
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class DispersalConfig:
    """Pacing and deadlines of a dispersal."""

    puts_in_flight: int = DEFAULT_PUTS_IN_FLIGHT
    put_timeout: float = DEFAULT_PUT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@dataclass
class DispersalReport:
    """Who now holds what: shares stored per target label, and the targets that failed."""

    shares: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def holders(self) -> list[str]:
        """Labels of the targets that received every share planned for them."""
        return [label for label in self.shares if label not in self.failed]


def plan_dispersal(manifest: Manifest, targets: int) -> list[list[tuple[int, int]]]:
    """For each of ``targets`` peers, the ``(stripe, share)`` pairs it should keep.

    Share ``j`` of stripe ``s`` goes to target ``(s + j) % targets``: with ``targets >= n`` the
    shares of a stripe land on distinct peers and consecutive stripes start on different peers.
    Every share is assigned exactly once. ``targets`` must be >= 1.
    """
    if targets < 1:
        raise ValueError("dispersal needs at least one target")
    plan: list[list[tuple[int, int]]] = [[] for _ in range(targets)]
    for s, ids in enumerate(manifest.stripes):
        for j in range(len(ids)):
            plan[(s + j) % targets].append((s, j))
    return plan


def reassign(
    failed: Sequence[tuple[int, int]],
    survivors: Sequence[int],
    holdings: dict[int, set[int]],
) -> dict[int, list[tuple[int, int]]]:
    """Hand the shares of failed targets to survivors, preferring one without that stripe.

    ``holdings[t]`` is the set of stripes target ``t`` already holds a share of; it is updated.
    """
    out: dict[int, list[tuple[int, int]]] = {t: [] for t in survivors}
    if not survivors:
        return out
    for turn, (stripe, share) in enumerate(failed):
        choice = None
        for step in range(len(survivors)):
            candidate = survivors[(turn + step) % len(survivors)]
            if stripe not in holdings[candidate]:
                choice = candidate
                break
        if choice is None:
            choice = survivors[turn % len(survivors)]
        holdings[choice].add(stripe)
        out[choice].append((stripe, share))
    return out


async def disperse(
    manifest: Manifest,
    targets: Sequence[Provider],
    *,
    store: LocalChunks,
    pool: ConnectionPool,
    config: DispersalConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DispersalReport:
    """Push ``manifest``'s shares (and its manifest chunks) to ``targets`` per the plan.

    Returns a report; never raises for a target's failure: every share planned for a failed
    target (it never got the manifest, so it holds none of them) goes to the survivors. Raises
    :class:`P2PStoreError` if ``targets`` is empty, and the store's own errors if a local chunk
    cannot be read. Cancellation stops every push; the peers keep what they acknowledged.
    """
    if not targets:
        raise P2PStoreError("no peer to disperse to")
    config = config or DispersalConfig()
    report = DispersalReport()
    plan = plan_dispersal(manifest, len(targets))
    holdings = {t: {s for s, _ in plan[t]} for t in range(len(targets))}
    total = manifest.chunk_count
    done = 0
    failed: set[int] = set()

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total)

    async def push_all(round_plan: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int]]:
        leftovers: list[tuple[int, int]] = []
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for t, shares in round_plan.items():
                    if shares or manifest.chunk_count == 0:
                        nursery.start_soon(push_target, t, shares, leftovers)
        return leftovers

    async def push_target(
        t: int, shares: list[tuple[int, int]], leftovers: list[tuple[int, int]]
    ) -> None:
        target = targets[t]
        error = await push_to(target, shares)
        if error is not None:
            log.info("dispersal to %s failed: %s", target.label, error)
            failed.add(t)
            report.failed[target.label] = error
            # All of them, acknowledged or not: without the manifest root the target adopts
            # none of its shares, so none of them counts as held.
            leftovers.extend(shares)
            return
        report.shares[target.label] = report.shares.get(target.label, 0) + len(shares)

    async def push_to(target: Provider, shares: list[tuple[int, int]]) -> str | None:
        """Push ``shares`` then the manifest chunks; the target's failure as text, or None.

        Local errors (reading our own chunks) are not the target's fault and propagate.
        """
        try:
            with trio.fail_after(config.connect_timeout):
                conn = await pool.connect(PeerAddress(target.node_id, target.host, target.port))
        except _REMOTE_ERRORS as exc:
            return _describe(exc)
        remote: list[BaseException] = []
        send, receive = trio.open_memory_channel[tuple[int, int]](max(1, len(shares)))
        for item in shares:
            send.send_nowait(item)
        send.close()

        async def putter(workers: trio.CancelScope) -> None:
            async for stripe, share in receive:
                chunk_id = manifest.stripes[stripe][share]
                data = await store.get_chunk(chunk_id)
                try:
                    with trio.fail_after(config.put_timeout):
                        await conn.put(chunk_id, data)
                except _REMOTE_ERRORS as exc:
                    remote.append(exc)
                    workers.cancel()
                    return
                advance()

        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for _ in range(config.puts_in_flight):
                    nursery.start_soon(putter, nursery.cancel_scope)
        if remote:
            return _describe(remote[0])
        # Index chunks before the root: the root is what makes the target adopt the file.
        for chunk_id, data in reversed(manifest.manifest_chunks()):
            try:
                with trio.fail_after(config.put_timeout):
                    await conn.put(chunk_id, data)
            except _REMOTE_ERRORS as exc:
                return _describe(exc)
        return None

    first_round = dict(enumerate(plan))
    if manifest.chunk_count == 0:  # nothing to spread, but holders still need the manifest
        first_round = {t: [] for t in range(min(len(targets), manifest.k + manifest.m))}
    leftovers = await push_all(first_round)
    while leftovers:
        survivors = [t for t in range(len(targets)) if t not in failed]
        if not survivors:
            break
        leftovers = await push_all(reassign(leftovers, survivors, holdings))
    return report


_REMOTE_ERRORS = (P2PStoreError, OSError, trio.TooSlowError)
"""What a target can cause: refusals, quota, broken channels, timeouts, refused connections."""


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


__all__ = [
    "DispersalConfig",
    "DispersalReport",
    "disperse",
    "plan_dispersal",
    "reassign",
]
