"""Turning Trio's exception groups back into the plain exceptions our APIs document."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

__all__ = ["collapse_exception_groups"]


@contextlib.contextmanager
def collapse_exception_groups() -> Iterator[None]:
    """Re-raise the first non-``Cancelled`` exception of a nursery's group on its own.

    Callers of the store and of :func:`reassemble` get the documented plain exceptions
    (``OSError``, ``ChunkNotFoundError``...) rather than an ``ExceptionGroup``; concurrent
    failures beyond the first are consequences of the same fault. Groups of only ``Cancelled``
    pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        for exc in _leaves(group):
            if not isinstance(exc, trio.Cancelled):
                raise exc from None
        raise


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc
