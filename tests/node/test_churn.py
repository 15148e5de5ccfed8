"""A hypothesis-driven network: nodes join, leave and come back while files are put and fetched.

Hypothesis draws a program (a list of operations); one Trio run interprets it against real nodes
on 127.0.0.1. Invariant: a get of a file whose shares are still reachable (at least k of every
stripe held by live nodes) returns identical bytes; any other get fails with
FileUnavailableError; no get ever produces wrong bytes or leaves a file behind on failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore import FileUnavailableError, NotDispersedError
from p2pstore.manifest import Manifest

from .swarm import FAST, Member, Swarm

#: Small chunks and stripes keep each example quick while still exercising several stripes.
CONFIG = replace(FAST, chunk_size=64 * 1024, k=2, m=1)
MAX_NODES = 5


@dataclass(frozen=True)
class Op:
    kind: str  # "join" | "leave" | "rejoin" | "put" | "get"
    who: int
    arg: int


ops = st.lists(
    st.builds(
        Op,
        st.sampled_from(["join", "leave", "rejoin", "put", "put", "get", "get", "get"]),
        st.integers(0, MAX_NODES - 1),
        st.integers(0, 400_000),
    ),
    min_size=3,
    max_size=10,
)


def _reachable(manifest: Manifest, holders: list[set[bytes]]) -> bool:
    held = set().union(*holders) if holders else set()
    return all(
        sum(1 for cid in ids if cid in held) >= manifest.data_chunk_count(s)
        for s, ids in enumerate(manifest.stripes)
    )


async def _interpret(program: list[Op], root: Path) -> None:
    files: dict[bytes, tuple[bytes, Manifest]] = {}  # file_id -> (sha256, manifest)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, root, CONFIG)
        await swarm.start()  # the network always has a first node to bootstrap from
        for step, op in enumerate(program):
            live = swarm.live
            stopped = [m for m in swarm.members if m.stopped.is_set()]
            if op.kind == "join" and len(swarm.members) < MAX_NODES:
                await swarm.start()
            elif op.kind == "leave" and len(live) > 1:
                await swarm.stop(live[op.who % len(live)])
            elif op.kind == "rejoin" and stopped:
                member: Member = stopped[op.who % len(stopped)]
                await swarm.restart(member)
            elif op.kind == "put" and live:
                node = live[op.who % len(live)]
                src = root / f"src{step}"
                data = hashlib.shake_256(f"{step}:{op.arg}".encode()).digest(op.arg)
                src.write_bytes(data)
                try:
                    file_id = await node.put(src, disperse=True)
                except NotDispersedError as exc:  # a lone node: stored there only
                    file_id = exc.file_id
                files[file_id] = (
                    hashlib.sha256(data).digest(),
                    await node.store.load_manifest(file_id),
                )
            elif op.kind == "get" and live and files:
                file_id = sorted(files)[op.arg % len(files)]
                digest, manifest = files[file_id]
                node = live[op.who % len(live)]
                holders = [
                    set(
                        cid
                        for cid, ok in zip(
                            manifest.chunk_ids(),
                            n.store.has_chunks(manifest.chunk_ids()),
                            strict=True,
                        )
                        if ok
                    )
                    for n in swarm.live
                ]
                # Reachable: some live node has the manifest, and live nodes hold k per stripe.
                reachable = any(n.store.has_chunk(file_id) for n in swarm.live) and _reachable(
                    manifest, holders
                )
                dest = root / f"got{step}"
                try:
                    with trio.fail_after(30):
                        await node.get(file_id, dest)
                except FileUnavailableError:
                    assert not reachable, f"step {step}: reachable file reported unavailable"
                    assert not dest.exists()
                else:
                    assert hashlib.sha256(dest.read_bytes()).digest() == digest
                    assert reachable, f"step {step}: unreachable file was fetched?"
                assert [n for n in os.listdir(root) if n.endswith(".part")] == []
        nursery.cancel_scope.cancel()


def _run(program: list[Op]) -> None:
    root = Path(tempfile.mkdtemp(prefix="p2pstore-churn-"))
    try:
        trio.run(_interpret, program, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops)
def test_churn_never_returns_wrong_bytes(program: list[Op]) -> None:
    _run(program)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=list(HealthCheck))
@given(ops)
def test_churn_never_returns_wrong_bytes_thorough(program: list[Op]) -> None:
    _run(program)
