"""Provider records, signed values, write tokens and the rate limiter (all sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.dht.config import DhtConfig
from p2pstore.dht.ratelimit import RateLimiter
from p2pstore.dht.records import (
    ProviderStore,
    SignedValue,
    StoreOutcome,
    ValueStore,
    signature_input,
    value_key,
)
from p2pstore.dht.tokens import TokenManager
from p2pstore.errors import ConfigError
from p2pstore.identity import Identity

IDENT = Identity.generate()
OTHER = Identity.generate()


def test_value_key_and_signature_input_are_as_documented() -> None:
    import hashlib

    assert value_key(b"k" * 32, b"name") == hashlib.sha256(b"k" * 32 + b"name").digest()
    assert signature_input(b"ab", 1, b"v") == (
        b"p2pstore-dht-value-v1" + b"\x02ab" + b"\x00" * 7 + b"\x01" + b"v"
    )


def test_value_store_accepts_only_newer_values_signed_by_the_same_key() -> None:
    store = ValueStore(ttl=10.0, max_values=10)
    v1 = SignedValue.sign(IDENT, b"n", 1, b"one")
    key = v1.key
    assert store.put(v1, 0.0) is StoreOutcome.ADDED
    # Older and equal-but-different sequence numbers are refused.
    assert store.put(SignedValue.sign(IDENT, b"n", 0, b"zero"), 1.0) is StoreOutcome.REJECTED_STALE
    assert store.put(SignedValue.sign(IDENT, b"n", 1, b"other"), 1.0) is (
        StoreOutcome.REJECTED_STALE
    )
    # A bad signature is refused.
    forged = SignedValue(IDENT.public_key, b"n", 5, b"evil", OTHER.sign(b"x"))
    assert store.put(forged, 1.0) is StoreOutcome.REJECTED_INVALID
    # Another publisher's value lands under another key and cannot touch ours.
    theirs = SignedValue.sign(OTHER, b"n", 9, b"theirs")
    assert theirs.key != key
    assert store.get(key, 1.0) == v1
    assert store.put(SignedValue.sign(IDENT, b"n", 1, b"one"), 2.0) is StoreOutcome.REFRESHED
    v2 = SignedValue.sign(IDENT, b"n", 2, b"two")
    assert store.put(v2, 3.0) is StoreOutcome.REPLACED
    assert store.get(key, 3.0) == v2
    assert store.get(key, 13.0) is None
    assert store.expire(13.0) == 1
    assert len(store) == 0


def test_value_store_is_bounded() -> None:
    store = ValueStore(ttl=10.0, max_values=2)
    for name in (b"a", b"b"):
        assert store.put(SignedValue.sign(IDENT, name, 0, b""), 0.0).accepted
    assert store.put(SignedValue.sign(IDENT, b"c", 0, b""), 0.0) is StoreOutcome.REJECTED_FULL


def test_provider_store_refreshes_bounds_and_expires() -> None:
    store = ProviderStore(ttl=10.0, max_keys=2, max_per_key=2)
    key = b"k" * 32
    assert store.add(key, b"a" * 32, "127.0.0.1", 1, 0.0) is StoreOutcome.ADDED
    assert store.add(key, b"a" * 32, "127.0.0.2", 2, 5.0) is StoreOutcome.REFRESHED
    assert store.add(key, b"b" * 32, "127.0.0.1", 3, 5.0) is StoreOutcome.ADDED
    assert store.add(key, b"c" * 32, "127.0.0.1", 4, 5.0) is StoreOutcome.REJECTED_FULL
    assert store.add(b"x" * 32, b"a" * 32, "127.0.0.1", 1, 5.0).accepted
    assert store.add(b"y" * 32, b"a" * 32, "127.0.0.1", 1, 5.0) is StoreOutcome.REJECTED_FULL
    assert store.add(b"short", b"a" * 32, "127.0.0.1", 1, 5.0) is StoreOutcome.REJECTED_INVALID
    records = store.get(key, 6.0)
    assert [(r.host, r.tcp_port) for r in records] == [("127.0.0.2", 2), ("127.0.0.1", 3)]
    assert store.get(key, 15.0) == []
    assert store.expire(15.0) == 3
    assert store.key_count() == 0


@given(st.ip_addresses().map(str), st.floats(0, 10_000))
def test_tokens_are_bound_to_the_ip_and_live_one_to_two_rotations(host: str, t0: float) -> None:
    tokens = TokenManager(rotation=100.0, now=t0)
    token = tokens.issue(host, t0)
    assert tokens.check(host, token, t0)
    other = "10.9.8.7" if host != "10.9.8.7" else "10.9.8.6"
    assert not tokens.check(other, token, t0)
    assert not tokens.check(host, token[:-1] + bytes([token[-1] ^ 1]), t0)
    assert tokens.check(host, token, t0 + 150.0), "previous secret still accepted"
    assert not tokens.check(host, token, t0 + 201.0), "two rotations later it is gone"


def test_tokens_expire_after_a_long_idle_period() -> None:
    tokens = TokenManager(rotation=1.0, now=0.0)
    token = tokens.issue("127.0.0.1", 0.0)
    assert not tokens.check("127.0.0.1", token, 1000.0)


def test_rate_limiter_token_bucket_per_source() -> None:
    limiter = RateLimiter(rate=2.0, burst=3.0, max_sources=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.1)
    assert limiter.allow("a", 0.6)  # refilled 1 token
    assert limiter.allow("c", 0.6)  # evicts the least recently seen ("b")
    assert len(limiter) == 2


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 0.5)), max_size=200))
def test_rate_limiter_never_exceeds_burst_plus_rate(events: list[tuple[str, float]]) -> None:
    limiter = RateLimiter(rate=5.0, burst=4.0, max_sources=100)
    now = 0.0
    allowed: dict[str, int] = {}
    for source, step in events:
        now += step
        if limiter.allow(source, now):
            allowed[source] = allowed.get(source, 0) + 1
    for count in allowed.values():
        assert count <= 4 + 5.0 * now + 1e-9


def test_config_validation() -> None:
    import pytest

    for bad in (
        {"k": 0},
        {"k": 21},
        {"alpha": 0},
        {"request_timeout": 0},
        {"max_values": 0},
        {"republish_interval": 10.0, "provider_ttl": 5.0},
    ):
        with pytest.raises(ConfigError):
            DhtConfig(**bad)
