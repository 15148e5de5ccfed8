"""p2pstore.proctune: the garbage-collector tuning a daemon applies once it is ready."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from p2pstore.proctune import GC_THRESHOLDS, tune_process


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Put the collector back as the rest of the suite expects it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_freezes_live_objects_and_raises_the_thresholds() -> None:
    tune_process()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_threshold()[0] > 700  # less often than CPython's default
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_process()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2


@pytest.mark.usefixtures("restore_gc")
def test_tuning_again_lets_frozen_garbage_go() -> None:
    class Holder:
        ref: object = None

    cycle = Holder()
    cycle.ref = cycle
    alive = weakref.ref(cycle)
    tune_process()  # the cycle is alive: frozen with the rest
    del cycle  # garbage now, but a frozen object is never collected ...
    gc.collect()
    assert alive() is not None
    tune_process()  # ... unless unfrozen first, which tune_process does
    assert alive() is None
