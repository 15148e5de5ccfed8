"""The frame-buffer pool: exact-length reuse, its byte bound and eviction order, and its use by
the frame decoder and the secure channel (reused buffers never leak or mix frames' bytes)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pstore.wire import (
    Chunk,
    FrameDecoder,
    Message,
    Missing,
    SecureChannel,
    encode_frame,
)
from p2pstore.wire.buffers import FramePool
from p2pstore.wire.channel import DeferredChunk
from p2pstore.wire.framing import OWN_BUFFER_BYTES

from .test_zero_copy import _channel_pair, _offered_after_header, _receive_like_a_socket

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
        held = self.pool._idle
        assert sum(map(len, held)) == self.pool.idle_bytes <= self.pool.max_bytes
        assert len({id(b) for b in held}) == len(held)
        assert not {id(b) for b in held} & {id(b) for b in self.out}


TestPoolMachine = PoolMachine.TestCase


@given(st.binary(min_size=1, max_size=64), st.integers(1, 3))
def test_an_idle_buffer_carries_the_next_frame_of_its_length(prefix: bytes, pieces: int) -> None:
    """Once the peer has sent a frame's worth of bytes, the next frame of that length is received
    into an idle buffer of that length, whole from its header on, and holds exactly its bytes."""
    pool = FramePool()
    first, second = prefix + os.urandom(2 * BIG), prefix[::-1] + os.urandom(2 * BIG)
    decoder = FrameDecoder(max_frame_bytes=len(first), pool=pool)
    assert _receive_like_a_socket(decoder, encode_frame(first), [len(first) // pieces + 1]) == [
        first
    ]
    assert pool.reused == 0  # nothing idle yet
    idle = bytearray(b"\xee") * len(second)  # stale bytes, as a used buffer would hold
    pool.give(idle)
    # the whole frame's buffer, at once
    assert _offered_after_header(decoder, len(second), second[:1]) == len(second) - 1
    rest = second[1:]
    assert _receive_like_a_socket(decoder, rest, [len(rest) // pieces + 1]) == [second]
    assert idle == second
    assert pool.reused == 1


def test_a_bare_header_takes_no_idle_buffer_before_the_peer_has_sent_that_much() -> None:
    """An idle buffer of exactly the announced length is not taken for a peer that has sent less
    than that: the frame starts in 64 KiB, as without a pool."""
    size = 16 * BIG
    pool = FramePool(max_bytes=size)
    idle = bytearray(size)
    pool.give(idle)
    decoder = FrameDecoder(max_frame_bytes=size, pool=pool)
    assert _offered_after_header(decoder, size, b"x") == OWN_BUFFER_BYTES - 1
    assert pool.reused == 0
    assert pool.idle_bytes == size


def test_concurrent_takes_and_gives_never_share_a_buffer() -> None:
    """Threads taking and giving at once (as worker threads and the event loop do): no buffer is
    ever out twice, and the pool's count stays exact."""
    pool = FramePool(max_bytes=6 * BIG)
    lengths = [BIG, BIG + 1, 2 * BIG]
    out: set[int] = set()
    out_lock = threading.Lock()
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1500):
            buffer = pool.take(rng.choice(lengths))
            with out_lock:
                if id(buffer) in out:
                    errors.append("handed out twice")
                out.add(id(buffer))
            with out_lock:
                out.discard(id(buffer))
            pool.give(buffer)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(map(len, pool._idle)) == pool.idle_bytes <= pool.max_bytes
    assert pool.reused > 0


async def _pooled_channel_pair(
    nursery: trio.Nursery, received: list[Message], expected: int
) -> tuple[SecureChannel, trio.Event, FramePool, FramePool]:
    """A channel pair over loopback with a pool of its own on each side."""
    sender_pool, receiver_pool = FramePool(), FramePool()
    sender, done = await _channel_pair(nursery, received, expected, (sender_pool, receiver_pool))
    return sender, done, sender_pool, receiver_pool


async def test_both_sides_reuse_frame_buffers_and_keep_every_chunk_intact() -> None:
    """Same-size chunks back to back: the sender's written frames and the receiver's decoded
    frames are reused for the next ones, and every chunk arrives with its own bytes."""
    blobs = [os.urandom(2 * BIG) for _ in range(12)]
    received: list[Message] = []
    async with trio.open_nursery() as nursery:
        sender, done, sender_pool, receiver_pool = await _pooled_channel_pair(
            nursery, received, len(blobs)
        )
        for i, blob in enumerate(blobs):
            await sender.send(Chunk(i, hashlib.sha256(blob).digest(), blob))
            await trio.sleep(0.01)  # let the frame be written and handed back
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert sender_pool.reused > 0
    assert receiver_pool.reused > 0
    for i, (message, blob) in enumerate(zip(received, blobs, strict=True)):
        assert isinstance(message, Chunk)
        assert message.request_id == i
        assert message.intact is True
        assert message.data == blob


async def test_a_failed_read_s_buffer_is_reused_without_its_bytes_leaking() -> None:
    """A DeferredChunk whose read fails after scribbling on its frame hands the frame back; the
    next chunk of that size goes out in that buffer with exactly its own bytes."""
    data = os.urandom(2 * BIG)
    cid = hashlib.sha256(data).digest()

    def scribble_and_fail(buffer_for: Callable[[int], memoryview]) -> bool:
        buffer_for(len(data))[:] = b"\xab" * len(data)
        return False

    def read_good(buffer_for: Callable[[int], memoryview]) -> bool:
        buffer_for(len(data))[:] = data
        return True

    received: list[Message] = []
    async with trio.open_nursery() as nursery:
        sender, done, sender_pool, _ = await _pooled_channel_pair(nursery, received, 2)
        await sender.send(DeferredChunk(1, cid, scribble_and_fail))
        await sender.send(DeferredChunk(2, cid, read_good))
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert sender_pool.reused == 1
    missing, good = received
    assert missing == Missing(1, cid)
    assert isinstance(good, Chunk)
    assert good.data == data
    assert good.intact is True
