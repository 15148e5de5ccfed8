"""Helpers of ``bench_swarm.py``: a swarm of nodes in one process, and one timed download.

:func:`run_swarm` starts a fresh network (N seeders + 1 downloader, each in its own data directory
under ``workdir``, all on 127.0.0.1 with free ports, bootstrapped from the first seeder), puts the
file on every seeder without dispersal, times one ``get`` on the downloader, checks the output and
tears everything down. The download's phases are timed by wrapping (not changing) the downloader's
provider look-up and store calls; the wrappers only read the clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import trio

from p2pstore.dht import DhtConfig
from p2pstore.node import Node, NodeConfig, open_node

#: Bytes written per call while creating the random input file.
WRITE_BLOCK = 4 * 1024 * 1024
#: Seconds a whole run (setup + download) may take beyond 3x its ideal transfer time before it is
#: abandoned: the benchmark must stop by itself even if a download hangs.
RUN_DEADLINE = 120.0
#: Seconds to let the nodes' start-up announcements settle before the timed ``get``.
SETTLE_SECONDS = 0.3

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864; accepts B, kB, MB, GB, KiB, MiB, GiB (case-insensitive)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def package_versions(names: tuple[str, ...]) -> str:
    """``"python 3.11.7, trio 0.35.0, ..."``: Python's and each named package's version (or
    "(not installed)"), then p2pstore's, for the benchmark's header."""
    parts = [f"python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    with contextlib.suppress(PackageNotFoundError):
        parts.append(f"p2pstore {version('p2pstore')}")
    return ", ".join(parts)


def write_random_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes (``os.urandom``) to ``path``."""
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, WRITE_BLOCK))
            f.write(block)
            left -= len(block)


def file_sha256(path: Path) -> bytes:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(WRITE_BLOCK):
            h.update(block)
    return h.digest()


@dataclass
class SwarmRun:
    """One timed download: wall time of ``get``, first chunk, per-seeder bytes and phases."""

    seeders: int
    wall: float
    first_chunk: float | None
    bytes_per_seeder: list[int]
    setup_seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    providers_found: int = 0


def _instrument(node: Node, marks: dict[str, float], counts: dict[str, int]) -> None:
    """Record in ``marks`` (``perf_counter`` values) when the download reaches each phase, and in
    ``counts["providers"]`` how many providers the first look-up returned.

    ``discovered``: the provider look-up returned; ``manifest``: the manifest is in hand (the
    download asks the store which chunks it has right after); ``transferred``: every stripe is
    complete (the manifest is pinned right before the rebuild); ``rebuilt``: the output file is
    written and renamed.
    """
    find = node._find_file_providers
    store = node.store

    async def find_providers(key: bytes, **options: Any) -> Any:
        result = await find(key, **options)
        marks.setdefault("discovered", time.perf_counter())
        counts.setdefault("providers", len(result))
        return result

    has_chunks = store.has_chunks

    def timed_has_chunks(chunk_ids: Any) -> Any:
        marks.setdefault("manifest", time.perf_counter())
        return has_chunks(chunk_ids)

    def after(name: str, fn: Callable[..., Awaitable[Any]], *, before: bool) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if before:
                marks.setdefault(name, time.perf_counter())
            result = await fn(*args, **kwargs)
            if not before:
                marks.setdefault(name, time.perf_counter())
            return result

        return wrapped

    node._find_file_providers = find_providers  # type: ignore[method-assign]
    store.has_chunks = timed_has_chunks  # type: ignore[method-assign]
    store.add_manifest = after("transferred", store.add_manifest, before=True)  # type: ignore[method-assign]
    store.reassemble = after("rebuilt", store.reassemble, before=False)  # type: ignore[method-assign]


async def run_swarm(
    workdir: Path,
    src: Path,
    digest: bytes,
    n_seeders: int,
    upload_limit: float | None,
    *,
    dht_request_timeout: float | None = None,
) -> SwarmRun:
    """Start N seeders + 1 downloader in ``workdir``, time one ``get`` of ``src``, tear down.

    Raises ``AssertionError`` if the seeders disagree on the file ID or the output differs from
    ``src`` (``digest`` is its SHA-256), and ``trio.TooSlowError`` past ``RUN_DEADLINE`` plus
    three times the ideal transfer time. ``workdir`` is deleted afterwards.
    """
    logging.getLogger("p2pstore").setLevel(logging.WARNING)
    dht = (
        DhtConfig()
        if dht_request_timeout is None
        else DhtConfig(request_timeout=dht_request_timeout)
    )
    config = NodeConfig(
        host="127.0.0.1", udp_port=0, tcp_port=0, upload_limit=upload_limit, dht=dht
    )
    setup_started = time.perf_counter()
    size = src.stat().st_size
    ideal = size / (n_seeders * upload_limit) if upload_limit else 0.0
    with trio.fail_after(RUN_DEADLINE + 3 * ideal):
        async with trio.open_nursery() as nursery:

            async def run_node(
                name: str,
                bootstrap: list[tuple[str, int]],
                *,
                task_status: trio.TaskStatus[Node],
            ) -> None:
                async with open_node(workdir / name, config, bootstrap=bootstrap) as node:
                    task_status.started(node)
                    await trio.sleep_forever()

            first: Node = await nursery.start(run_node, "seeder0", [])
            seeders = [first]
            for i in range(1, n_seeders):
                seeders.append(await nursery.start(run_node, f"seeder{i}", [first.udp_address]))
            downloader: Node = await nursery.start(run_node, "downloader", [first.udp_address])
            ids = {await seeder.put(src, disperse=False) for seeder in seeders}
            assert len(ids) == 1, "seeders computed different file IDs"
            (file_id,) = ids
            await trio.sleep(SETTLE_SECONDS)
            setup = time.perf_counter() - setup_started

            marks: dict[str, float] = {}
            counts: dict[str, int] = {}
            _instrument(downloader, marks, counts)
            dest = workdir / "downloaded.bin"
            started = time.perf_counter()
            result = await downloader.get(file_id, dest)
            wall = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    assert file_sha256(dest) == digest, "downloaded file differs from the source"
    labels = {f"{s.tcp_address[0]}:{s.tcp_address[1]}": i for i, s in enumerate(seeders)}
    per_seeder = [0] * n_seeders
    for label, nbytes in result.bytes_from_peers.items():
        per_seeder[labels[label]] += nbytes
    phases = {name: at - started for name, at in sorted(marks.items(), key=lambda kv: kv[1])}
    phases["returned"] = wall
    if result.first_chunk_seconds is not None:
        phases["first_chunk"] = result.first_chunk_seconds
    shutil.rmtree(workdir, ignore_errors=True)
    return SwarmRun(
        seeders=n_seeders,
        wall=wall,
        first_chunk=result.first_chunk_seconds,
        bytes_per_seeder=per_seeder,
        setup_seconds=setup,
        phases=phases,
        providers_found=counts.get("providers", 0),
    )
