from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.manifest import Manifest
from p2pstore.transfer.disperse import plan_dispersal, reassign
from p2pstore.transfer.download import bitmap_indices, stripe_specs


def _manifest(size: int, k: int, m: int, chunk_size: int = 64 * 1024) -> Manifest:
    from p2pstore.chunking import Layout

    layout = Layout(chunk_size, k, m)
    stripes = []
    counter = 0
    for s in range(layout.stripe_count(size)):
        ids = []
        for _ in range(layout.share_count(size, s)):
            ids.append(hashlib.sha256(counter.to_bytes(8, "big")).digest())
            counter += 1
        stripes.append(tuple(ids))
    return Manifest("f", size, chunk_size, k, m, tuple(stripes))


params = st.tuples(
    st.integers(0, 40 * 64 * 1024), st.integers(1, 6), st.integers(0, 4), st.integers(1, 12)
)


@given(params)
def test_plan_assigns_every_share_once_and_spreads_stripes(p: tuple[int, int, int, int]) -> None:
    size, k, m, targets = p
    manifest = _manifest(size, k, m)
    plan = plan_dispersal(manifest, targets)
    assigned = sorted(pair for shares in plan for pair in shares)
    expected = sorted((s, j) for s, ids in enumerate(manifest.stripes) for j in range(len(ids)))
    assert assigned == expected
    for s, ids in enumerate(manifest.stripes):
        owners = [t for t, shares in enumerate(plan) for (ss, _) in shares if ss == s]
        # distinct peers for a stripe's shares whenever there are enough of them
        assert len(set(owners)) == min(len(ids), targets)
    loads = [len(shares) for shares in plan]
    assert max(loads, default=0) - min(loads, default=0) <= max(
        (len(ids) for ids in manifest.stripes), default=0
    )


@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5)), max_size=40),
    st.lists(st.integers(0, 9), min_size=1, max_size=6, unique=True),
)
def test_reassign_hands_out_every_share(
    failed: list[tuple[int, int]], survivors: list[int]
) -> None:
    holdings = {t: set() for t in survivors}
    out = reassign(failed, survivors, holdings)
    assert sorted(pair for shares in out.values() for pair in shares) == sorted(failed)
    assert set(out) == set(survivors)


@given(st.lists(st.booleans(), max_size=300))
def test_bitmap_indices_lsb_first(bits: list[bool]) -> None:
    bitmap = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            bitmap[i // 8] |= 1 << (i % 8)
    # trailing garbage bits beyond the count are ignored
    if bits and len(bits) % 8:
        bitmap[-1] |= 0x80
    assert bitmap_indices(bytes(bitmap), len(bits)) == [i for i, b in enumerate(bits) if b]


def test_stripe_specs_short_last_stripe() -> None:
    manifest = _manifest(5 * 64 * 1024 + 10, 4, 2)
    specs = stripe_specs(manifest)
    assert [s.k for s in specs] == [4, 2]
    assert specs[1].chunk_sizes == (64 * 1024, 10, 64 * 1024, 64 * 1024)
