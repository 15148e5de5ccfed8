"""Hypothesis strategies for wire messages."""

from __future__ import annotations

from hypothesis import strategies as st

from p2pstore.wire import (
    Ack,
    Auth,
    Bitmap,
    Busy,
    Bye,
    Chunk,
    Error,
    Get,
    Have,
    HaveUpdate,
    Hello,
    Message,
    Missing,
    Put,
    Watch,
)

ids = st.binary(min_size=32, max_size=32)
request_ids = st.integers(min_value=0, max_value=2**32 - 1)
small_data = st.binary(max_size=2048)
texts = st.text(max_size=64)


def messages() -> st.SearchStrategy[Message]:
    return st.one_of(
        st.builds(
            Hello,
            request_ids,
            st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=16).map(tuple),
            st.lists(texts, max_size=32).map(tuple),
            ids,
            ids,
            ids,
            st.none() | st.integers(0, 2**32 - 1),
        ),
        st.builds(Auth, request_ids, st.binary(min_size=64, max_size=64)),
        st.builds(Get, request_ids, st.lists(ids, min_size=1, max_size=20).map(tuple)),
        st.builds(Chunk, request_ids, ids, small_data),
        st.builds(Missing, request_ids, ids),
        st.builds(Have, request_ids, ids),
        st.builds(Bitmap, request_ids, ids, st.none() | small_data),
        st.builds(Put, request_ids, ids, small_data),
        st.builds(Ack, request_ids, ids, st.booleans()),
        st.builds(Error, request_ids, st.integers(0, 2**32 - 1), texts),
        st.builds(Busy, request_ids, ids, st.integers(0, 60_000)),
        st.builds(Watch, request_ids, ids, st.integers(0, 65535)),
        st.builds(
            HaveUpdate,
            request_ids,
            ids,
            st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=256).map(tuple),
        ),
        st.builds(Bye, request_ids),
    )


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary points (including empty pieces)."""
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [
            data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
        ]
    )
