"""``docs/protocol.md``'s "Directory manifest" section against the code (in the style of
``test_protocol_spec.py``, whose document readers and msgpack shortest-form helpers it uses): the
worked example is rebuilt from the document's words alone and compared with our encoder and
decoder, the stated limits are the code's constants, and the ordering and symlink rules are
re-implemented from the text and compared with the code on random inputs."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_spec import doc_says, dump, mp_bin, mp_str, mp_uint

from p2pstore import directory as d
from p2pstore.directory import DirectoryError, DirectoryListing, Entry, EntryKind
from p2pstore.errors import ManifestError


def mp_array(items: list[bytes]) -> bytes:
    assert len(items) < 16
    return bytes([0x90 | len(items)]) + b"".join(items)


def test_listing_example_in_the_document() -> None:
    doc_says("a directory `site` (mode 0o755) holding a file `index.html`")
    doc_says("(mode 0o644, 5 bytes, file ID SHA-256 of `a`), an empty directory `img` (0o700)")
    doc_says("a symlink `latest` → `index.html`")
    fid = hashlib.sha256(b"a").digest()
    # From the document's tables: the header, then the entries sorted (img, index.html, latest).
    spec = mp_array(
        [
            mp_str("p2pstore-directory"),
            mp_uint(1),
            mp_str("site"),
            mp_uint(0o755),
            mp_array(
                [
                    mp_array([mp_str("img"), mp_uint(1), mp_uint(0o700)]),
                    mp_array(
                        [mp_str("index.html"), mp_uint(0), mp_uint(0o644), mp_uint(5), mp_bin(fid)]
                    ),
                    mp_array([mp_str("latest"), mp_uint(2), mp_str("index.html")]),
                ]
            ),
        ]
    )
    documented = dump("directory listing")
    assert spec == documented
    ours = DirectoryListing.build(
        "site",
        0o755,
        [
            Entry("latest", EntryKind.SYMLINK, target="index.html"),
            Entry("index.html", EntryKind.FILE, 0o644, 5, fid),
            Entry("img", EntryKind.DIR, 0o700),
        ],
    )
    assert ours.encode() == documented
    assert DirectoryListing.decode(documented) == ours
    doc_says("(`95 b2` then the 18 bytes of `p2pstore-directory`)")
    assert documented[:2] == bytes.fromhex("95b2")
    assert documented[2:20] == b"p2pstore-directory"


def test_directory_limits_are_the_codes() -> None:
    doc_says("| listing bytes | at most 16 MiB")
    assert d.MAX_LISTING_BYTES == 16 * 1024 * 1024
    doc_says("a file larger than 16 MiB is never a directory")
    doc_says("| entries | at most 100,000 |")
    assert d.MAX_ENTRIES == 100_000
    doc_says("at most 64 components and 3072 UTF-8 bytes")
    assert (d.MAX_PATH_DEPTH, d.MAX_PATH_BYTES) == (64, 3072)
    doc_says("| symlink `target` | 1-1024 UTF-8 bytes")
    assert d.MAX_TARGET_BYTES == 1024
    doc_says("| `mode` | 0 … 0o777 |")
    assert d.MODE_MASK == 0o777
    doc_says("the listing is refused, `ManifestError`")
    assert issubclass(DirectoryError, ManifestError)
    doc_says("| 1 | version | int | `1` (anything else: refused) |")
    assert d.DIRECTORY_VERSION == 1


def test_sort_example_in_the_document() -> None:
    doc_says("(so `a/b` sorts before `a-b`, whose first component `a-b` is greater than `a`)")
    listing = DirectoryListing.build(
        "r",
        0o755,
        [
            Entry("a-b", EntryKind.DIR, 0o755),
            Entry("a", EntryKind.DIR, 0o755),
            Entry("a/b", EntryKind.DIR, 0o755),
        ],
    )
    assert [e.path for e in listing.entries] == ["a", "a/b", "a-b"]


def spec_target_ok(link: str, target: str) -> bool:
    """The document's symlink rule, from its words."""
    if not target or target.startswith("/") or len(target.encode()) > 1024:
        return False
    parts = target.split("/")
    if any(p in ("", ".") for p in parts):
        return False
    leading = 0
    while leading < len(parts) and parts[leading] == "..":
        leading += 1
    if ".." in parts[leading:]:
        return False
    if any("\\" in p or any(ord(c) < 0x20 or ord(c) == 0x7F for c in p) for p in parts):
        return False
    return leading <= len(link.split("/")) - 1


components = st.sampled_from(["..", ".", "", "a", "b", "c\\d", "e\x01"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(["x", "y"]), min_size=0, max_size=3),
    st.lists(components, min_size=1, max_size=5),
    st.booleans(),
)
def test_symlink_rule_is_the_documented_one(
    parents: list[str], parts: list[str], absolute: bool
) -> None:
    target = ("/" if absolute else "") + "/".join(parts)
    link = "/".join([*parents, "l"])
    dirs = [Entry("/".join(parents[: i + 1]), EntryKind.DIR, 0o755) for i in range(len(parents))]
    entries = [*dirs, Entry(link, EntryKind.SYMLINK, target=target)]
    raw: bytes = msgpack.packb(
        ["p2pstore-directory", 1, "r", 0o755, [e.to_wire() for e in entries]],
        use_bin_type=True,
    )
    if spec_target_ok(link, target):
        assert DirectoryListing.decode(raw).symlinks()[0].target == target
    else:
        with pytest.raises(DirectoryError):
            DirectoryListing.decode(raw)
