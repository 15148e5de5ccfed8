"""The copy-saving paths of the wire layer: frames received into their own buffers, frames sealed
and opened in place, CHUNK/PUT heads built without their data, and the channel's parallel sealing
(frames sealed by many senders at once, written in nonce order)."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from functools import partial

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import ProtocolError
from p2pstore.identity import Identity
from p2pstore.wire import (
    Chunk,
    FrameDecoder,
    Message,
    MessageCodec,
    Missing,
    Opener,
    Put,
    Sealer,
    SecureChannel,
    WireConfig,
    accept,
    encode_frame,
    initiate,
)
from p2pstore.wire.buffers import SHARED_FRAME_POOL, FramePool
from p2pstore.wire.channel import DeferredChunk
from p2pstore.wire.framing import EAGER_BODY_BYTES, OWN_BUFFER_BYTES
from p2pstore.wire.messages import data_message_head

from .strategies import ids, request_ids, splits

CONFIG = WireConfig(handshake_timeout=2, idle_timeout=5, frame_timeout=2)


def _drain(decoder: FrameDecoder) -> list[bytes | bytearray]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def _receive_like_a_socket(decoder: FrameDecoder, stream: bytes, sizes: list[int]) -> list[bytes]:
    """Feed ``stream`` as a reader with ``recv_into`` would: into the frame's own buffer when the
    decoder offers one, else through a scratch buffer; reads are at most ``sizes[i]`` bytes."""
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        out += [bytes(f) for f in _drain(decoder)]
        limit = sizes[i % len(sizes)]
        i += 1
        target = decoder.receive_buffer()
        if target is None:
            piece = stream[pos : pos + limit]
            decoder.receive_data(memoryview(bytearray(piece)))
            pos += len(piece)
        else:
            count = min(limit, len(target), len(stream) - pos)
            target[:count] = stream[pos : pos + count]
            decoder.received_into(count)
            pos += count
        del target
    out += [bytes(f) for f in _drain(decoder)]
    return out


def _offered_after_header(decoder: FrameDecoder, size: int, first_byte: bytes) -> int:
    """Feed the header of a ``size``-byte frame and its first byte; the length of the buffer the
    decoder then offers for the rest of the frame (it must offer one)."""
    decoder.receive_data(struct.pack(">I", size) + first_byte)
    assert decoder.next_frame() is None
    target = decoder.receive_buffer()
    assert target is not None
    return len(target)


@given(
    st.lists(
        st.one_of(st.binary(max_size=200), st.integers(0, 3 * OWN_BUFFER_BYTES).map(os.urandom)),
        max_size=5,
    ),
    st.lists(st.integers(1, 2 * OWN_BUFFER_BYTES), min_size=1, max_size=6),
)
def test_receive_into_own_buffers_roundtrips(payloads: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(max_frame_bytes=4 * OWN_BUFFER_BYTES)
    assert _receive_like_a_socket(decoder, stream, sizes) == payloads
    assert decoder.buffered == 0
    assert not decoder.in_frame


@given(st.integers(OWN_BUFFER_BYTES, 3 * OWN_BUFFER_BYTES), st.data())
def test_big_frame_split_anywhere_roundtrips(size: int, data: st.DataObject) -> None:
    payload = os.urandom(size)
    decoder = FrameDecoder(max_frame_bytes=size)
    frames: list[bytes | bytearray] = []
    for piece in data.draw(splits(encode_frame(payload) + encode_frame(b"tail"))):
        frames += decoder.feed(piece)
    assert frames == [payload, b"tail"]
    assert isinstance(frames[1], bytes)


def test_big_frame_arriving_in_parts_is_received_into_its_own_buffer() -> None:
    payload = os.urandom(OWN_BUFFER_BYTES)
    frame = encode_frame(payload)
    decoder = FrameDecoder(max_frame_bytes=len(payload))
    assert decoder.feed(frame[:1000]) == []
    assert decoder.in_frame
    target = decoder.receive_buffer()
    assert target is not None
    assert len(target) == len(payload) - (1000 - 4)
    target[:] = frame[1000:]
    decoder.received_into(len(target))
    del target
    (got,) = _drain(decoder)
    assert got == payload
    assert isinstance(got, bytearray)
    assert decoder.receive_buffer() is None


def test_huge_frame_buffer_grows_with_its_bytes_not_its_header() -> None:
    size = 3 * EAGER_BODY_BYTES + 5
    decoder = FrameDecoder(max_frame_bytes=size)
    decoder.receive_data(struct.pack(">I", size) + b"x" * OWN_BUFFER_BYTES)
    assert decoder.next_frame() is None
    target = decoder.receive_buffer()
    assert target is not None
    # Only the eager part is allocated while the rest has not arrived.
    assert len(target) + OWN_BUFFER_BYTES <= EAGER_BODY_BYTES
    payload = b"x" * OWN_BUFFER_BYTES + os.urandom(size - OWN_BUFFER_BYTES)
    assert _receive_like_a_socket(decoder, payload[OWN_BUFFER_BYTES:], [700_000]) == [payload]


def test_received_into_more_than_offered_is_refused() -> None:
    decoder = FrameDecoder(max_frame_bytes=1 << 20)
    decoder.receive_data(struct.pack(">I", OWN_BUFFER_BYTES))
    assert decoder.next_frame() is None
    target = decoder.receive_buffer()
    assert target is not None
    with pytest.raises(ValueError, match="received_into"):
        decoder.received_into(len(target) + 1)


def test_oversized_header_after_a_big_frame_is_refused() -> None:
    decoder = FrameDecoder(max_frame_bytes=OWN_BUFFER_BYTES)
    body = os.urandom(OWN_BUFFER_BYTES)
    decoder.receive_data(encode_frame(body)[:100])
    assert decoder.next_frame() is None
    decoder.receive_data(encode_frame(body)[100:] + struct.pack(">I", OWN_BUFFER_BYTES + 1))
    assert decoder.next_frame() == body
    with pytest.raises(ProtocolError):
        decoder.next_frame()


@given(
    st.sampled_from([Chunk, Put]),
    request_ids,
    ids,
    st.one_of(st.binary(max_size=300), st.sampled_from([255, 256, 65535, 65536, 70000])),
)
def test_data_message_head_plus_data_is_the_encoding(
    kind: type[Chunk] | type[Put], rid: int, cid: bytes, data: bytes | int
) -> None:
    payload = os.urandom(data) if isinstance(data, int) else data
    message = kind(rid, cid, payload)
    name = "CHUNK" if kind is Chunk else "PUT"
    reference = msgpack.packb({"t": name, "id": rid, "cid": cid, "data": payload})
    codec = MessageCodec()
    assert data_message_head(kind, rid, cid, len(payload)) + payload == reference
    assert codec.encode(message) == reference
    head, rest = codec.encode_parts(message)
    assert head + rest == reference
    assert codec.decode(memoryview(bytearray(reference))) == message


@given(st.binary(max_size=5000), st.integers(0, 3))
def test_sealed_in_place_opens_in_place_and_as_bytes(plaintext: bytes, counter: int) -> None:
    key = os.urandom(32)
    frame = bytearray(4) + bytearray(plaintext) + bytearray(16)
    Sealer(key).seal_in_place(counter, frame)
    assert frame == Sealer(key).seal_with(counter, plaintext)
    payload = bytes(frame[4:])
    assert Opener(key).open_with(counter, payload) == plaintext
    in_place = bytearray(payload)
    assert Opener(key).open_with(counter, in_place) == plaintext
    tampered = bytearray(payload)
    tampered[0] ^= 1
    with pytest.raises(ProtocolError):
        Opener(key).open_with(counter, tampered)


async def _channel_pair(
    nursery: trio.Nursery,
    received: list[Message],
    expected: int,
    pools: tuple[FramePool, FramePool] = (SHARED_FRAME_POOL, SHARED_FRAME_POOL),
) -> tuple[SecureChannel, trio.Event]:
    """Two channels over a real loopback connection; ``received`` collects what the second gets,
    and the event is set once it has ``expected`` messages. ``pools``: the sender's frame pool
    and the receiver's."""
    a, b = Identity.generate(), Identity.generate()
    done = trio.Event()

    async def on_connection(stream: trio.SocketStream) -> None:
        channel = await accept(stream, b, CONFIG, pool=pools[1])

        async def collect(message: Message) -> None:
            received.append(message)
            if len(received) == expected:
                done.set()

        await channel.run(collect)

    listeners = await nursery.start(partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sender = await initiate(stream, a, b.node_id, CONFIG, pool=pools[0])
    nursery.start_soon(sender.run, _ignore)
    return sender, done


async def _ignore(message: Message) -> None:
    pass


def _reader(data: bytes, delay: float = 0.0) -> Callable[[Callable[[int], memoryview]], bool]:
    def read(buffer_for: Callable[[int], memoryview]) -> bool:
        if delay:  # runs in a worker thread
            time.sleep(delay)
        buffer_for(len(data))[:] = data
        return True

    return read


async def test_parallel_senders_frames_all_arrive_intact() -> None:
    """Many tasks sending big messages and deferred chunks at once (sealed in parallel worker
    threads): every frame arrives, opens (nonce order kept) and its data checks out."""
    received: list[Message] = []
    async with trio.open_nursery() as nursery:
        blobs = [os.urandom(OWN_BUFFER_BYTES + i * 1000) for i in range(24)]
        sender, done = await _channel_pair(nursery, received, len(blobs))

        async def send(i: int) -> None:
            blob = blobs[i]
            cid = hashlib.sha256(blob).digest()
            if i % 2:
                await sender.send(Chunk(i, cid, blob))
            else:
                await sender.send(DeferredChunk(i, cid, _reader(blob, delay=0.001 * (i % 5))))

        async with trio.open_nursery() as senders:
            for i in range(len(blobs)):
                senders.start_soon(send, i)
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    by_id = {m.request_id: m for m in received}
    assert sorted(by_id) == list(range(len(blobs)))
    for i, blob in enumerate(blobs):
        message = by_id[i]
        assert isinstance(message, Chunk)
        assert message.data == blob
        assert message.intact is True


async def test_deferred_chunk_missing_corrupt_and_unwanted() -> None:
    received: list[Message] = []
    data = os.urandom(100_000)
    cid = hashlib.sha256(data).digest()
    async with trio.open_nursery() as nursery:
        sender, done = await _channel_pair(nursery, received, 3)
        await sender.send(DeferredChunk(1, cid, lambda buffer_for: False))
        await sender.send(DeferredChunk(2, cid, _reader(data), wanted=lambda: False))
        await sender.send(DeferredChunk(3, cid, _reader(b"lies" + data[4:])))
        await sender.send(DeferredChunk(4, cid, _reader(data)))
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert [m.request_id for m in received] == [1, 3, 4]
    missing, lying, good = received
    assert missing == Missing(1, cid)
    assert isinstance(lying, Chunk)
    assert lying.intact is False
    assert isinstance(good, Chunk)
    assert good.intact is True
    assert good.data == data


def test_a_bare_header_commits_no_more_than_the_peer_has_sent() -> None:
    """Announcing a big frame and sending nothing pins at most OWN_BUFFER_BYTES; once the peer
    has sent that much, a frame's whole buffer is allocated when its header arrives."""
    size = EAGER_BODY_BYTES
    decoder = FrameDecoder(max_frame_bytes=size)
    assert _offered_after_header(decoder, size, b"x") == OWN_BUFFER_BYTES - 1
    first = b"x" + os.urandom(size - 1)
    assert _receive_like_a_socket(decoder, first[1:], [300_000]) == [first]
    # the whole frame, up front: no copies while it arrives
    assert _offered_after_header(decoder, size, b"y") == size - 1
