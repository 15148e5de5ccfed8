"""The sans-IO framer and message codec: roundtrips, arbitrary splits, hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import ProtocolError
from p2pstore.wire import Chunk, FrameDecoder, Get, MessageCodec, MessageFramer, encode_frame
from p2pstore.wire.config import MAX_GET_BATCH

from .strategies import messages, splits


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_roundtrip_split_anywhere(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    pieces = data.draw(splits(stream))
    decoder = FrameDecoder(max_frame_bytes=300)
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    assert out == payloads
    assert decoder.buffered == 0
    assert not decoder.in_frame


@given(st.lists(messages(), max_size=6), st.data())
def test_messages_roundtrip_split_anywhere(msgs: list, data: st.DataObject) -> None:  # type: ignore[type-arg]
    sender = MessageFramer(max_frame_bytes=1 << 20)
    stream = b"".join(sender.send(m) for m in msgs)
    receiver = MessageFramer(max_frame_bytes=1 << 20)
    out = []
    for piece in data.draw(splits(stream)):
        out += receiver.feed(piece)
    assert out == msgs


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_messages_or_protocol_error(blob: bytes) -> None:
    framer = MessageFramer(max_frame_bytes=512)
    with contextlib.suppress(ProtocolError):
        framer.feed(blob)


@given(st.binary(max_size=600))
def test_arbitrary_payloads_decode_or_protocol_error(blob: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        MessageCodec().decode(blob)


@given(messages(), st.data())
def test_mutated_message_decodes_or_protocol_error(message, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    payload = bytearray(MessageCodec().encode(message))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        MessageCodec().decode(bytes(payload))


def test_oversized_frame_refused_from_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    with pytest.raises(ProtocolError):
        decoder.receive_data(struct.pack(">I", 1001))
    # the decoder stays failed
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


def test_frame_at_limit_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [b"x" * 10]


def test_second_oversized_header_in_same_read_refused() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(b"ok") + struct.pack(">I", 11))


def test_in_frame_tracks_partial_frames() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.in_frame
    assert decoder.feed(b"\x00\x01a") == [b"a"]
    assert not decoder.in_frame


def _raw(body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"t": "NOPE", "id": 1},
        {"t": "GET", "id": 1},  # missing field
        {"t": "GET", "id": 1, "ids": [b"x" * 32], "extra": 1},  # extra field
        {"t": "GET", "id": -1, "ids": [b"x" * 32]},
        {"t": "GET", "id": 2**32, "ids": [b"x" * 32]},
        {"t": "GET", "id": True, "ids": [b"x" * 32]},
        {"t": "GET", "id": 1, "ids": []},
        {"t": "GET", "id": 1, "ids": [b"x" * 31]},
        {"t": "GET", "id": 1, "ids": ["x" * 32]},
        {"t": "GET", "id": 1, "ids": [b"x" * 32] * (MAX_GET_BATCH + 1)},
        {"t": "CHUNK", "id": 1, "cid": b"x" * 32, "data": "text"},
        {"t": "ACK", "id": 1, "cid": b"x" * 32, "stored": 1},
        {"t": "ERROR", "id": 1, "code": 1, "msg": "x" * 5000},
        {
            "t": "HELLO",
            "id": 0,
            "versions": [],
            "features": [],
            "node_id": b"x" * 32,
            "public_key": b"x" * 32,
            "ephemeral": b"x" * 32,
        },
        {1: 2},
    ],
)
def test_schema_violations_refused(body: object) -> None:
    with pytest.raises(ProtocolError):
        MessageCodec().decode(_raw(body))


def test_trailing_bytes_refused() -> None:
    payload = MessageCodec().encode(Get(1, (b"x" * 32,)))
    with pytest.raises(ProtocolError):
        MessageCodec().decode(payload + b"\x00")


def test_chunk_over_limit_refused_by_codec() -> None:
    payload = MessageCodec(max_chunk_bytes=100).encode(Chunk(1, b"x" * 32, b"y" * 101))
    with pytest.raises(ProtocolError):
        MessageCodec(max_chunk_bytes=100).decode(payload)
    assert MessageCodec(max_chunk_bytes=101).decode(payload) == Chunk(1, b"x" * 32, b"y" * 101)
