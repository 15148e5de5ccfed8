"""The control socket's streaming op ``cat``: data frames in order, back-pressure, a client that
leaves cancels the stream; and the ``cancel`` op's argument checks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pstore import control
from p2pstore.control import (
    ControlError,
    decode_message,
    encode_message,
    make_request,
    parse_reply,
    serve_control,
)
from p2pstore.errors import ProtocolError
from p2pstore.wire.framing import FrameDecoder

from .fakes import FILE_ID, FakeNode


@pytest.fixture
async def served(nursery: trio.Nursery, data_dir: Path) -> AsyncIterator[FakeNode]:
    node = FakeNode()
    await nursery.start(serve_control, node, data_dir)
    return node


def test_a_data_frame_carries_exactly_its_bytes() -> None:
    reply = parse_reply({"type": "data", "data": {"bytes": b"abc"}})
    assert (reply.kind, reply.data) == ("data", {"bytes": b"abc"})
    for bad in ({"bytes": "abc"}, {"bytes": b"a", "more": 1}, {}):
        with pytest.raises(ProtocolError):
            parse_reply({"type": "data", "data": bad})


@pytest.mark.parametrize("value", [0, -1, True, "3", 2**63])
def test_cancel_takes_a_positive_transfer_number(value: object) -> None:
    with pytest.raises(ProtocolError):
        make_request("cancel", {"transfer": value})
    make_request("cancel", {"transfer": 3})


async def test_perform_refuses_the_streaming_op() -> None:
    with pytest.raises(ProtocolError, match="control socket"):
        await control.perform(FakeNode(), "cat", {"file_id": FILE_ID})


async def test_cat_sends_the_bytes_in_order_then_the_result(
    served: FakeNode, data_dir: Path
) -> None:
    pieces: list[bytes] = []
    result = await control.call(data_dir, "cat", {"file_id": FILE_ID}, on_data=pieces.append)
    assert pieces == [b"hello ", b"world\n"]
    assert result["size"] == 12
    assert result["bytes_sent"] == 12
    blocking: list[bytes] = []
    again = await trio.to_thread.run_sync(
        lambda: control.call_blocking(
            data_dir, "cat", {"file_id": FILE_ID}, on_data=blocking.append
        )
    )
    assert b"".join(blocking) == b"hello world\n"
    assert again["name"] == "hello.txt"


async def test_data_frames_without_a_reader_are_a_protocol_error(
    served: FakeNode, data_dir: Path
) -> None:
    with pytest.raises(ControlError) as info:
        await control.call(data_dir, "cat", {"file_id": FILE_ID})
    assert info.value.code == "protocol"


async def test_an_unavailable_file_is_an_error_with_no_data(
    served: FakeNode, data_dir: Path
) -> None:
    pieces: list[bytes] = []
    with pytest.raises(ControlError) as info:
        await control.call(data_dir, "cat", {"file_id": b"\0" * 32}, on_data=pieces.append)
    assert info.value.code == "unavailable"
    assert pieces == []


class _Endless(FakeNode):
    """Streams 64 KiB pieces until cancelled; records how far it got and whether it was."""

    sent = 0
    cancelled: trio.Event

    async def stream_file(
        self,
        file_id: bytes,
        send: Callable[[bytes], Awaitable[None]],
        *,
        progress: Callable[[Any], None] | None = None,
    ) -> Any:
        try:
            while True:
                await send(bytes([self.sent % 251]) * 65536)
                self.sent += 1
        except trio.Cancelled:
            self.cancelled.set()
            raise


async def test_back_pressure_and_a_client_that_leaves_cancels_the_stream(
    nursery: trio.Nursery, data_dir: Path
) -> None:
    node = _Endless()
    node.cancelled = trio.Event()
    await nursery.start(serve_control, node, data_dir)
    stream = await trio.open_unix_socket(os.fspath(data_dir / control.CONTROL_SOCKET_NAME))
    await stream.send_all(encode_message(make_request("cat", {"file_id": FILE_ID})))
    decoder = FrameDecoder(control.MAX_REPLY_BYTES)
    frames: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while len(frames) < 3:
            frames += [
                decode_message(f, max_bytes=control.MAX_REPLY_BYTES)
                for f in decoder.feed(await stream.receive_some(65536))
            ]
    data = [parse_reply(f) for f in frames if f["type"] == "data"]
    assert [d.data["bytes"][:1] for d in data[:2]] == [b"\x00", b"\x01"]  # in order, whole
    await trio.sleep(0.3)
    # Not reading: the daemon is held by the socket's buffers, not running ahead.
    held = node.sent
    await trio.sleep(0.3)
    assert node.sent == held
    assert held < 200, "only what the socket buffers hold was produced"
    with trio.fail_after(10):
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.aclose()
        await node.cancelled.wait()
