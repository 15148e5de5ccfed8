"""Manifest: canonical encoding, file ID, index chunks for huge files, hostile input."""

from __future__ import annotations

import os
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import p2pstore.manifest as manifest_mod
from p2pstore.chunking import MIN_CHUNK_SIZE, Layout
from p2pstore.errors import ManifestError
from p2pstore.manifest import (
    FORMAT_VERSION,
    Manifest,
    ManifestRoot,
    root_table_capacity,
    validate_name,
)

from .helpers import CS, random_bytes, reference_encode, sha

GiB = 1 << 30

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    chunk_size = draw(st.sampled_from([CS, 2 * CS, 1 << 20]))
    k = draw(st.integers(1, 12))
    m = draw(st.integers(0, 6))
    layout = Layout(chunk_size, k, m)
    size = draw(st.integers(0, 5 * layout.stripe_bytes))
    seed = draw(st.integers(0, 2**32))
    table = random_bytes(seed, layout.total_chunks(size) * 32)
    return Manifest.from_table(draw(names), size, chunk_size, k, m, table)


def roundtrip(m: Manifest) -> Manifest:
    root = ManifestRoot.decode(m.encode_root())
    assert root.file_id == m.file_id == sha(m.encode_root())
    parts = dict(m.index_chunks())
    assert set(root.needed_chunk_ids()) <= set(parts)
    return Manifest.from_parts(root, parts)


@given(manifests())
def test_roundtrip_and_canonical(m: Manifest) -> None:
    back = roundtrip(m)
    assert back == m
    assert back.encode_root() == m.encode_root()
    assert back.file_id == m.file_id
    assert len(m.encode_root()) <= m.chunk_size
    assert m.chunk_ids() == [c for s in m.stripes for c in s]
    assert m.chunk_count == len(m.chunk_ids())


@given(manifests())
def test_encoding_is_deterministic(m: Manifest) -> None:
    again = Manifest(m.name, m.size, m.chunk_size, m.k, m.m, tuple(tuple(s) for s in m.stripes))
    assert again.encode_root() == m.encode_root()
    assert again.index_chunks() == m.index_chunks()


def test_file_id_depends_on_every_field() -> None:
    data = random_bytes(1, 3 * CS + 5)
    base, _ = reference_encode(data, "a", CS, 2, 1)
    others = [
        reference_encode(data, "b", CS, 2, 1)[0],
        reference_encode(data, "a", CS, 3, 1)[0],
        reference_encode(data, "a", CS, 2, 2)[0],
        reference_encode(data, "a", 2 * CS, 2, 1)[0],
        reference_encode(data + b"x", "a", CS, 2, 1)[0],
    ]
    assert len({base.file_id, *(o.file_id for o in others)}) == 6


def test_short_last_stripe_accessors() -> None:
    data = random_bytes(2, CS + 10)
    m, chunks = reference_encode(data, "f", CS, 4, 2)
    assert len(m.stripes) == 1
    assert m.data_chunk_count(0) == 2
    assert m.stripe_data_size(0) == CS + 10
    assert [m.chunk_length(0, p) for p in range(4)] == [CS, 10, CS, CS]
    assert [m.erasure_index(0, p) for p in range(4)] == [0, 1, 4, 5]
    assert [len(chunks[c]) for c in m.stripes[0]] == [CS, 10, CS, CS]


def test_empty_file_has_no_stripes() -> None:
    m = Manifest("empty", 0, CS, 4, 2, ())
    assert roundtrip(m) == m
    assert m.chunk_ids() == []


def test_inconsistent_manifests_are_rejected() -> None:
    ids = (bytes(32),) * 6
    with pytest.raises(ManifestError):
        Manifest("f", 5 * CS, CS, 4, 2, (ids,))  # needs 2 stripes
    with pytest.raises(ManifestError):
        Manifest("f", 4 * CS, CS, 4, 2, ((bytes(31), *ids[1:]),))
    with pytest.raises(ManifestError):
        Manifest("f", 4 * CS, CS, 4, 2, (ids[:5],))
    with pytest.raises(ManifestError):
        Manifest("f", 4 * CS, CS, 0, 2, (ids,))
    with pytest.raises(ManifestError):
        Manifest("f", 4 * CS, 1000, 4, 2, (ids,))
    with pytest.raises(ManifestError):
        Manifest("f", -1, CS, 4, 2, ())


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\0b", "a\nb", "x" * 256])
def test_bad_names(name: str) -> None:
    with pytest.raises(ManifestError):
        validate_name(name)


def _fields(m: Manifest) -> list[Any]:
    fields: list[Any] = msgpack.unpackb(m.encode_root(), raw=False)
    return fields


def _pack(fields: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def test_non_canonical_encodings_are_rejected() -> None:
    m, _ = reference_encode(random_bytes(3, 5 * CS), "f", CS, 2, 1)
    raw = m.encode_root()
    fields = _fields(m)
    assert ManifestRoot.decode(raw).file_id == m.file_id
    # size as a uint64 although it fits in a uint32
    body = b"".join(_pack([f])[1:] for f in fields[:2])
    wide = (
        b"\x98"
        + body
        + b"\xcf"
        + struct.pack(">Q", fields[2])
        + b"".join(_pack([f])[1:] for f in fields[3:])
    )
    assert msgpack.unpackb(wide, raw=False) == fields
    with pytest.raises(ManifestError, match="canonical"):
        ManifestRoot.decode(wide)
    bad: list[Any] = []
    bad.append(raw + b"\x00")  # trailing data
    bad.append(_pack([*fields[:1], fields[1].encode(), *fields[2:]]))  # name as bin
    bad.append(_pack([*fields[:7], list(fields[7])]))  # table as array
    bad.append(_pack(dict(enumerate(fields))))  # map
    bad.append(_pack([FORMAT_VERSION + 1, *fields[1:]]))
    bad.append(_pack([*fields[:2], fields[2] + 1, *fields[3:]]))  # size/table mismatch
    bad.append(_pack([*fields[:4], fields[4] + 1, *fields[5:]]))  # k mismatch
    bad.append(_pack([*fields[:4], 0, *fields[5:]]))  # k out of range
    bad.append(_pack([*fields[:5], 300, *fields[6:]]))  # m out of range
    bad.append(_pack([*fields[:6], 1, fields[7]]))  # wrong depth
    bad.append(_pack([*fields[:7], fields[7][:-1]]))  # short ID
    bad.append(_pack([*fields[:2], True, *fields[3:]]))  # bool for int
    bad.append(_pack([*fields[:2], float(fields[2]), *fields[3:]]))
    bad.append(_pack(fields[:7]))
    bad.append(_pack([*fields[:1], "a/b", *fields[2:]]))
    for b in bad:
        with pytest.raises(ManifestError):
            ManifestRoot.decode(b)


@given(st.binary(max_size=2000))
def test_garbage_only_gives_manifest_error(data: bytes) -> None:
    try:
        root = ManifestRoot.decode(data)
    except ManifestError:
        return
    assert msgpack.packb(msgpack.unpackb(data), use_bin_type=True) == data
    assert root.file_id == sha(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@given(st.lists(msgpack_values, min_size=0, max_size=9))
def test_structured_garbage_only_gives_manifest_error(fields: list[Any]) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    try:
        root = ManifestRoot.decode(data)
    except ManifestError:
        return
    assert Manifest.from_parts(root, {}).encode_root() == data  # only if truly valid


@given(manifests(), st.data())
def test_mutated_roots_fail_or_stay_canonical(m: Manifest, data: st.DataObject) -> None:
    raw = bytearray(m.encode_root())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        root = ManifestRoot.decode(bytes(raw))
    except ManifestError:
        return
    assert root.file_id != m.file_id


def test_oversized_root_is_rejected_before_parsing() -> None:
    with pytest.raises(ManifestError):
        ManifestRoot.decode(b"\x98" + b"\0" * (manifest_mod.MAX_ROOT_BYTES + 1))


def _synthetic(size: int, chunk_size: int, k: int, m: int) -> Manifest:
    layout = Layout(chunk_size, k, m)
    return Manifest.from_table(
        "big.iso", size, chunk_size, k, m, os.urandom(32 * layout.total_chunks(size))
    )


def test_100_gib_manifest_splits_into_index_chunks() -> None:
    m = _synthetic(100 * GiB + 12345, 1 << 20, 4, 2)
    index = m.index_chunks()
    assert len(index) > 1
    assert all(len(b) <= m.chunk_size and cid == sha(b) for cid, b in index)
    root_bytes = m.encode_root()
    assert len(root_bytes) <= root_table_capacity(m.chunk_size) + 512
    root = ManifestRoot.decode(root_bytes)
    assert root.depth == 1
    assert root.needed_chunk_ids() == [cid for cid, _ in index]
    parts = dict(index)
    assert root.needed_chunk_ids(parts) == []
    assert Manifest.from_parts(root, parts) == m
    with pytest.raises(ManifestError):
        Manifest.from_parts(root, {})
    cid0, b0 = index[0]
    with pytest.raises(ManifestError):
        Manifest.from_parts(root, {**parts, cid0: b"\x01" + b0[1:]})
    with pytest.raises(ManifestError):
        Manifest.from_parts(root, {**parts, cid0: b0[:-32]})


def test_deeper_index_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny root capacity forces two index levels without a gigantic table.
    monkeypatch.setattr(manifest_mod, "root_table_capacity", lambda chunk_size: 64)
    m = _synthetic(700 * 4 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE, 4, 2)  # 4200 IDs > 2 leaves
    root = ManifestRoot.decode(m.encode_root())
    assert root.depth == 2
    index = dict(m.index_chunks())
    parts: dict[bytes, bytes] = {}
    rounds = 0
    while needed := root.needed_chunk_ids(parts):
        rounds += 1
        parts.update({cid: index[cid] for cid in needed})
    assert rounds == 2
    assert parts == index
    assert Manifest.from_parts(root, parts) == m


# -- the bounded unpacker both decoders share (manifest roots, directory listings) ---------------


class _OtherError(ManifestError):
    pass


def _unpack(data: bytes, **overrides: object) -> list[object]:
    from p2pstore.manifest import unpack_array

    args: dict[str, object] = dict(
        fields=2,
        error=_OtherError,
        what="thing",
        shape="a thing is an array of 2 fields",
        max_str_len=4,
        max_bin_len=4,
        max_array_len=2,
    )
    args.update(overrides)
    return unpack_array(data, **args)  # type: ignore[arg-type]


def test_unpack_array_returns_the_array_within_its_bounds() -> None:
    assert _unpack(msgpack.packb(["abcd", b"\x00" * 4])) == ["abcd", b"\x00" * 4]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (msgpack.packb(["abcde", b""]), "thing is not valid msgpack"),  # string over the bound
        (msgpack.packb(["", b"12345"]), "thing is not valid msgpack"),  # binary over the bound
        (msgpack.packb([1, 2, 3]), "thing is not valid msgpack"),  # array over the bound
        (msgpack.packb([{1: 2}, 1]), "thing is not valid msgpack"),  # maps are refused
        (b"\xc1", "thing is not valid msgpack"),  # never-used byte
        (msgpack.packb([1]), "a thing is an array of 2 fields"),
        (msgpack.packb(7), "a thing is an array of 2 fields"),
    ],
)
def test_unpack_array_raises_the_given_error_class_and_nothing_else(
    data: bytes, message: str
) -> None:
    with pytest.raises(_OtherError, match=message):
        _unpack(data)


def test_unpack_array_detail_shapes_the_decoding_message() -> None:
    with pytest.raises(_OtherError, match=r"^thing is not valid msgpack: ExtraData$"):
        _unpack(msgpack.packb([1, 2]) + b"\x00", detail=lambda exc: type(exc).__name__)
