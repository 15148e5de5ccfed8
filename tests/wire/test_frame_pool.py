"""The frame-buffer pool: exact-length reuse, its byte bound and eviction order, and its use by
the frame decoder and the secure channel (reused buffers never leak or mix frames' bytes)."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pstore.wire import Chunk, FrameDecoder, Message
from p2pstore.wire.buffers import SHARED_FRAME_POOL, FramePool
from p2pstore.wire.framing import OWN_BUFFER_BYTES

from .test_zero_copy import _channel_pair, _receive_like_a_socket

BIG = OWN_BUFFER_BYTES


def test_a_given_buffer_is_taken_again_for_its_exact_length_only() -> None:
    pool = FramePool(max_bytes=10 * BIG)
    first = pool.take(BIG + 5)
    assert len(first) == BIG + 5
    assert first == bytes(BIG + 5)  # new buffers are zeroed
    first[:4] = b"old!"
    pool.give(first)
    assert pool.take_idle(BIG + 6) is None
    assert pool.take(BIG + 4) is not first
    again = pool.take(BIG + 5)
    assert again is first
    assert again[:4] == b"old!"  # stale contents: the taker overwrites them
    assert pool.reused == 1
    assert pool.idle_bytes == 0


def test_small_and_oversized_buffers_are_not_kept() -> None:
    pool = FramePool(max_bytes=2 * BIG)
    pool.give(bytearray(BIG - 1))
    pool.give(bytearray(2 * BIG + 1))
    assert pool.idle_bytes == 0
    assert pool.take_idle(BIG - 1) is None


def test_the_byte_bound_evicts_the_longest_idle_buffers_first() -> None:
    pool = FramePool(max_bytes=3 * BIG)
    oldest, middle, newest = bytearray(BIG), bytearray(BIG + 1), bytearray(BIG)
    for buffer in (oldest, middle, newest):
        pool.give(buffer)
    assert pool.idle_bytes == 3 * BIG + 1 - BIG  # oldest went to make room for newest
    pool.give(bytearray(2 * BIG))  # evicts middle, the longest idle now; newest fits beside it
    assert pool.idle_bytes == 3 * BIG
    assert pool.take_idle(BIG + 1) is None
    assert pool.take_idle(BIG) is newest


def test_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FramePool(max_bytes=-1)


class PoolMachine(RuleBasedStateMachine):
    """Any sequence of takes and gives: the pool never hands out a buffer that is out, never
    holds more than its bound, and its byte count matches what it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = FramePool(max_bytes=4 * BIG)
        self.out: list[bytearray] = []

    @rule(length=st.sampled_from([BIG - 1, BIG, BIG + 7, 2 * BIG, 5 * BIG]))
    def take(self, length: int) -> None:
        buffer = self.pool.take(length)
        assert len(buffer) == length
        assert all(buffer is not other for other in self.out)
        self.out.append(buffer)

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 100))
    def give(self, index: int) -> None:
        self.pool.give(self.out.pop(index % len(self.out)))

    @invariant()
    def bounded_and_counted(self) -> None:
        held = [b for bs in self.pool._by_length.values() for b in bs]
        assert sum(map(len, held)) == self.pool.idle_bytes <= self.pool.max_bytes
        assert sorted(map(id, held)) == sorted(map(id, self.pool._idle))
        assert not {id(b) for b in held} & {id(b) for b in self.out}


TestPoolMachine = PoolMachine.TestCase


@given(st.binary(min_size=1, max_size=64), st.integers(0, 3))
def test_decoder_receives_into_an_idle_buffer_of_the_frames_length(
    prefix: bytes, stale_byte: int
) -> None:
    """A frame whose length matches an idle buffer is received into it, whole from the header on
    (reusing memory commits none), and comes out with exactly its own bytes."""
    pool = FramePool()
    payload = prefix + os.urandom(2 * BIG)
    idle = bytearray([stale_byte]) * len(payload)
    pool.give(idle)
    decoder = FrameDecoder(max_frame_bytes=len(payload), pool=pool)
    decoder.receive_data(struct.pack(">I", len(payload)) + payload[:1])
    assert decoder.next_frame() is None
    target = decoder.receive_buffer()
    assert target is not None
    assert len(target) == len(payload) - 1
    del target
    frames = _receive_like_a_socket(decoder, payload[1:], [BIG // 3])
    assert frames == [payload]
    assert idle == payload  # the frame was received into the idle buffer
    assert pool.reused == 1


async def test_channel_reuses_frame_buffers_and_keeps_every_chunk_intact() -> None:
    """Same-size chunks back to back: buffers freed by one frame carry the next on both sides,
    and every chunk arrives with its own bytes."""
    blobs = [os.urandom(2 * BIG) for _ in range(12)]
    received: list[Message] = []
    reused_before = SHARED_FRAME_POOL.reused
    async with trio.open_nursery() as nursery:
        sender, done = await _channel_pair(nursery, received, len(blobs))
        for i, blob in enumerate(blobs):
            await sender.send(Chunk(i, hashlib.sha256(blob).digest(), blob))
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert SHARED_FRAME_POOL.reused > reused_before
    for i, (message, blob) in enumerate(zip(received, blobs, strict=True)):
        assert isinstance(message, Chunk)
        assert message.request_id == i
        assert message.intact is True
        assert message.data == blob
