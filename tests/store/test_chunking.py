"""Layout arithmetic and the streaming stripe reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, Layout, read_stripe
from p2pstore.errors import ConfigError

from .helpers import random_bytes

layouts = st.builds(
    Layout,
    chunk_size=st.sampled_from([1 << p for p in range(16, 25)]),
    k=st.integers(1, 20),
    m=st.integers(0, 10),
)


@pytest.mark.parametrize(
    ("chunk_size", "k", "m"),
    [
        (MIN_CHUNK_SIZE - 1, 4, 2),
        (MIN_CHUNK_SIZE // 2, 4, 2),
        (MAX_CHUNK_SIZE * 2, 4, 2),
        (3 * MIN_CHUNK_SIZE, 4, 2),
        (MIN_CHUNK_SIZE, 0, 2),
        (MIN_CHUNK_SIZE, 4, -1),
        (MIN_CHUNK_SIZE, 200, 56),
        (MIN_CHUNK_SIZE, True, 2),
        (float(MIN_CHUNK_SIZE), 4, 2),
    ],
)
def test_bad_layouts_are_config_errors(chunk_size: object, k: object, m: object) -> None:
    with pytest.raises(ConfigError):
        Layout(chunk_size, k, m)  # type: ignore[arg-type]


def test_limits_are_accepted() -> None:
    Layout(MIN_CHUNK_SIZE, 1, 0)
    Layout(MAX_CHUNK_SIZE, 200, 55)


@given(layout=layouts, size=st.integers(0, 1 << 40))
def test_stripe_arithmetic(layout: Layout, size: int) -> None:
    n = layout.stripe_count(size)
    assert (n == 0) == (size == 0)
    if n == 0:
        assert layout.total_chunks(size) == 0
        return
    total = 0
    for s in {0, n - 1}:
        d = layout.data_chunk_count(size, s)
        lengths = [layout.chunk_length(size, s, p) for p in range(d)]
        assert sum(lengths) == layout.stripe_data_size(size, s)
        assert all(0 < x <= layout.chunk_size for x in lengths)
        assert lengths[:-1] == [layout.chunk_size] * (d - 1)
        for p in range(d, d + layout.m):
            assert layout.chunk_length(size, s, p) == lengths[0] == layout.share_length(size, s)
            assert layout.erasure_index(size, s, p) == layout.k + p - d
        with pytest.raises(IndexError):
            layout.chunk_length(size, s, d + layout.m)
        if s < n - 1:
            assert d == layout.k
    total = (n - 1) * layout.stripe_bytes + layout.stripe_data_size(size, n - 1)
    assert total == size
    assert layout.total_chunks(size) == (n - 1) * (layout.k + layout.m) + layout.share_count(
        size, n - 1
    )


@given(
    k=st.integers(1, 5),
    size=st.integers(0, 5 * MIN_CHUNK_SIZE * 3),
    seed=st.integers(0, 2**32),
)
def test_read_stripe_reassembles_the_file(k: int, size: int, seed: int, tmp_path: Path) -> None:
    layout = Layout(MIN_CHUNK_SIZE, k, 1)
    data = random_bytes(seed, size)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b"".join(
            bytes(c)
            for s in range(layout.stripe_count(size))
            for c in read_stripe(fd, layout, size, s)
        )
    finally:
        os.close(fd)
    assert out == data


def test_read_stripe_detects_a_shrunk_file(tmp_path: Path) -> None:
    layout = Layout(MIN_CHUNK_SIZE, 2, 1)
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(EOFError):
            read_stripe(fd, layout, 5000, 0)
    finally:
        os.close(fd)
