"""GF(2^8) arithmetic in reedsolo's field, and the vectorised kernel of the erasure code.

The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1) (primitive polynomial ``0x11d``) with
generator ``2``: exactly reedsolo's defaults (``prim=0x11d, generator=2, c_exp=8``). Tables are
built here, once, at import, so nothing depends on reedsolo's module-global table state.

Bulk work never loops over bytes in Python. A linear combination ``sum_i c_i * x_i`` of byte arrays
is evaluated by Horner's rule over the bits of the coefficients: from the highest bit down, the
accumulator is multiplied by 2 (:func:`_xtime`, four numpy ufunc calls on whole arrays) and the
inputs whose coefficient has that bit set are XORed in. This costs at most 7 doublings per output
plus one XOR per set coefficient bit, all SIMD-vectorised by numpy, with no gather (measured: a
256-entry table look-up with ``np.take`` costs about 7 times a XOR on uint8 arrays, a doubling 4-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

U8Array: TypeAlias = npt.NDArray[np.uint8]

PRIM = 0x11D
"""reedsolo's default primitive polynomial for GF(2^8)."""

GENERATOR = 2
"""reedsolo's default generator (alpha) of the multiplicative group."""

FIELD_SIZE = 256

# The reduction applied by a doubling when the top bit falls off: PRIM without its x^8 term.
_REDUCE = np.uint8(PRIM & 0xFF)


def _build_tables() -> tuple[list[int], list[int]]:
    exp = [0] * (2 * FIELD_SIZE)
    log = [0] * FIELD_SIZE
    x = 1
    for i in range(FIELD_SIZE - 1):
        exp[i] = x
        log[x] = i
        # Multiply x by the generator with shift-and-add (carry-less), reducing by PRIM.
        y, g = 0, GENERATOR
        while g:
            if g & 1:
                y ^= x
            g >>= 1
            x <<= 1
            if x & 0x100:
                x ^= PRIM
        x = y
    for i in range(FIELD_SIZE - 1, 2 * FIELD_SIZE):
        exp[i] = exp[i - (FIELD_SIZE - 1)]
    return exp, log


EXP, LOG = _build_tables()


def mul(a: int, b: int) -> int:
    """Product of two field elements (ints in 0..255)."""
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def inverse(a: int) -> int:
    """Multiplicative inverse of a non-zero field element; raises ZeroDivisionError for 0."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(256)")
    return EXP[(FIELD_SIZE - 1) - LOG[a]]


def _mul_table() -> U8Array:
    log = np.array(LOG, dtype=np.intp)
    exp = np.array(EXP, dtype=np.uint8)
    table: U8Array = exp[log[:, None] + log[None, :]]
    table[0, :] = 0
    table[:, 0] = 0
    return table


MUL_TABLE: U8Array = _mul_table()
"""``MUL_TABLE[a, b] == mul(a, b)``: 64 KiB, for small matrix work only, never for bulk data."""


def parity_matrix(k: int, m: int) -> list[list[int]]:
    """The ``m x k`` matrix G with ``parity[j] = sum_i G[j][i] * data[i]``, byte by byte.

    It is the systematic Reed-Solomon code of reedsolo's ``RSCodec(m)`` (fcr=0): a message of k
    bytes ``d_0..d_{k-1}`` is the polynomial ``sum d_i x^(k-1-i)``; its parity is the remainder of
    ``msg(x) * x^m`` modulo ``g(x) = prod_{r<m} (x - 2^r)``, highest degree first. Column i of G is
    therefore ``x^(m+k-1-i) mod g(x)``.
    """
    # g(x), coefficients highest degree first; monic of degree m.
    g = [1]
    for r in range(m):
        root = EXP[r]
        nxt = [*g, 0]
        for t, c in enumerate(g):
            nxt[t + 1] ^= mul(c, root)
        g = nxt
    columns: list[list[int]] = []
    # rem = x^(m+e) mod g as m coefficients (highest degree first), for e = 0, 1, ...
    rem = [0] * m
    if m:
        rem = [g[t] for t in range(1, m + 1)]  # x^m = g(x) - (lower terms); char 2 so minus = plus
    for _ in range(k):
        columns.append(rem)
        # rem * x mod g: shift up one degree, reduce the overflowing top coefficient.
        top = rem[0] if m else 0
        shifted = [*rem[1:], 0]
        rem = [shifted[t] ^ mul(top, g[t + 1]) for t in range(m)]
    columns.reverse()  # column i is x^(m+k-1-i): the last one computed is for i = 0
    return [[columns[i][j] for i in range(k)] for j in range(m)]


def invert_matrix(rows: Sequence[Sequence[int]]) -> list[list[int]]:
    """Inverse of a square matrix over GF(256) by Gauss-Jordan elimination (rows vectorised).

    Raises ValueError if the matrix is singular (never the case for a k x k submatrix of an MDS
    code's systematic generator).
    """
    n = len(rows)
    aug = np.zeros((n, 2 * n), dtype=np.uint8)
    aug[:, :n] = np.asarray(rows, dtype=np.uint8).reshape(n, n)
    aug[np.arange(n), n + np.arange(n)] = 1
    for col in range(n):
        nz = np.flatnonzero(aug[col:, col])
        if nz.size == 0:
            raise ValueError("matrix is singular over GF(256)")
        pivot = col + int(nz[0])
        if pivot != col:
            aug[[col, pivot]] = aug[[pivot, col]]
        aug[col] = MUL_TABLE[inverse(int(aug[col, col])), aug[col]]
        factors = aug[:, col].copy()
        factors[col] = 0
        aug ^= MUL_TABLE[factors[:, None], aug[col][None, :]]
    return [[int(v) for v in row] for row in aug[:, n:]]


Schedule: TypeAlias = tuple[tuple[int, ...], ...]
"""A compiled linear combination: for each bit level, highest first, the input indices to XOR in."""


def compile_row(coeffs: Sequence[int]) -> Schedule:
    """Horner schedule of ``sum_i coeffs[i] * x_i``: input indices per bit level, top bit first.

    The first level is the highest bit set in any coefficient; an all-zero row compiles to ``()``.
    """
    top = max((c.bit_length() for c in coeffs), default=0)
    return tuple(
        tuple(i for i, c in enumerate(coeffs) if (c >> bit) & 1) for bit in range(top - 1, -1, -1)
    )


def _xtime(acc: U8Array, tmp: U8Array) -> None:
    """``acc *= 2`` in the field, in place; ``tmp`` is scratch of the same shape."""
    # tmp = 1 where the top bit is set, else 0 (a signed compare: measured faster than a uint8
    # shift, which has no SIMD instruction on x86), then scaled to the reduction byte.
    np.less(acc.view(np.int8), 0, out=tmp.view(np.bool_))
    np.multiply(tmp, _REDUCE, out=tmp)
    np.add(acc, acc, out=acc)  # shift left by one, top bit dropped (uint8 wraps)
    np.bitwise_xor(acc, tmp, out=acc)


def combine(schedule: Schedule, inputs: Sequence[U8Array], out: U8Array, tmp: U8Array) -> None:
    """Write the linear combination compiled in ``schedule`` of ``inputs`` into ``out``.

    All arrays are 1-D uint8 of one length; ``out`` and ``tmp`` must not alias any input.
    """
    if not schedule:
        out.fill(0)
        return
    started = False
    for level in schedule:
        if started:
            _xtime(out, tmp)
            for i in level:
                np.bitwise_xor(out, inputs[i], out=out)
        elif level:
            if len(level) == 1:
                np.copyto(out, inputs[level[0]])
            else:
                np.bitwise_xor(inputs[level[0]], inputs[level[1]], out=out)
                for i in level[2:]:
                    np.bitwise_xor(out, inputs[i], out=out)
            started = True
