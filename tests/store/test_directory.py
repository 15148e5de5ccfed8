"""The directory listing codec: round trip, one canonical form, every malformed or unsafe
listing refused with DirectoryError (and never anything else)."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.directory import (
    DIRECTORY_MAGIC,
    MAX_ENTRIES,
    MAX_PATH_DEPTH,
    DirectoryError,
    DirectoryListing,
    Entry,
    EntryKind,
    is_listing,
    symlink_target_error,
)
from p2pstore.errors import ManifestError

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))
modes = st.integers(0, 0o777)
fids = st.binary(min_size=32, max_size=32)


@st.composite
def listings(draw: st.DrawFn) -> DirectoryListing:
    """A random valid tree: directories first drawn as paths, then files and links in them."""
    dirs: list[tuple[str, ...]] = [()]
    entries: dict[tuple[str, ...], Entry] = {}
    for _ in range(draw(st.integers(0, 5))):
        parent = draw(st.sampled_from(dirs))
        if len(parent) >= 4:
            continue
        path = (*parent, draw(names))
        if path in entries:
            continue
        entries[path] = Entry("/".join(path), EntryKind.DIR, draw(modes))
        dirs.append(path)
    for _ in range(draw(st.integers(0, 8))):
        parent = draw(st.sampled_from(dirs))
        path = (*parent, draw(names))
        if path in entries or path in dirs:
            continue
        if draw(st.booleans()):
            size = draw(st.integers(0, 1 << 40))
            entries[path] = Entry("/".join(path), EntryKind.FILE, draw(modes), size, draw(fids))
        else:
            ups = draw(st.integers(0, len(parent)))
            tail = draw(st.lists(names, min_size=0 if ups else 1, max_size=3))
            target = "/".join([".."] * ups + tail)
            entries[path] = Entry("/".join(path), EntryKind.SYMLINK, target=target)
    return DirectoryListing.build(draw(names), draw(modes), entries.values())


@settings(max_examples=200, deadline=None)
@given(listings())
def test_round_trip_is_identity_and_canonical(listing: DirectoryListing) -> None:
    data = listing.encode()
    assert is_listing(data)
    again = DirectoryListing.decode(data)
    assert again == listing
    assert again.encode() == data
    # Building from the same entries in another order gives the same bytes (one encoding).
    shuffled = DirectoryListing.build(listing.name, listing.mode, reversed(listing.entries))
    assert shuffled.encode() == data


@settings(max_examples=300, deadline=None)
@given(listings(), st.data())
def test_mutated_bytes_never_crash(listing: DirectoryListing, data: st.DataObject) -> None:
    raw = bytearray(listing.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = DirectoryListing.decode(bytes(raw))
    except DirectoryError:
        return
    assert decoded.encode() == bytes(raw)  # anything accepted is canonical


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    header = msgpack.packb(DIRECTORY_MAGIC)
    for candidate in (data, b"\x95" + header + data, b"\x95" + header + b"\x01" + data):
        with contextlib.suppress(DirectoryError):
            DirectoryListing.decode(candidate)


def _wire(entries: list[list[Any]], *, name: str = "root", mode: int = 0o755) -> bytes:
    packed: bytes = msgpack.packb([DIRECTORY_MAGIC, 1, name, mode, entries], use_bin_type=True)
    return packed


FID = hashlib.sha256(b"x").digest()


def _refused(entries: list[list[Any]], match: str, **kw: Any) -> None:
    with pytest.raises(DirectoryError, match=match):
        DirectoryListing.decode(_wire(entries, **kw))


def test_valid_small_tree() -> None:
    listing = DirectoryListing.decode(
        _wire(
            [
                ["a", 1, 0o750],
                ["a/b.txt", 0, 0o644, 3, FID],
                ["a/up", 2, "../c"],
                ["c", 0, 0o600, 3, FID],
                ["empty", 1, 0o700],
            ]
        )
    )
    assert [e.path for e in listing.files()] == ["a/b.txt", "c"]
    assert listing.total_size == 6
    assert listing.file_ids() == [FID]
    assert isinstance(DirectoryError("x"), ManifestError)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("../etc/passwd", "climbs out"),
        ("a/../../x", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty or ."),
        ("./a", "empty or ."),
        ("a/.", "empty or ."),
        ("", "non-empty"),
        ("a\x00b", "not a single plain"),
        ("a\\..\\b", "not a single plain"),
        ("a\nb", "not a single plain"),
    ],
)
def test_hostile_paths_refused(path: str, match: str) -> None:
    _refused([["a", 1, 0o755], [path, 0, 0o644, 1, FID]], match)


def test_structure_refused() -> None:
    _refused([["a", 0, 0o644, 1, FID], ["a", 0, 0o644, 1, FID]], "duplicate")
    _refused([["b", 0, 0o644, 1, FID], ["a", 0, 0o644, 1, FID]], "out of order")
    _refused([["d/x", 0, 0o644, 1, FID]], "parent is not a directory")
    _refused([["d", 0, 0o644, 1, FID], ["d/x", 0, 0o644, 1, FID]], "parent is not a directory")
    # A symlink as a parent: writing d/x would follow it out of the tree.
    _refused([["d", 2, "e"], ["d/x", 0, 0o644, 1, FID], ["e", 1, 0o755]], "parent is not")
    _refused([["a", 0, 0o4755, 1, FID]], "mode")
    _refused([["a", 1, 0o1777]], "mode")
    _refused([["a", 0, 0o644, -1, FID]], "size")
    _refused([["a", 0, 0o644, 1, FID[:31]]], "file ID")
    _refused([["a", 0, 0o644, 1, FID, 0]], "5 fields")
    _refused([["a", 1, 0o755, 0]], "3 fields")
    _refused([["a", 3, 0]], "unknown kind")
    _refused([["a", True, 0o755]], "unknown kind")
    _refused([], "mode", mode=0o2755)
    _refused([], "directory name", name="..")
    _refused([], "directory name", name="a/b")
    deep = "/".join(["d"] * (MAX_PATH_DEPTH + 1))
    _refused([[deep, 1, 0o755]], "deeper")


@pytest.mark.parametrize(
    ("link", "target", "match"),
    [
        ("x", "/etc", "absolute"),
        ("x", "..", "leaves the tree"),
        ("a/x", "../..", "leaves the tree"),
        ("a/x", "../../etc/passwd", "leaves the tree"),
        ("x", "a/../..", ".. after a name"),
        ("x", "a/../b", ".. after a name"),
        ("x", "a//b", "empty or ."),
        ("x", "./a", "empty or ."),
        ("x", "a/", "empty or ."),
        ("x", "", "non-empty"),
        ("x", "a\x00b", "not plain"),
    ],
)
def test_symlinks_out_of_the_tree_refused(link: str, target: str, match: str) -> None:
    _refused([["a", 1, 0o755], [link, 2, target]], match)


def test_symlink_targets_inside_allowed() -> None:
    assert symlink_target_error(("a", "b", "x"), "../../c") is None
    assert symlink_target_error(("a", "x"), "..") is None
    assert symlink_target_error(("x",), "a/b") is None
    assert symlink_target_error(("x",), "../a") is not None


def test_not_canonical_refused() -> None:
    good = _wire([["a", 0, 0o644, 1, FID]])
    DirectoryListing.decode(good)
    # The same values with a non-shortest integer form (uint16 for 1) are not canonical.
    longer = good.replace(b"\xcd\x01\xa4\x01\xc4", b"\xcd\x01\xa4\xcd\x00\x01\xc4")
    assert longer != good
    with pytest.raises(DirectoryError, match="canonical"):
        DirectoryListing.decode(longer)
    # A str where bin is due.
    with pytest.raises(DirectoryError):
        DirectoryListing.decode(
            msgpack.packb(
                [DIRECTORY_MAGIC, 1, "r", 0o755, [["a", 0, 0o644, 1, FID]]], use_bin_type=False
            )
        )
    with pytest.raises(DirectoryError, match="version"):
        DirectoryListing.decode(msgpack.packb([DIRECTORY_MAGIC, 2, "r", 0o755, []]))
    with pytest.raises(DirectoryError, match="not a directory"):
        DirectoryListing.decode(b"hello world")
    with pytest.raises(DirectoryError, match="not a directory"):
        DirectoryListing.decode(msgpack.packb([DIRECTORY_MAGIC, 1, "r", 0o755]))


def test_bounds_refused_before_decoding() -> None:
    too_many = [[f"{i:06d}", 1, 0o755] for i in range(MAX_ENTRIES + 1)]
    with pytest.raises(DirectoryError):
        DirectoryListing.decode(_wire(too_many))
    with pytest.raises(DirectoryError, match="larger"):
        DirectoryListing.decode(b"\x95" + b"\x00" * (16 * 1024 * 1024 + 1))


def test_build_refuses_what_decode_refuses() -> None:
    with pytest.raises(DirectoryError):
        DirectoryListing.build("r", 0o755, [Entry("../x", EntryKind.DIR, 0o755)])
    with pytest.raises(DirectoryError):
        DirectoryListing.build("r", 0o755, [Entry("x", EntryKind.DIR, 0o755, size=3)])
    with pytest.raises(DirectoryError):
        DirectoryListing.build("r", 0o755, [Entry("x", EntryKind.SYMLINK, target="/etc")])


def test_case_collisions() -> None:
    listing = DirectoryListing.build(
        "r",
        0o755,
        [
            Entry("Readme", EntryKind.FILE, 0o644, 1, FID),
            Entry("README", EntryKind.FILE, 0o644, 1, FID),
            Entry("caf\u00e9", EntryKind.DIR, 0o755),
            Entry("cafe\u0301", EntryKind.DIR, 0o755),
            Entry("other", EntryKind.DIR, 0o755),
        ],
    )
    clashes = listing.case_collisions()
    assert {frozenset(c) for c in clashes} == {
        frozenset({"Readme", "README"}),
        frozenset({"caf\u00e9", "cafe\u0301"}),
    }
