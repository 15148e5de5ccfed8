"""The control protocol: pure codec and validation, then server and client over a real socket."""

from __future__ import annotations

import contextlib
import os
import random
import stat
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pstore import control
from p2pstore.control import (
    MAX_REQUEST_BYTES,
    ControlError,
    DaemonAlreadyRunningError,
    DaemonNotRunningError,
    decode_message,
    encode_message,
    make_request,
    parse_reply,
    parse_request,
    serve_control,
    to_plain,
)
from p2pstore.errors import ConfigError, ProtocolError
from p2pstore.wire.framing import FrameDecoder, encode_frame

from .fakes import FILE_ID, OTHER_ID, FakeContact, FakeNode

# ----------------------------------------------------------------------------- pure codec

ids = st.binary(min_size=32, max_size=32)
abs_paths = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    min_size=0,
    max_size=200,
).map(lambda s: "/" + s)

requests = st.one_of(
    st.sampled_from(["status", "peers", "ls", "gc", "verify"]).map(lambda op: (op, {})),
    ids.map(lambda k: ("providers", {"key": k})),
    st.tuples(st.sampled_from(["pin", "unpin"]), ids).map(lambda t: (t[0], {"file_id": t[1]})),
    st.tuples(abs_paths, st.booleans()).map(lambda t: ("put", {"path": t[0], "disperse": t[1]})),
    st.tuples(ids, st.none() | abs_paths, abs_paths).map(
        lambda t: ("get", {"file_id": t[0], "dest": t[1], "cwd": t[2]})
    ),
)


@given(requests)
def test_request_round_trips_through_the_framer(req: tuple[str, dict[str, Any]]) -> None:
    op, args = req
    wire = encode_message(make_request(op, args))
    decoder = FrameDecoder(MAX_REQUEST_BYTES)
    frames = decoder.feed(wire[:3]) + decoder.feed(wire[3:])
    assert len(frames) == 1
    parsed = parse_request(decode_message(frames[0], max_bytes=MAX_REQUEST_BYTES))
    assert parsed.op == op
    assert parsed.args == args


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_yields_a_map_or_protocol_error(data: bytes) -> None:
    try:
        message = decode_message(data, max_bytes=MAX_REQUEST_BYTES)
    except ProtocolError:
        return
    assert isinstance(message, dict)
    with contextlib.suppress(ProtocolError):
        parse_request(message)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=10,
        ),
        max_size=5,
    )
)
def test_parse_request_never_raises_anything_but_protocol_error(message: dict[str, Any]) -> None:
    for candidate in (message, {"v": 1, "op": "put", "args": message}):
        with contextlib.suppress(ProtocolError):
            parse_request(candidate)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "message",
    [
        {"v": 2, "op": "status", "args": {}},
        {"v": True, "op": "status", "args": {}},
        {"v": 1, "op": "launch_missiles", "args": {}},
        {"v": 1, "op": "status", "args": {}, "extra": 1},
        {"v": 1, "op": "status", "args": []},
        {"v": 1, "op": "status", "args": {"unexpected": 1}},
        {"v": 1, "op": "pin", "args": {"file_id": b"short"}},
        {"v": 1, "op": "pin", "args": {"file_id": "00" * 32}},
        {"v": 1, "op": "put", "args": {"path": "relative/file", "disperse": True}},
        {"v": 1, "op": "put", "args": {"path": "/a\0b", "disperse": True}},
        {"v": 1, "op": "put", "args": {"path": "/" + "a" * 5000, "disperse": True}},
        {"v": 1, "op": "put", "args": {"path": "/f", "disperse": 1}},
        {"v": 1, "op": "get", "args": {"file_id": FILE_ID, "dest": None}},
        {"v": 1, "op": "get", "args": {"file_id": FILE_ID, "dest": 3, "cwd": "/"}},
    ],
)
def test_invalid_requests_are_rejected(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        parse_request(message)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", _pack([1, 2]), _pack({1: 2}), _pack({"a": 1}) + b"\x00", _pack("str")],
)
def test_malformed_payloads_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(payload, max_bytes=MAX_REQUEST_BYTES)


def test_oversized_payload_is_rejected_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_message(b"\x00" * 101, max_bytes=100)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"type": "progress", "data": {"done": 1}}, "progress"),
        ({"type": "result", "data": {"x": [1, {"y": None}]}}, "result"),
        ({"type": "error", "code": "not_found", "message": "gone\nreally"}, "error"),
    ],
)
def test_valid_replies_parse(message: dict[str, Any], kind: str) -> None:
    reply = parse_reply(message)
    assert reply.kind == kind
    if kind == "error":
        assert reply.message == "gone really"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "bogus", "data": {}},
        {"type": "result"},
        {"type": "result", "data": []},
        {"type": "error", "code": "", "message": "x"},
        {"type": "error", "code": "x", "message": 3},
        {"type": "error", "code": "x", "message": "m" * 5000},
        {"type": "result", "data": {"deep": _nested(20)}},
    ],
)
def test_invalid_replies_are_rejected(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(message)


def test_make_request_refuses_to_send_an_invalid_request() -> None:
    with pytest.raises(ProtocolError):
        make_request("pin", {"file_id": b"x"})


@dataclass(frozen=True)
class _Thing:
    ident: bytes
    where: Path
    pair: tuple[str, int]
    nested: dict[bytes, FakeContact]


def test_to_plain_converts_node_results() -> None:
    thing = _Thing(b"\x01\x02", Path("/x"), ("h", 1), {b"\xff": FakeContact(b"\x00", "h", 2)})
    assert to_plain(thing) == {
        "ident": "0102",
        "where": "/x",
        "pair": ["h", 1],
        "nested": {"ff": {"node_id": "00", "host": "h", "port": 2}},
    }


def test_to_plain_leaves_out_derived_fields_of_a_real_contact() -> None:
    # A DHT contact caches its ID as a 256-bit integer (init=False): msgpack cannot encode it,
    # and it says nothing the node ID does not.
    from p2pstore.control import encode_message
    from p2pstore.dht.contact import Contact

    plain = to_plain(Contact(b"\xff" * 32, "127.0.0.1", 7))
    assert plain == {"node_id": "ff" * 32, "host": "127.0.0.1", "port": 7}
    encode_message({"type": "result", "data": {"peers": [plain]}})


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("a\\b\\c.txt", "c.txt"),
        (".bashrc", "FALLBACK"),
        ("dir/", "FALLBACK"),
        ("", "FALLBACK"),
        (None, "FALLBACK"),
        ("..", "FALLBACK"),
        ("evil\x1b[2Jname", "evil [2Jname"),
    ],
)
def test_safe_file_name(name: object, safe: str) -> None:
    assert control.safe_file_name(name, "FALLBACK") == safe


def test_one_line_strips_control_characters() -> None:
    assert control.one_line("a\x1b[31mb\nc\td") == "a [31mb c d"
    assert len(control.one_line("x" * 5000)) == control.MAX_ERROR_MESSAGE_CHARS


# ----------------------------------------------------------------------------- over a socket


@pytest.fixture
async def served(nursery: trio.Nursery, data_dir: Path) -> AsyncIterator[FakeNode]:
    node = FakeNode()
    await nursery.start(serve_control, node, data_dir)
    return node


async def _raw(data_dir: Path) -> trio.SocketStream:
    return await trio.open_unix_socket(os.fspath(data_dir / control.CONTROL_SOCKET_NAME))


async def _read_all(stream: trio.SocketStream) -> list[dict[str, Any]]:
    decoder = FrameDecoder(control.MAX_REPLY_BYTES)
    out: list[dict[str, Any]] = []
    with trio.fail_after(5):
        while data := await stream.receive_some(65536):
            out += [
                decode_message(f, max_bytes=control.MAX_REPLY_BYTES) for f in decoder.feed(data)
            ]
    return out


async def test_status_round_trip_and_socket_mode(served: FakeNode, data_dir: Path) -> None:
    result = await control.call(data_dir, "status")
    assert result["node_id"] == "11" * 32
    assert result["udp"] == ["127.0.0.1", 18468]
    mode = os.stat(data_dir / control.CONTROL_SOCKET_NAME).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_every_operation_reaches_the_node(served: FakeNode, data_dir: Path) -> None:
    src = data_dir / "f.txt"
    src.write_bytes(b"abc")
    put = await control.call(data_dir, "put", {"path": str(src), "disperse": False})
    assert put == {
        "file_id": FILE_ID.hex(),
        "size": 3,
        "chunks": 3,
        "dispersed": False,
        "not_dispersed": None,
        "name": "f.txt",
    }
    assert (await control.call(data_dir, "ls"))["files"][0]["name"] == "f.txt"
    assert (await control.call(data_dir, "peers"))["peers"][0]["port"] == 18469
    prov = await control.call(data_dir, "providers", {"key": FILE_ID})
    assert prov["providers"][0]["tcp_port"] == 19001
    assert (await control.call(data_dir, "pin", {"file_id": FILE_ID}))["pinned"] is True
    assert (await control.call(data_dir, "unpin", {"file_id": FILE_ID}))["pinned"] is False
    assert (await control.call(data_dir, "gc"))["freed_bytes"] == 4096
    assert (await control.call(data_dir, "verify"))["checked"] == 7
    out = data_dir / "out"
    out.mkdir()
    got = await control.call(data_dir, "get", {"file_id": FILE_ID, "dest": None, "cwd": str(out)})
    assert got["path"] == str(out / "f.txt")  # the name from the (fake) manifest
    assert os.listdir(out) == ["f.txt"]  # the partial file was renamed, nothing left behind
    assert [c[0] for c in served.calls] == [
        "put", "file_info", "list_files", "peers", "find_providers", "pin", "unpin", "gc",
        "verify", "file_info", "get", "file_info",
    ]  # fmt: skip
    assert served.calls[0][1] == (src, False)


async def test_put_streams_progress_before_the_result(served: FakeNode, data_dir: Path) -> None:
    served.put_delay = 0.15
    src = data_dir / "f.txt"
    src.write_bytes(b"abc")
    events: list[dict[str, Any]] = []
    result = await control.call(
        data_dir, "put", {"path": str(src), "disperse": True}, on_progress=events.append
    )
    assert result["file_id"] == FILE_ID.hex()
    assert events
    assert all(e["phase"] == "store" and e["total"] == 3 for e in events)
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)


async def test_keepalives_flow_while_an_operation_is_silent(
    served: FakeNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "KEEPALIVE_INTERVAL", 0.05)
    served.verify_delay = 0.5
    stream = await _raw(data_dir)
    await stream.send_all(encode_message(make_request("verify")))
    decoder = FrameDecoder(control.MAX_REPLY_BYTES)
    kinds: list[str] = []
    with trio.fail_after(5):
        while "result" not in kinds:
            for frame in decoder.feed(await stream.receive_some(65536)):
                kinds.append(parse_reply(decode_message(frame, max_bytes=1 << 20)).kind)
    await stream.aclose()
    assert kinds.count("progress") >= 3
    assert kinds[-1] == "result"


async def test_error_replies_carry_code_and_message(served: FakeNode, data_dir: Path) -> None:
    with pytest.raises(ControlError) as info:
        await control.call(data_dir, "get", {"file_id": OTHER_ID, "dest": None, "cwd": "/"})
    assert info.value.code == "unavailable"
    assert "no reachable providers" in str(info.value)
    with pytest.raises(ControlError) as info:
        await control.call(data_dir, "providers", {"key": OTHER_ID})
    assert info.value.code == "internal"
    with pytest.raises(ControlError) as info:
        await control.call(data_dir, "put", {"path": "/nonexistent/file", "disperse": True})
    assert info.value.code == "not_found"
    assert "/nonexistent/file" in str(info.value)
    assert (await control.call(data_dir, "gc"))["freed_bytes"] == 4096


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(b"\xc1\xc1"),
        encode_frame(_pack([1, 2, 3])),
        encode_frame(_pack({"v": 1, "op": "rm -rf", "args": {}})),
        struct.pack(">I", MAX_REQUEST_BYTES + 1) + b"x" * 100,
        struct.pack(">I", 2**32 - 1),
    ],
)
async def test_malformed_or_oversized_request_closes_only_that_connection(
    served: FakeNode, data_dir: Path, garbage: bytes
) -> None:
    bystander = await _raw(data_dir)
    bad = await _raw(data_dir)
    await bad.send_all(garbage)
    replies = await _read_all(bad)  # the server answers once, then closes
    assert len(replies) == 1
    assert replies[0]["type"] == "error"
    assert replies[0]["code"] == "bad_request"
    await bad.aclose()
    # the other connection and new ones still work
    await bystander.send_all(encode_message(make_request("gc")))
    decoder = FrameDecoder(1 << 20)
    with trio.fail_after(5):
        frames: list[bytes] = []
        while not frames:
            frames = decoder.feed(await bystander.receive_some(65536))
    assert parse_reply(decode_message(frames[0], max_bytes=1 << 20)).data == {"freed_bytes": 4096}
    await bystander.aclose()
    assert (await control.call(data_dir, "status"))["peers"] == 2


async def test_truncated_request_then_eof_closes_quietly(served: FakeNode, data_dir: Path) -> None:
    stream = await _raw(data_dir)
    await stream.send_all(encode_message(make_request("status"))[:-2])
    await stream.send_eof()
    replies = await _read_all(stream)
    assert [r["code"] for r in replies] == ["bad_request"]
    assert (await control.call(data_dir, "ls"))["files"] == []


async def test_several_requests_on_one_connection(served: FakeNode, data_dir: Path) -> None:
    stream = await _raw(data_dir)
    await stream.send_all(encode_message(make_request("gc")) + encode_message(make_request("ls")))
    await stream.send_eof()
    replies = await _read_all(stream)
    assert [r["type"] for r in replies] == ["result", "result"]


async def test_client_disconnect_cancels_the_operation(served: FakeNode, data_dir: Path) -> None:
    served.put_forever = True
    src = data_dir / "f.txt"
    src.write_bytes(b"abc")
    stream = await _raw(data_dir)
    await stream.send_all(encode_message(make_request("put", {"path": str(src), "disperse": True})))
    with trio.fail_after(5):
        await served.put_started.wait()
        await stream.aclose()
        await served.put_cancelled.wait()
    assert (await control.call(data_dir, "gc"))["freed_bytes"] == 4096


async def test_cancelled_call_cancels_the_operation(served: FakeNode, data_dir: Path) -> None:
    served.put_forever = True
    src = data_dir / "f.txt"
    src.write_bytes(b"abc")
    with trio.move_on_after(0.5):
        await control.call(data_dir, "put", {"path": str(src), "disperse": True})
    with trio.fail_after(5):
        await served.put_cancelled.wait()


async def test_connection_limit(
    data_dir: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = control.ControlServer(FakeNode(), max_connections=1)
    a, b = trio.testing.memory_stream_pair()
    c, d = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, a)
    await trio.testing.wait_all_tasks_blocked()
    await server.handle(c)  # refused at once, without reading, but with an answer
    conn = control._Connection(d, control.MAX_REPLY_BYTES)
    reply = control.parse_reply(await conn.receive())  # type: ignore[arg-type]
    assert (reply.kind, reply.code) == ("error", "busy")
    assert "retry" in reply.message
    assert await conn.receive() is None, "then closed"
    assert server.active == 1
    assert server.busy_refusals == 1
    await b.aclose()


async def test_a_flood_of_clients_is_told_busy_never_just_dropped(
    data_dir: Path, nursery: trio.Nursery
) -> None:
    """Issue 13 item 8: 100 concurrent raw clients: 32 served, 68 got a bare close."""
    await nursery.start(serve_control, FakeNode(), data_dir)
    path = os.fspath(data_dir / control.CONTROL_SOCKET_NAME)
    hogs = [await trio.open_unix_socket(path) for _ in range(control.MAX_CONNECTIONS)]
    await trio.sleep(0.2)  # every hog accepted: the daemon is now at its limit
    answers: list[str] = []

    async def raw_client() -> None:
        stream = await trio.open_unix_socket(path)
        async with stream:
            conn = control._Connection(stream, control.MAX_REPLY_BYTES)
            with contextlib.suppress(trio.BrokenResourceError):
                await conn.send(control.make_request("status"))
            incoming = await conn.receive()
            answers.append("closed" if incoming is None else control.parse_reply(incoming).code)

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for _ in range(100):
                clients.start_soon(raw_client)
    assert answers == ["busy"] * 100
    # call() retries a busy answer by itself: it succeeds once the hogs are gone.
    async with trio.open_nursery() as waiting:
        waiting.start_soon(control.call, data_dir, "status")
        await trio.sleep(0.3)
        for hog in hogs:
            await hog.aclose()
    assert (await control.call(data_dir, "status"))["node_id"] == "11" * 32


async def test_no_daemon(data_dir: Path) -> None:
    with pytest.raises(DaemonNotRunningError):
        await control.call(data_dir, "status")
    (data_dir / control.CONTROL_SOCKET_NAME).write_text("not a socket")
    with pytest.raises(DaemonNotRunningError):
        await control.call(data_dir / "missing", "status")
    with pytest.raises(DaemonNotRunningError):
        await control.call(data_dir, "status")


async def test_stale_socket_is_replaced_and_a_live_one_refused(
    data_dir: Path, nursery: trio.Nursery
) -> None:
    path = data_dir / control.CONTROL_SOCKET_NAME
    stale = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await stale.bind(os.fspath(path))
    stale.close()  # bound, never listening: a dead daemon's leftover
    await nursery.start(serve_control, FakeNode(), data_dir)
    assert (await control.call(data_dir, "gc"))["freed_bytes"] == 4096
    with pytest.raises(DaemonAlreadyRunningError):
        await serve_control(FakeNode(), data_dir)


async def test_socket_file_removed_on_shutdown(data_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, FakeNode(), data_dir)
        assert (data_dir / control.CONTROL_SOCKET_NAME).exists()
        nursery.cancel_scope.cancel()
    assert not (data_dir / control.CONTROL_SOCKET_NAME).exists()


async def test_too_long_socket_path_is_a_config_error(data_dir: Path) -> None:
    deep = data_dir / ("d" * 120)
    with pytest.raises(ConfigError, match="shorter --data-dir"):
        await serve_control(FakeNode(), deep)
    with pytest.raises(ConfigError):
        await control.call(deep, "status")


async def test_server_survives_random_garbage(served: FakeNode, data_dir: Path) -> None:
    rng = random.Random(1234)
    for i in range(40):
        stream = await _raw(data_dir)
        if i % 2:
            body = rng.randbytes(rng.randrange(0, 200))
            await stream.send_all(encode_frame(body))
        else:
            await stream.send_all(rng.randbytes(rng.randrange(1, 300)))
        await stream.send_eof()
        replies = await _read_all(stream)  # never hangs: the server answers or closes
        assert all(parse_reply(r).kind == "error" for r in replies)
        await stream.aclose()
    assert (await control.call(data_dir, "status"))["routing_table_size"] == 3


async def test_get_refuses_an_existing_destination_before_downloading(
    served: FakeNode, data_dir: Path
) -> None:
    existing = data_dir / "already.bin"
    existing.write_bytes(b"keep me")
    with pytest.raises(control.ControlError, match="File exists"):
        await control.call(
            data_dir, "get", {"file_id": FILE_ID, "dest": str(existing), "cwd": str(data_dir)}
        )
    assert "get" not in [c[0] for c in served.calls]
    assert existing.read_bytes() == b"keep me"
