"""Issue 15: ``get`` (and ``cat``, ``get -o -``) of a share link hands the link's peer hint to
the daemon (which tries it beside the DHT: tests/node/test_peer_hint.py); a bare ID or a link
without one hands none."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.control import ProtocolError, make_request, parse_request
from p2pstore.links import ShareLink

from .fakes import FILE_ID, FakeNode, invoke


@pytest.mark.parametrize(
    ("ref", "hint"),
    [
        (str(ShareLink(FILE_ID, "hello.txt", ("127.0.0.1", 4242))), ("127.0.0.1", 4242)),
        (str(ShareLink(FILE_ID, None, ("::1", 4243))), ("::1", 4243)),
        (str(ShareLink(FILE_ID, "hello.txt")), None),
        (FILE_ID.hex(), None),
    ],
)
def test_get_passes_the_links_peer_hint(
    ref: str, hint: tuple[str, int] | None, daemon: FakeNode, data_dir: Path, tmp_path: Path
) -> None:
    result = invoke("get", ref, "-o", str(tmp_path / "out.txt"), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert daemon.peer_hints == [hint]
    assert (tmp_path / "out.txt").read_bytes() == b"hello world\n"


def test_the_control_protocol_checks_the_hint() -> None:
    base = {"file_id": FILE_ID, "dest": None, "cwd": "/"}
    assert parse_request(make_request("get", base)).args == base
    good = parse_request(make_request("get", {**base, "peer": ["h", 1]}))
    assert good.args["peer"] == ("h", 1)
    for bad in (["h"], ["h", 0], ["h", 70000], ["", 1], [1, 1], ["h", True], "h:1"):
        with pytest.raises(ProtocolError):
            parse_request(make_request("get", {**base, "peer": bad}))


@pytest.mark.parametrize(
    ("ref", "hint"),
    [
        (str(ShareLink(FILE_ID, "hello.txt", ("127.0.0.1", 4242))), ("127.0.0.1", 4242)),
        (FILE_ID.hex(), None),
    ],
)
@pytest.mark.parametrize("command", [["cat"], ["get", "-o", "-"]])
def test_cat_passes_the_links_peer_hint(
    command: list[str], ref: str, hint: tuple[str, int] | None, daemon: FakeNode, data_dir: Path
) -> None:
    result = invoke(command[0], ref, *command[1:], "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert daemon.peer_hints == [hint]
    assert result.stdout_bytes == b"hello world\n"


def test_the_control_protocol_checks_the_hint_of_cat() -> None:
    assert parse_request(make_request("cat", {"file_id": FILE_ID})).args == {"file_id": FILE_ID}
    good = parse_request(make_request("cat", {"file_id": FILE_ID, "peer": ["h", 1]}))
    assert good.args["peer"] == ("h", 1)
    with pytest.raises(ProtocolError):
        parse_request(make_request("cat", {"file_id": FILE_ID, "peer": ["h", 0]}))
