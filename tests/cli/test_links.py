"""Issue 15, share links: ``put`` prints one; ``get`` and ``rm`` take a link, a full ID or a
unique prefix of a local file's ID."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import ConfigError
from p2pstore.links import ShareLink, decode_id, encode_id, parse_link

from .fakes import FILE_ID, FakeFileInfo, FakeNode, daemon_in_thread, invoke

HEX = FILE_ID.hex()


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)
hosts = st.sampled_from(["127.0.0.1", "example.org", "::1", "2001:db8::7"])


@given(
    st.binary(min_size=32, max_size=32),
    st.none() | names,
    st.none() | st.tuples(hosts, st.integers(1, 65535)),
)
def test_links_round_trip(file_id: bytes, name: str | None, peer: tuple[str, int] | None) -> None:
    link = ShareLink(file_id, name, peer)
    text = str(link)
    assert text.startswith("p2p://" + encode_id(file_id))
    assert " " not in text
    assert parse_link(text) == link
    shouted = "P2P://" + encode_id(file_id).upper() + text[6 + 52 :]
    assert parse_link(shouted) == link, "scheme and ID are case-insensitive"


def test_base32_id() -> None:
    encoded = encode_id(FILE_ID)
    assert len(encoded) == 52
    assert encoded == encoded.lower()
    assert decode_id(encoded.upper()) == FILE_ID


@pytest.mark.parametrize(
    "text",
    [
        "http://aaaa",
        "p2p://",
        "p2p://abc",
        "p2p://" + "a" * 51 + "1",
        "p2p://" + encode_id(FILE_ID) + "/path",
        "p2p://" + encode_id(FILE_ID) + "?name=a&name=b",
        "p2p://" + encode_id(FILE_ID) + "?evil=1",
        "p2p://" + encode_id(FILE_ID) + "?peer=nohost",
        "p2p://" + encode_id(FILE_ID) + "?name=" + "x" * 3000,
    ],
)
def test_bad_links_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_link(text)


def test_put_prints_a_share_link(daemon: FakeNode, data_dir: Path) -> None:
    src = data_dir / "my notes.txt"
    src.write_bytes(b"hello")
    result = invoke("put", str(src), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == HEX, "stdout stays the bare ID"
    link = f"p2p://{encode_id(FILE_ID)}?name=my%20notes.txt&peer=127.0.0.1:19000"
    assert result.stderr.strip() == f"share: {link}"
    assert parse_link(link) == ShareLink(FILE_ID, "my notes.txt", ("127.0.0.1", 19000))
    quiet = invoke("put", str(src), "-q", "--data-dir", str(data_dir))
    assert quiet.stderr == ""
    as_json = json.loads(invoke("put", str(src), "--json", "--data-dir", str(data_dir)).stdout)
    assert as_json["link"] == link


def test_no_peer_hint_for_a_wildcard_address(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("p2pstore.control"), "propagate", False)
    src = data_dir / "f"
    src.write_bytes(b"x")
    with daemon_in_thread(FakeNode(tcp_address=("0.0.0.0", 9000)), data_dir):
        result = invoke("put", str(src), "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["link"] == f"p2p://{encode_id(FILE_ID)}?name=f"


def test_get_accepts_a_link(daemon: FakeNode, data_dir: Path) -> None:
    link = f"p2p://{encode_id(FILE_ID)}?name=x&peer=198.51.100.1:9000"
    result = invoke("get", link, "-o", str(data_dir / "out"), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert ("get", (FILE_ID, data_dir / "out")) in daemon.calls
    bad = invoke("get", "p2p://nonsense", "--data-dir", str(data_dir))
    assert bad.exit_code == 2
    assert "base32" in bad.output


def test_get_and_rm_accept_a_unique_prefix_of_a_local_id(daemon: FakeNode, data_dir: Path) -> None:
    daemon.files[FILE_ID] = FakeFileInfo(FILE_ID, "a", 1, True, 1, 1)
    result = invoke("get", HEX[:8].upper(), "-o", str(data_dir / "o"), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert ("get", (FILE_ID, data_dir / "o")) in daemon.calls
    removed = invoke("rm", HEX[:6], "--data-dir", str(data_dir))
    assert removed.exit_code == 0, removed.output
    assert ("unpin", FILE_ID) in daemon.calls
    pinned = invoke("pin", HEX[:6], "--data-dir", str(data_dir))
    assert pinned.exit_code == 0, pinned.output
    assert ("pin", FILE_ID) in daemon.calls
    unpinned = invoke("unpin", HEX[:6], "--data-dir", str(data_dir))
    assert unpinned.exit_code == 0, unpinned.output


def test_ambiguous_unknown_or_short_prefixes_are_usage_errors(
    daemon: FakeNode, data_dir: Path
) -> None:
    twin = bytes([0, 1, 2, 3]) + bytes(28)
    daemon.files[FILE_ID] = FakeFileInfo(FILE_ID, "a", 1, True, 1, 1)
    daemon.files[twin] = FakeFileInfo(twin, "b", 1, True, 1, 1)
    ambiguous = invoke("get", "00010203", "--data-dir", str(data_dir))
    assert ambiguous.exit_code == 2
    assert "2 local file IDs" in ambiguous.output
    unique = invoke("get", HEX[:10], "-o", str(data_dir / "u"), "--data-dir", str(data_dir))
    assert unique.exit_code == 0, unique.output
    unknown = invoke("get", "ffff", "--data-dir", str(data_dir))
    assert unknown.exit_code == 2
    assert "no local file ID starts with ffff" in " ".join(unknown.output.split())
    short = invoke("get", "000", "--data-dir", str(data_dir))
    assert short.exit_code == 2
    assert "at least 4" in " ".join(short.output.split())


def test_ls_of_a_link_passes_its_peer_hint(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pstore.directory import DirectoryListing, Entry, EntryKind

    listing = DirectoryListing.build("t", 0o755, [Entry("f", EntryKind.FILE, 0o644, 3, FILE_ID)])
    hints: list[object] = []

    class ListingNode(FakeNode):
        async def fetch_listing(self, dir_id: bytes, **kw: object) -> DirectoryListing:
            hints.append(kw.get("peer_hint"))
            return listing

        async def put_directory(self, path: Path, **kw: object) -> object:
            raise NotImplementedError

        async def get_directory(self, dir_id: bytes, dest: Path, **kw: object) -> object:
            raise NotImplementedError

    monkeypatch.setattr(logging.getLogger("p2pstore.control"), "propagate", False)
    with daemon_in_thread(ListingNode(), data_dir):
        link = f"p2p://{encode_id(FILE_ID)}?name=t&peer=198.51.100.1:9000"
        result = invoke("ls", link, "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        assert invoke("ls", HEX, "--data-dir", str(data_dir)).exit_code == 0
    assert hints == [("198.51.100.1", 9000), None]


def test_check_and_providers_take_a_prefix_as_get_does(daemon: FakeNode, data_dir: Path) -> None:
    daemon.files[FILE_ID] = FakeFileInfo(FILE_ID, "a", 1, True, 1, 1)
    checked = invoke("check", HEX[:6], "--data-dir", str(data_dir))
    assert "not an ID" not in checked.output, checked.output
    found = invoke("providers", HEX[:6], "--data-dir", str(data_dir))
    assert "not an ID" not in found.output, found.output
    assert ("find_providers", FILE_ID) in daemon.calls
