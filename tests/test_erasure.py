"""Tests of the Reed-Solomon erasure code, with reedsolo as the oracle."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import numpy as np
import pytest
import reedsolo
from hypothesis import given
from hypothesis import strategies as st

from p2pstore import _gf256 as gf
from p2pstore import erasure
from p2pstore.erasure import MAX_SHARES, ReedSolomon
from p2pstore.errors import ConfigError, NotEnoughSharesError, P2PStoreError


def oracle_parity(data: list[bytes], m: int) -> list[bytes]:
    """Parity computed column by column with reedsolo (the issue's definition)."""
    k = len(data)
    codec = reedsolo.RSCodec(m)
    columns = [
        bytes(codec.encode(bytes(chunk[j] for chunk in data))[k:]) for j in range(len(data[0]))
    ]
    return [bytes(col[p] for col in columns) for p in range(m)]


@st.composite
def stripes(draw: st.DrawFn, max_k: int = 12, max_m: int = 8, max_len: int = 24) -> Any:
    k = draw(st.integers(1, max_k))
    m = draw(st.integers(0, max_m))
    length = draw(st.integers(0, max_len))
    data = [draw(st.binary(min_size=length, max_size=length)) for _ in range(k)]
    return k, m, data


@given(stripes(max_m=10))
def test_encode_matches_reedsolo_columns(stripe: Any) -> None:
    k, m, data = stripe
    parity = ReedSolomon(k, m).encode(data)
    assert all(type(p) is bytes for p in parity)
    if m == 0:
        assert parity == []
    elif data[0]:
        assert parity == oracle_parity(data, m)
    else:
        assert parity == [b""] * m


@given(
    st.integers(1, MAX_SHARES - 1).flatmap(
        lambda k: st.tuples(st.just(k), st.integers(1, MAX_SHARES - k))
    ),
    st.randoms(use_true_random=False),
)
def test_parity_matrix_matches_reedsolo_for_any_k_m(
    km: tuple[int, int], rnd: random.Random
) -> None:
    k, m = km
    data = [bytes([rnd.randrange(256)]) for _ in range(k)]
    assert ReedSolomon(k, m).encode(data) == oracle_parity(data, m)


@given(stripes(), st.data())
def test_any_k_shares_rebuild_the_data(stripe: Any, draw: st.DataObject) -> None:
    k, m, data = stripe
    rs = ReedSolomon(k, m)
    shares = data + rs.encode(data)
    present = draw.draw(
        st.lists(st.sampled_from(range(k + m)), min_size=k, max_size=k + m, unique=True)
    )
    rebuilt = rs.decode({i: shares[i] for i in present})
    assert rebuilt == data
    assert all(type(chunk) is bytes for chunk in rebuilt)


@given(
    st.integers(1, MAX_SHARES).flatmap(
        lambda k: st.tuples(st.just(k), st.integers(0, MAX_SHARES - k))
    ),
    st.randoms(use_true_random=False),
)
def test_rebuild_for_any_k_m_within_limits(km: tuple[int, int], rnd: random.Random) -> None:
    k, m = km
    rs = ReedSolomon(k, m)
    data = [rnd.randbytes(2) for _ in range(k)]
    shares = data + rs.encode(data)
    present = rnd.sample(range(k + m), k)
    assert rs.decode({i: shares[i] for i in present}) == data


@given(stripes(max_m=6), st.data())
def test_fewer_than_k_shares_raise(stripe: Any, draw: st.DataObject) -> None:
    k, m, data = stripe
    rs = ReedSolomon(k, m)
    shares = data + rs.encode(data)
    present = draw.draw(st.lists(st.sampled_from(range(k + m)), max_size=k - 1, unique=True))
    with pytest.raises(NotEnoughSharesError) as info:
        rs.decode({i: shares[i] for i in present})
    message = str(info.value)
    assert f"{len(present)} share(s) given" in message
    assert f"{k} needed" in message


def test_extreme_k_plus_m_255() -> None:
    k, m = 200, 55
    rng = np.random.default_rng(255)
    data = [rng.integers(0, 256, 8, dtype=np.uint8).tobytes() for _ in range(k)]
    rs = ReedSolomon(k, m)
    parity = rs.encode(data)
    assert parity == oracle_parity(data, m)
    shares = data + parity
    # Lose the first m data shares: the data is rebuilt from 145 data and all 55 parity shares.
    assert rs.decode({i: shares[i] for i in range(m, k + m)}) == data
    assert ReedSolomon(1, 254).decode({254: ReedSolomon(1, 254).encode([b"xyz"])[-1]}) == [b"xyz"]


@given(stripes(max_k=6, max_m=4, max_len=40), st.integers(1, 7))
def test_blocked_kernel_gives_the_same_bytes(stripe: Any, block: int) -> None:
    k, m, data = stripe
    rs = ReedSolomon(k, m)
    whole = rs.encode(data)
    shares = data + whole
    with mock.patch.object(erasure, "BLOCK_SIZE", block):
        assert rs.encode(data) == whole
        assert rs.decode({i: shares[i] for i in range(m, k + m)}) == data


def test_all_data_present_is_a_fast_path_without_copies() -> None:
    rs = ReedSolomon(4, 2)
    data = [bytes([i]) * 10 for i in range(4)]
    parity = rs.encode(data)
    shares = dict(enumerate(data + parity))
    rebuilt = rs.decode(shares)
    assert all(a is b for a, b in zip(rebuilt, data, strict=True))
    # Garbage parity is not even looked at when every data share is present.
    shares[4] = b"\xff" * 10
    assert rs.decode(shares) == data


def test_accepts_numpy_memoryview_and_bytearray_inputs() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 256, (5, 64), dtype=np.uint8)
    as_bytes = [row.tobytes() for row in matrix]
    rs = ReedSolomon(5, 3)
    expected = rs.encode(as_bytes)
    assert rs.encode(matrix) == expected
    assert rs.encode(list(matrix)) == expected
    assert rs.encode([memoryview(b) for b in as_bytes]) == expected
    assert rs.encode([bytearray(b) for b in as_bytes]) == expected
    # Any dtype: its raw bytes are used.
    assert rs.encode([row.view(np.uint32) for row in matrix]) == expected
    # Non-contiguous numpy arrays are accepted (copied).
    wide = np.repeat(matrix, 2, axis=1)[:, ::2]
    assert rs.encode(list(wide)) == expected
    shares: dict[int, Any] = {5: memoryview(expected[0]), 6: np.frombuffer(expected[1], np.uint8)}
    shares |= {7: bytearray(expected[2]), 0: matrix[0], 1: matrix[1]}
    assert rs.decode(shares) == as_bytes


@pytest.mark.parametrize(
    ("k", "m"), [(0, 1), (-1, 2), (1, -1), (200, 56), (256, 0), (True, 1), (2.0, 1), (2, "1")]
)
def test_bad_parameters_raise_config_error(k: Any, m: Any) -> None:
    with pytest.raises(ConfigError):
        ReedSolomon(k, m)


def test_limits_are_inclusive() -> None:
    assert ReedSolomon(254, 1).n == MAX_SHARES
    assert ReedSolomon(1, 0).encode([b"abc"]) == []
    assert ReedSolomon(255 - 3, 3).k == 252


@pytest.mark.parametrize(
    "data",
    [
        [b"ab", b"cd"],  # too few
        [b"ab", b"cd", b"ef", b"gh"],  # too many
        [b"ab", b"cd", b"e"],  # unequal lengths
        b"abc",  # a single chunk, not a sequence of chunks
        ["ab", "cd", "ef"],  # str is not bytes
        [b"ab", b"cd", memoryview(b"efgh")[::2]],  # not contiguous
        [b"ab", b"cd", 3],
        np.zeros(6, dtype=np.uint8),
    ],
)
def test_bad_encode_arguments_raise_config_error(data: Any) -> None:
    with pytest.raises(ConfigError):
        ReedSolomon(3, 2).encode(data)


@pytest.mark.parametrize(
    "shares",
    [
        {0: b"ab", 1: b"cd", 5: b"ef"},  # index out of range
        {0: b"ab", 1: b"cd", -1: b"ef"},
        {0: b"ab", 1: b"cd", "2": b"ef"},
        {0: b"ab", 1: b"cd", 3: b"e"},  # unequal lengths
        {0: b"ab", 1: b"cd", 3: object()},
    ],
)
def test_bad_decode_arguments_raise_config_error(shares: Any) -> None:
    with pytest.raises(ConfigError) as info:
        ReedSolomon(3, 2).decode(shares)
    assert isinstance(info.value, P2PStoreError)


def test_decode_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(erasure, "DECODE_CACHE_SIZE", 3)
    k, m = 3, 4
    rs = ReedSolomon(k, m)
    data = [b"abc", b"def", b"ghi"]
    shares = data + rs.encode(data)
    for first in range(k + m - 2):
        present = [first, first + 1, first + 2]
        assert rs.decode({i: shares[i] for i in present}) == data
        assert len(rs._decode_cache) <= 3


def test_concurrent_use_from_threads_is_correct() -> None:
    rs = ReedSolomon(4, 2)

    def job(seed: int) -> bool:
        rng = np.random.default_rng(seed)
        size = int(rng.integers(1, 200_000))
        data = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(4)]
        shares = data + rs.encode(data)
        lost = {int(i) for i in rng.choice(6, 2, replace=False)}
        return rs.decode({i: s for i, s in enumerate(shares) if i not in lost}) == data

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(job, range(16)))


def test_field_arithmetic_matches_reedsolo() -> None:
    reedsolo.init_tables(gf.PRIM, gf.GENERATOR)
    for a in range(256):
        for b in range(256):
            assert gf.mul(a, b) == reedsolo.gf_mul(a, b)
            assert int(gf.MUL_TABLE[a, b]) == gf.mul(a, b)
        if a:
            assert gf.mul(a, gf.inverse(a)) == 1


def test_singular_matrix_is_rejected() -> None:
    with pytest.raises(ValueError, match="singular"):
        gf.invert_matrix([[1, 2], [2, 4]])
    with pytest.raises(ZeroDivisionError):
        gf.inverse(0)
