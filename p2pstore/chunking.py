"""How a file is cut into chunks and stripes, and a streaming reader for it.

A file of ``size`` bytes is cut into data chunks of ``chunk_size`` bytes (the last one may be
short). Consecutive runs of ``k`` data chunks form a *stripe*; each stripe gets ``m`` parity
chunks from the Reed-Solomon code. The last stripe may hold fewer than ``k`` data chunks.
Padding is implicit and never stored or sent: for the parity computation every share of a
stripe is as long as the stripe's longest (first) data chunk, a short data chunk is extended
with zeros and absent data chunks (``data_chunk_count(s) <= i < k``) are all zeros. A parity
chunk is as long as its stripe's first data chunk. An empty file has zero stripes.

Within a stripe, a chunk has a *position* (its index in ``Manifest.stripes[s]``: the stripe's
data chunks first, then its ``m`` parity chunks) and an *erasure index* (its share index for the
code: data chunk ``i`` is share ``i``, parity chunk ``j`` is share ``k + j``). They differ only in
a short last stripe; :meth:`Layout.erasure_index` converts.

This module is pure arithmetic plus :func:`read_stripe`, a positioned read of one stripe, so the
whole file is never in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_K",
    "DEFAULT_M",
    "MAX_CHUNK_SIZE",
    "MAX_SHARES",
    "MIN_CHUNK_SIZE",
    "Layout",
    "read_stripe",
]

#: Smallest chunk: below this, per-chunk overhead (hash, file, index row, request) dominates.
MIN_CHUNK_SIZE = 64 * 1024
#: Largest chunk: bounds the memory a single chunk (and a single wire frame) may take.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
#: Default chunk: large for disk/network efficiency, small enough for fine-grained swarming.
DEFAULT_CHUNK_SIZE = 1024 * 1024
#: Default data chunks per stripe.
DEFAULT_K = 4
#: Default parity chunks per stripe: any 2 of the 6 shares of a stripe may be lost.
DEFAULT_M = 2
#: k + m is bounded by the Reed-Solomon code over GF(256).
MAX_SHARES = 255


@dataclass(frozen=True)
class Layout:
    """The chunking parameters of a file: ``chunk_size``, ``k`` data and ``m`` parity per stripe.

    Construction validates them and raises :class:`~p2pstore.errors.ConfigError` unless
    ``chunk_size`` is a power of two in [``MIN_CHUNK_SIZE``, ``MAX_CHUNK_SIZE``], ``k >= 1``,
    ``m >= 0`` and ``k + m <= MAX_SHARES``. All methods are pure arithmetic on a file ``size``.
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    k: int = DEFAULT_K
    m: int = DEFAULT_M

    def __post_init__(self) -> None:
        cs, k, m = self.chunk_size, self.k, self.m
        if not all(type(v) is int for v in (cs, k, m)):
            raise ConfigError("chunk_size, k and m must be integers")
        if not (MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE) or cs & (cs - 1):
            raise ConfigError(
                f"chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE},"
                f" not {cs}"
            )
        if k < 1 or m < 0 or k + m > MAX_SHARES:
            raise ConfigError(f"need 1 <= k, 0 <= m, k + m <= {MAX_SHARES}; got k={k}, m={m}")

    @property
    def stripe_bytes(self) -> int:
        """Bytes of file data in a full stripe (``k * chunk_size``)."""
        return self.k * self.chunk_size

    def stripe_count(self, size: int) -> int:
        """Number of stripes of a file of ``size`` bytes (0 for an empty file)."""
        return -(-size // self.stripe_bytes)

    def stripe_offset(self, stripe: int) -> int:
        """Offset in the file of the first byte of ``stripe``."""
        return stripe * self.stripe_bytes

    def stripe_data_size(self, size: int, stripe: int) -> int:
        """Bytes of file data in ``stripe`` (``stripe_bytes`` except maybe for the last)."""
        self._check_stripe(size, stripe)
        return min(self.stripe_bytes, size - stripe * self.stripe_bytes)

    def data_chunk_count(self, size: int, stripe: int) -> int:
        """Number of data chunks in ``stripe`` (``k`` except maybe for the last)."""
        return -(-self.stripe_data_size(size, stripe) // self.chunk_size)

    def share_count(self, size: int, stripe: int) -> int:
        """Number of stored chunks in ``stripe``: its data chunks plus ``m`` parity chunks."""
        return self.data_chunk_count(size, stripe) + self.m

    def total_chunks(self, size: int) -> int:
        """Number of stored (data + parity) chunks of the whole file."""
        n = self.stripe_count(size)
        if n == 0:
            return 0
        return (n - 1) * (self.k + self.m) + self.share_count(size, n - 1)

    def share_length(self, size: int, stripe: int) -> int:
        """Length of every share for the erasure code, i.e. of each parity chunk of ``stripe``."""
        return min(self.chunk_size, self.stripe_data_size(size, stripe))

    def chunk_length(self, size: int, stripe: int, position: int) -> int:
        """Length of the chunk at ``position`` in ``stripe`` (data chunks first, then parity).

        Raises ``IndexError`` if the position does not exist.
        """
        d = self.data_chunk_count(size, stripe)
        if not 0 <= position < d + self.m:
            raise IndexError(f"stripe {stripe} has no chunk at position {position}")
        if position >= d:
            return self.share_length(size, stripe)
        return min(
            self.chunk_size, self.stripe_data_size(size, stripe) - position * self.chunk_size
        )

    def erasure_index(self, size: int, stripe: int, position: int) -> int:
        """The Reed-Solomon share index (0..k+m-1) of the chunk at ``position`` in ``stripe``."""
        d = self.data_chunk_count(size, stripe)
        if not 0 <= position < d + self.m:
            raise IndexError(f"stripe {stripe} has no chunk at position {position}")
        return position if position < d else self.k + (position - d)

    def for_size(self, size: int) -> Layout:
        """The layout a file of ``size`` bytes is stored with: this one, except for a file of
        ``2 <= d < k`` data chunks (less than one stripe), which gets ``k = d`` and
        ``m = max(1, ceil(m * d / k))`` parity chunks.

        Why: every stripe pays ``m`` parity chunks as long as its first data chunk, whatever
        its data, so a file shorter than a stripe paid far more than the configured
        ``(k + m) / k``; scaling ``m`` with the data keeps it near that ratio (two chunks, k=4,
        m=2: 1.5x instead of 2x) while the file still survives the loss of any one chunk.

        A one-chunk file keeps ``m``: each parity chunk of a one-chunk stripe is a scaled copy
        of it, and with one parity chunk (XOR parity) that copy is the chunk itself, which
        content addressing stores once: "2x" would really be no redundancy at all. So tiny
        files cost ``1 + m`` times their size, exactly like ``(1 + m)``-way replication, the
        least that survives ``m`` losses. Files of a stripe or more are unchanged. The manifest
        records the parameters used, so nothing else needs to know.
        """
        d = -(-size // self.chunk_size)
        if d < 2 or d >= self.k or self.m == 0:
            return self
        return Layout(self.chunk_size, d, max(1, -(-self.m * d // self.k)))

    def _check_stripe(self, size: int, stripe: int) -> None:
        if not 0 <= stripe < self.stripe_count(size):
            raise IndexError(f"a file of {size} bytes has no stripe {stripe}")


def read_stripe(
    fd: int, layout: Layout, size: int, stripe: int, buf: bytearray | None = None
) -> list[memoryview]:
    """Read ``stripe`` of the file open at ``fd`` (of ``size`` bytes) and cut it into data chunks.

    Uses positioned reads (``os.preadv``), so several threads may read different stripes of one
    descriptor at once. Returns read-only views into one fresh buffer, one per data chunk.
    Raises ``OSError`` on I/O errors and ``EOFError`` if the file is shorter than ``size``
    (it changed while being read). ``buf`` (at least ``layout.stripe_bytes`` long) is used
    instead of a fresh buffer if given; the views are then only valid until it is reused.
    """
    want = layout.stripe_data_size(size, stripe)
    if buf is None or len(buf) < want:
        buf = bytearray(want)
    view = memoryview(buf)[:want]
    offset = layout.stripe_offset(stripe)
    got = 0
    while got < want:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise EOFError(f"file ended at {offset + got} bytes, expected {size}")
        got += n
    ro = view.toreadonly()
    cs = layout.chunk_size
    return [ro[i : i + cs] for i in range(0, want, cs)]
