"""Reed-Solomon erasure code over GF(2^8), byte-compatible with reedsolo.

A *stripe* is k equal-length data chunks plus m parity chunks; its k + m *shares* are numbered
``0..k-1`` (the data, unchanged: the code is systematic) and ``k..k+m-1`` (the parity). Any k of the
shares rebuild the data.

The code is reedsolo's, column by column: byte j of parity chunk p is
``reedsolo.RSCodec(m).encode(column)[k + p]`` where ``column`` is byte j of each data chunk in order
(field polynomial ``0x11d``, generator 2, first consecutive root ``2^0``). The tables are built in
:mod:`p2pstore._gf256`, independent of reedsolo's global state, and all bulk work is vectorised with
numpy (see that module for the kernel). numpy releases the GIL inside each call, so encoding and
decoding in ``trio.to_thread.run_sync`` workers runs in parallel with the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from p2pstore import _gf256 as gf
from p2pstore.errors import ConfigError, NotEnoughSharesError

__all__ = ["DECODE_CACHE_SIZE", "MAX_SHARES", "BytesLike", "ReedSolomon"]

BytesLike: TypeAlias = bytes | bytearray | memoryview | npt.NDArray[Any]
"""A contiguous buffer of bytes: bytes, bytearray, memoryview or a numpy array (any dtype; its raw
bytes are used). Non-contiguous buffers are rejected (a non-contiguous numpy array is copied)."""

MAX_SHARES = gf.FIELD_SIZE - 1
"""k + m may not exceed 255: a Reed-Solomon codeword over GF(256) has at most 255 symbols."""

BLOCK_SIZE = 1 << 20
"""Bytes of each chunk processed per kernel pass. Measured: below ~256 KiB numpy's per-call overhead
dominates; up to ~1 MiB the accumulator and its scratch stay in L2/L3 across the 7 doublings."""

SCRATCH_KEEP_MAX = 16 << 20
"""Largest per-thread scratch buffer kept between calls. Fresh buffers cost a page fault per 4 KiB
(measured: as much as the arithmetic), so worker threads reuse theirs; larger ones are freed."""

DECODE_CACHE_SIZE = 128
"""Decode schedules kept per codec (LRU). One per erasure pattern; a store sees a handful at a time,
while C(k+m, k) patterns are possible, so the cache is bounded."""


def _as_u8(obj: object, what: str) -> gf.U8Array:
    """A 1-D uint8 view of ``obj``'s bytes, without copying when it is already contiguous."""
    if isinstance(obj, np.ndarray):
        arr: npt.NDArray[Any] = np.ascontiguousarray(obj)
        try:
            return arr.reshape(-1).view(np.uint8)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what}: numpy array of dtype {arr.dtype} has no raw bytes") from exc
    if isinstance(obj, str):
        raise ConfigError(f"{what} must be bytes-like, not str")
    try:
        return np.frombuffer(obj, dtype=np.uint8)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, BufferError) as exc:
        raise ConfigError(
            f"{what} must be a contiguous bytes-like object, not {type(obj).__name__}: {exc}"
        ) from exc


_scratch = threading.local()


def _scratch_buffer(size: int) -> gf.U8Array:
    """A thread-private uint8 buffer of at least ``size`` bytes, reused between calls."""
    buf: gf.U8Array | None = getattr(_scratch, "buf", None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.uint8)
        if size <= SCRATCH_KEEP_MAX:
            _scratch.buf = buf
    return buf


def _run(schedules: Sequence[gf.Schedule], inputs: Sequence[gf.U8Array]) -> list[bytes]:
    """Evaluate each schedule over ``inputs`` (equal-length uint8 arrays), one ``bytes`` each."""
    size = int(inputs[0].size) if inputs else 0
    block = min(size, BLOCK_SIZE)
    scratch = _scratch_buffer(size + block)
    acc, tmp = scratch[:size], scratch[size : size + block]
    results: list[bytes] = []
    for schedule in schedules:
        if size <= block:
            gf.combine(schedule, inputs, acc, tmp)
        else:
            for start in range(0, size, block):
                stop = min(start + block, size)
                gf.combine(
                    schedule,
                    [a[start:stop] for a in inputs],
                    acc[start:stop],
                    tmp[: stop - start],
                )
        results.append(acc.tobytes())
    return results


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an int, not {type(value).__name__}")
    return int(value)


class ReedSolomon:
    """A systematic (k + m, k) Reed-Solomon erasure code, byte-compatible with reedsolo.

    Instances are immutable apart from an internal, lock-protected cache, so one codec may be shared
    by any number of threads. Every method is synchronous and CPU-bound; call it through
    ``trio.to_thread.run_sync`` for megabyte-sized stripes.
    """

    def __init__(self, k: int, m: int) -> None:
        """Build the codec for k data and m parity chunks per stripe.

        Raises :class:`ConfigError` unless ``1 <= k``, ``0 <= m`` and ``k + m <= 255``.
        """
        k = _check_int("k", k)
        m = _check_int("m", m)
        if k < 1 or m < 0 or k + m > MAX_SHARES:
            raise ConfigError(f"need 1 <= k, 0 <= m and k + m <= {MAX_SHARES}; got k={k}, m={m}")
        self._k = k
        self._m = m
        self._parity = tuple(tuple(row) for row in gf.parity_matrix(k, m))
        self._encode_schedules = tuple(gf.compile_row(row) for row in self._parity)
        self._decode_cache: OrderedDict[tuple[int, ...], tuple[gf.Schedule, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def k(self) -> int:
        """Number of data chunks per stripe (shares needed to rebuild it)."""
        return self._k

    @property
    def m(self) -> int:
        """Number of parity chunks per stripe (shares that may be lost)."""
        return self._m

    @property
    def n(self) -> int:
        """Number of shares per stripe, ``k + m``."""
        return self._k + self._m

    @property
    def parity_matrix(self) -> tuple[tuple[int, ...], ...]:
        """The m x k matrix G over GF(256): ``parity[j] = sum_i G[j][i] * data[i]`` bytewise."""
        return self._parity

    def __repr__(self) -> str:
        return f"ReedSolomon(k={self._k}, m={self._m})"

    def encode(self, data: Sequence[BytesLike] | npt.NDArray[Any]) -> list[bytes]:
        """Return the m parity chunks of the k data chunks ``data`` (each ``len(data[0])`` bytes).

        ``data`` is a sequence of k bytes-like objects of equal length (or a 2-D numpy array with k
        rows); they are read, never modified or copied. Raises :class:`ConfigError` for the wrong
        number of chunks, unequal lengths or a chunk that is not a contiguous bytes-like object.
        """
        arrays = self._data_arrays(data)
        if self._m == 0:
            return []
        return _run(self._encode_schedules, arrays)

    def decode(self, shares: Mapping[int, BytesLike]) -> list[bytes]:
        """Rebuild the k data chunks of a stripe from any k or more of its shares.

        ``shares`` maps share index (``0..k+m-1``; data first, then parity) to its bytes; all
        must have the same length. Extra shares beyond k are ignored (data shares are preferred).
        When every data share is present the result is those shares as ``bytes``, with no
        arithmetic (and no copy of ``bytes`` inputs).

        Raises :class:`NotEnoughSharesError` if fewer than k shares are given, and
        :class:`ConfigError` for an index out of range or not an int, unequal lengths, or a share
        that is not a contiguous bytes-like object. The result is only correct if the shares are
        genuine: this is an erasure code, verify chunk hashes before decoding.
        """
        k, n = self._k, self.n
        indices: list[int] = []
        for key in shares:
            index = _check_int("share index", key)
            if not 0 <= index < n:
                raise ConfigError(f"share index {index} out of range 0..{n - 1} for {self!r}")
            indices.append(index)
        if len(indices) < k:
            raise NotEnoughSharesError(
                f"cannot rebuild the stripe: {len(indices)} share(s) given "
                f"(indices {sorted(indices)}), {k} needed ({self!r})"
            )
        arrays = {i: _as_u8(shares[i], f"share {i}") for i in indices}
        self._check_lengths(arrays.values())
        missing = [i for i in range(k) if i not in arrays]
        if not missing:
            return [_to_bytes(shares[i], arrays[i]) for i in range(k)]
        parities = sorted(i for i in arrays if i >= k)[: len(missing)]
        rows = tuple(sorted(i for i in arrays if i < k)) + tuple(parities)
        schedules = self._decode_schedules(rows, missing)
        rebuilt = dict(zip(missing, _run(schedules, [arrays[i] for i in rows]), strict=True))
        return [rebuilt[i] if i in rebuilt else _to_bytes(shares[i], arrays[i]) for i in range(k)]

    def _data_arrays(self, data: Sequence[BytesLike] | npt.NDArray[Any]) -> list[gf.U8Array]:
        if isinstance(data, bytes | bytearray | memoryview | str) or (
            isinstance(data, np.ndarray) and data.ndim != 2
        ):
            raise ConfigError(
                f"data must be a sequence of {self._k} chunks, not a single {type(data).__name__}"
            )
        chunks = list(data)
        if len(chunks) != self._k:
            raise ConfigError(f"{self!r} encodes {self._k} data chunks, got {len(chunks)}")
        arrays = [_as_u8(chunk, f"data chunk {i}") for i, chunk in enumerate(chunks)]
        self._check_lengths(arrays)
        return arrays

    @staticmethod
    def _check_lengths(arrays: Any) -> None:
        lengths = {int(a.size) for a in arrays}
        if len(lengths) > 1:
            raise ConfigError(f"all chunks of a stripe must have one length, got {sorted(lengths)}")

    def _decode_schedules(
        self, rows: tuple[int, ...], missing: list[int]
    ) -> tuple[gf.Schedule, ...]:
        """Horner schedules rebuilding each missing data share from the shares ``rows``.

        Row r of the inverse of the k x k submatrix (rows ``rows``) of the systematic generator
        [I; G] gives data share r as a combination of those shares; only the missing rows are kept.
        """
        with self._lock:
            cached = self._decode_cache.get(rows)
            if cached is not None:
                self._decode_cache.move_to_end(rows)
                return cached
        k = self._k
        generator = [[int(i == j) for j in range(k)] for i in range(k)]
        generator.extend(list(row) for row in self._parity)
        inverse = gf.invert_matrix([generator[r] for r in rows])
        schedules = tuple(gf.compile_row(inverse[i]) for i in missing)
        with self._lock:
            self._decode_cache[rows] = schedules
            self._decode_cache.move_to_end(rows)
            while len(self._decode_cache) > DECODE_CACHE_SIZE:
                self._decode_cache.popitem(last=False)
        return schedules


def _to_bytes(obj: object, array: gf.U8Array) -> bytes:
    """``obj`` as bytes: itself when it already is ``bytes``, else a copy of its raw bytes."""
    if type(obj) is bytes:
        return obj
    return array.tobytes()
