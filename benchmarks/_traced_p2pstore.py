"""``p2pstore`` with a download timeline: for ``bench_netns.py --trace`` (benchmark-only code).

Run as ``python benchmarks/_traced_p2pstore.py ARGS`` (the same arguments as ``p2pstore``).
As a client command it only records when the daemon's reply arrived (``reply``, wall clock) and
when the command was done (``atexit``, before the interpreter's teardown) in the file named by
``$P2PSTORE_TRACE_CLIENT``, and imports nothing more than ``p2pstore`` does.
As ``daemon`` it wraps (without changing their behaviour) the download's steps, records when
each happened in wall-clock seconds, and after every ``get`` writes the timeline as JSON to the
file named by ``$P2PSTORE_TRACE``. Events: ``run_start``; ``discovered`` (quick or full look-up
returned, with the number of new providers); ``connect_start``/``connected`` per peer;
``manifest``; ``prepared`` (scheduler and output ready); ``peer_added`` (its HAVE was applied);
``request``, ``arrived`` (its bytes are in hand) and ``chunk`` (written, stored and reported to
the scheduler) per chunk; ``complete`` (every
stripe has k chunks); ``worker_end`` (a peer's worker ends), ``writer_end`` (the store writer
drained its queue), ``batch_stored``, ``stripe_written``; ``finish_start``/``finish_end`` (output
fsync and rename); ``run_end``;
``op_end`` (the control operation returns its result). ``$P2PSTORE_EXPERIMENT_IN_FLIGHT``, if
set, replaces the scheduler's per-peer in-flight bound (an experiment knob, nothing else).

The names wrapped are those of ``p2pstore.transfer`` today; if they change, this fails loudly
(``AttributeError`` at start) rather than tracing nothing.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_events: list[dict[str, Any]] = []


_providers: dict[str, str] = {}


def _flush() -> None:
    path = os.environ.get("P2PSTORE_TRACE")
    if path:
        with open(path, "w") as fh:
            json.dump({"events": _events, "providers": _providers}, fh)


def _mark(event: str, **fields: Any) -> None:
    _events.append({"t": time.time(), "e": event, **fields})


def _peer(value: Any) -> str:
    return value.hex()[:16] if isinstance(value, bytes) else str(value)


def _wrap_async(cls: Any, name: str, before: Callable[..., None] | None, after: Any) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(self, *args, **kwargs)
        result = await original(self, *args, **kwargs)
        if after is not None:
            after(self, result, *args, **kwargs)
        return result

    setattr(cls, name, wrapped)


def _wrap_sync(cls: Any, name: str, after: Callable[..., None]) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        after(self, result, *args, **kwargs)
        return result

    setattr(cls, name, wrapped)


def _install_client() -> None:
    from p2pstore import control

    call = control.call_blocking

    marks: dict[str, float] = {}

    @functools.wraps(call)
    def traced_call(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        marks["reply"] = time.time()
        return result

    def write() -> None:  # atexit: after the command's output, before the interpreter's teardown
        marks["atexit"] = time.time()
        path = os.environ.get("P2PSTORE_TRACE_CLIENT")
        if path and "reply" in marks:
            with open(path, "w") as fh:
                json.dump(marks, fh)

    control.call_blocking = traced_call
    atexit.register(write)


def _install_daemon() -> None:
    from p2pstore import control
    from p2pstore.transfer import download as _download
    from p2pstore.transfer import output as _output
    from p2pstore.transfer import scheduler as _scheduler

    # ``p2pstore get`` asks ``get_dir`` first (a file ID answers as a file), then ``get``.
    for op in ("get", "get_dir"):
        handler = control._HANDLERS[op]

        @functools.wraps(handler)
        async def traced_get(*args: Any, _handler: Any = handler) -> Any:
            try:
                return await _handler(*args)
            finally:
                _mark("op_end")
                _flush()

        control._HANDLERS[op] = traced_get
    download_cls: Any = _download.Download
    sched_cls: Any = _scheduler.DownloadScheduler
    output_cls: Any = _output.OutputFile
    run = download_cls.run

    @functools.wraps(run)
    async def traced_run(self: Any) -> Any:
        _events.clear()
        _mark("run_start")
        try:
            return await run(self)
        finally:
            _mark("run_end")
            _providers.update(
                {_peer(node_id): f"{p.host}:{p.port}" for node_id, p in self._providers.items()}
            )

    download_cls.run = traced_run
    in_flight = os.environ.get("P2PSTORE_EXPERIMENT_IN_FLIGHT")
    if in_flight:  # an experiment: the per-peer request bound, for measuring its effect
        sched_init = sched_cls.__init__

        @functools.wraps(sched_init)
        def init(self: Any, *args: Any, config: Any = None, **kwargs: Any) -> None:
            # A fixed pipeline of that many requests (not sized to the bandwidth-delay product).
            config = dataclasses.replace(
                config or _scheduler.SchedulerConfig(),
                max_in_flight_per_peer=int(in_flight),
                pipeline_floor=None,
            )
            sched_init(self, *args, config=config, **kwargs)

        sched_cls.__init__ = init
    _wrap_async(
        download_cls,
        "_discover",
        None,
        lambda self, result, quick=False: _mark("discovered", quick=quick, new=len(result[0])),
    )
    _wrap_async(
        download_cls,
        "_connect",
        lambda self, provider: _mark("connect_start", peer=_peer(provider.node_id)),
        lambda self, result, provider: _mark("connected", peer=_peer(provider.node_id)),
    )
    _wrap_async(
        download_cls,
        "_fetch_or_none",
        None,
        lambda self, result, conn, chunk_id: _mark("arrived", bytes=len(result or b"")),
    )
    _wrap_async(download_cls, "_fetch_manifest", None, lambda self, result: _mark("manifest"))
    _wrap_async(
        download_cls,
        "_prepare",
        None,
        lambda self, result, *a: _mark("prepared", local=len(result)),
    )
    _wrap_sync(
        sched_cls,
        "add_peer",
        lambda self, result, peer, have, now, **kw: _mark("peer_added", peer=_peer(peer)),
    )

    def requested(self: Any, result: Any, peer: Any, now: float) -> None:
        for r in result:
            _mark("request", peer=_peer(peer), index=r.index, dup=r.duplicate)

    _wrap_sync(sched_cls, "next_requests", requested)

    def received(self: Any, result: Any, peer: Any, index: int, nbytes: int, now: float) -> None:
        _mark("chunk", peer=_peer(peer), index=index, bytes=nbytes)
        if self.is_complete() and not any(e["e"] == "complete" for e in _events):
            _mark("complete")

    _wrap_sync(sched_cls, "chunk_received", received)
    # The end of a download: when the peers' workers, the store writer, its batches and the
    # stripe rebuilds finish (between "complete" and "finish_start").
    _wrap_async(download_cls, "_peer_worker", None, lambda self, r, provider: _mark("worker_end"))
    _wrap_async(download_cls, "_store_received", None, lambda self, r, q: _mark("writer_end"))
    _wrap_async(
        _store_cls(),
        "put_chunks",
        None,
        lambda self, r, items, **kw: _mark("batch_stored", chunks=len(items)),
    )
    _wrap_async(
        output_cls,
        "complete_stripe",
        None,
        lambda self, r, stripe, source: _mark("stripe_written", stripe=stripe),
    )
    _wrap_async(
        output_cls,
        "finish",
        lambda self: _mark("finish_start"),
        lambda self, r: _mark("finish_end"),
    )


def _store_cls() -> Any:
    from p2pstore.store import ChunkStore

    return ChunkStore


if __name__ == "__main__":
    if sys.argv[1:2] == ["daemon"]:
        _install_daemon()
    else:
        _install_client()
    from p2pstore.cli import main

    main()
