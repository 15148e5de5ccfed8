"""The secure channel over in-memory streams and loopback: handshake drivers and sealed frames."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import trio.testing

from p2pstore.errors import HandshakeError, ProtocolError
from p2pstore.identity import Identity
from p2pstore.wire import (
    Get,
    HandshakeResult,
    InitiatorHandshake,
    Message,
    MessageCodec,
    Missing,
    Sealer,
    SecureChannel,
    WireConfig,
    accept,
    encode_frame,
    initiate,
)

CONFIG = WireConfig(handshake_timeout=2, idle_timeout=5, frame_timeout=1)
CID = b"c" * 32


async def _raw_initiator(
    stream: trio.abc.Stream, identity: Identity, expected: bytes | None
) -> HandshakeResult:
    """Complete a handshake by hand, so the test can then write arbitrary (sealed) bytes."""
    hs = InitiatorHandshake(identity, expected)
    await stream.send_all(hs.initial_bytes())
    while hs.result is None:
        out = hs.receive_data(await stream.receive_some(4096))
        if out:
            await stream.send_all(out)
    return hs.result


async def _serve_collect(stream: trio.abc.Stream, identity: Identity, got: list[Message]) -> None:
    channel = await accept(stream, identity, CONFIG)

    async def handler(message: Message) -> None:
        got.append(message)

    await channel.run(handler)


async def test_channel_roundtrip_over_memory_streams() -> None:
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    received: list[Message] = []
    async with trio.open_nursery() as nursery:
        accepted: list[SecureChannel] = []

        async def server() -> None:
            channel = await accept(right, b, CONFIG)
            accepted.append(channel)

            async def echo(message: Message) -> None:
                assert isinstance(message, Get)
                for cid in message.chunk_ids:
                    await channel.send(Missing(message.request_id, cid))

            await channel.run(echo)

        nursery.start_soon(server)
        client = await initiate(left, a, b.node_id, CONFIG)
        assert client.peer.peer_node_id == b.node_id
        assert client.peer.authenticated_as_expected
        done = trio.Event()

        async def collect(message: Message) -> None:
            received.append(message)
            if len(received) == 3:
                done.set()

        nursery.start_soon(client.run, collect)
        await client.send(Get(7, (b"1" * 32, b"2" * 32, b"3" * 32)))
        with trio.fail_after(5):
            await done.wait()
        await client.aclose()
    assert [m.chunk_id for m in received if isinstance(m, Missing)] == [
        b"1" * 32,
        b"2" * 32,
        b"3" * 32,
    ]
    assert accepted[0].peer.peer_node_id == a.node_id
    assert accepted[0].bye_received


async def test_wrong_expected_node_id_over_memory_streams() -> None:
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            with pytest.raises(HandshakeError):
                await accept(right, b, CONFIG)

        nursery.start_soon(server)
        with pytest.raises(HandshakeError, match="not the expected"):
            await initiate(left, a, Identity.generate().node_id, CONFIG)
        await left.aclose()


async def test_unknown_version_over_memory_streams() -> None:
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            with pytest.raises(HandshakeError):
                await accept(right, b, CONFIG)

        nursery.start_soon(server)
        with pytest.raises(HandshakeError, match="refused"):
            await initiate(left, a, b.node_id, CONFIG, versions=(99,))


async def test_handshake_stall_times_out() -> None:
    _left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(5), pytest.raises(HandshakeError, match="within"):
        await accept(right, Identity.generate(), WireConfig(handshake_timeout=0.2))


def _tampered(frames: list[bytes]) -> bytes:
    frame = bytearray(frames[0])
    frame[-1] ^= 1
    return bytes(frame)


@pytest.mark.parametrize(
    ("attack", "build"),
    [
        ("tampered", _tampered),
        ("replayed", lambda frames: frames[0] + frames[0]),
        ("reordered", lambda frames: frames[1] + frames[0]),
        ("dropped", lambda frames: frames[1]),
        ("truncated", lambda frames: frames[0][:-5]),
        ("unsealed", lambda frames: encode_frame(MessageCodec().encode(Get(1, (CID,))))),
        ("oversized", lambda frames: (CONFIG.max_frame_bytes + 1).to_bytes(4, "big")),
    ],
)
async def test_bad_ciphertext_closes_channel(attack: str, build: Any) -> None:
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    got: list[Message] = []
    async with trio.open_nursery() as nursery:
        outcome: list[BaseException] = []
        ended = trio.Event()

        async def server() -> None:
            try:
                await _serve_collect(right, b, got)
            except ProtocolError as exc:
                outcome.append(exc)
            ended.set()

        nursery.start_soon(server)
        keys = await _raw_initiator(left, a, b.node_id)
        sealer = Sealer(keys.send_key)
        codec = MessageCodec()
        frames = [sealer.seal(codec.encode(Get(i + 1, (CID,)))) for i in range(2)]
        await left.send_all(build(frames))
        if attack == "truncated":
            await left.aclose()
        with trio.fail_after(5):
            await ended.wait()
    assert isinstance(outcome[0], ProtocolError)
    # nothing after the bad frame was delivered (a replay delivers the original once at most)
    assert len(got) <= 1


async def test_slow_frame_times_out() -> None:
    """A peer that starts a frame and then dribbles is cut off after frame_timeout."""
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    outcome: list[BaseException] = []
    ended = trio.Event()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            try:
                await _serve_collect(right, b, [])
            except ProtocolError as exc:
                outcome.append(exc)
            ended.set()

        nursery.start_soon(server)
        await _raw_initiator(left, a, b.node_id)
        await left.send_all(b"\x00\x00\x10\x00" + os.urandom(10))
        with trio.fail_after(5):
            await ended.wait()
    assert "not delivered" in str(outcome[0])


async def test_idle_channel_closes_cleanly() -> None:
    a, b = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    config = WireConfig(idle_timeout=0.3)
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            channel = await accept(right, b, config)

            async def ignore(message: Message) -> None:
                pass

            await channel.run(ignore)

        nursery.start_soon(server)
        channel = await initiate(left, a, b.node_id, WireConfig(idle_timeout=60))

        async def ignore(message: Message) -> None:
            pass

        with trio.fail_after(5):
            await channel.run(ignore)  # returns normally when the server idles out
    assert channel.closed
    assert channel.bye_received or channel.close_reason == "closed by peer"


async def test_handshake_over_real_loopback() -> None:
    a, b = Identity.generate(), Identity.generate()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    peer_ids: list[bytes] = []
    accepted = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        channel = await accept(stream, b, CONFIG)
        peer_ids.append(channel.peer.peer_node_id)
        accepted.set()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        channel = await initiate(stream, a, b.node_id, CONFIG)
        assert channel.peer.authenticated_as_expected
        await stream.aclose()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with pytest.raises(HandshakeError):
            await initiate(stream, a, a.node_id, CONFIG)
        await stream.aclose()
        with trio.fail_after(5):
            await accepted.wait()
        nursery.cancel_scope.cancel()
    assert peer_ids[0] == a.node_id
