"""Process-wide tuning for a long-running node process: the cyclic garbage collector.

A node's heap is mostly long-lived (imported modules, routing tables, the store's index, open
channels) while its hot path allocates and drops many small containers per message. CPython's
default collector (thresholds 700/10/10) runs a young collection every 700 net container
allocations and, every so often, a full one that walks the whole heap; in a busy node that is
several percent of its CPU spent finding almost nothing (most messages are freed by reference
counting). :func:`tune_process` makes the start-up heap permanent (``gc.freeze``) and collects
the young generation less often. Garbage in reference cycles is still collected, only in larger
batches. The daemon calls it once it is ready; benchmark harnesses call the same function, so
they measure what users run.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 20, 20)
"""``gc.set_threshold`` of a tuned process: a young collection every 20 000 net container
allocations (CPython's default: 700), an older one every 20 young ones (default 10). A few
milliseconds of a busy node's allocations; cyclic garbage waits at most that long."""


def tune_process() -> None:
    """Tune the calling process's garbage collector for serving; call once start-up is done.

    Collects what start-up left behind, then freezes every object alive now (they are never
    walked again by the collector, though reference counting still frees them), and sets
    :data:`GC_THRESHOLDS`. Calling it again unfreezes first, so it re-freezes only what is alive
    then (a process that starts several nodes in turn, like a benchmark, leaks nothing).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
