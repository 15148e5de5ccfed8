"""Builders shared by the scheduler tests."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

from p2pstore.transfer import DownloadScheduler, SchedulerConfig, StripeSpec

CHUNK = 100  # bytes per chunk in these tests (sizes only matter for accounting)


def make_stripes(shapes: Sequence[tuple[int, int]], size: int = CHUNK) -> list[StripeSpec]:
    """Stripes of the given (n, k) shapes with distinct chunk IDs and equal chunk sizes."""
    out = []
    for s, (n, k) in enumerate(shapes):
        ids = tuple(hashlib.sha256(f"{s}/{j}".encode()).digest() for j in range(n))
        out.append(StripeSpec(ids, k, (size,) * n))
    return out


def make_sched(
    shapes: Sequence[tuple[int, int]],
    *,
    already_have: Iterable[int] = (),
    seed: int = 0,
    **config: int | float | bool,
) -> DownloadScheduler:
    """A scheduler over ``shapes``; seeds are not spared unless ``spare_seeds=True`` is given
    (most tests are about the other rules, with peers that hold everything)."""
    config.setdefault("spare_seeds", False)
    return DownloadScheduler(
        make_stripes(shapes),
        already_have=already_have,
        config=SchedulerConfig(**config),  # type: ignore[arg-type]
        rng=random.Random(seed),
    )
