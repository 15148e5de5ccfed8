"""The sans-IO handshake and the sealing layer: success and every refusal."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import HandshakeError, ProtocolError
from p2pstore.identity import Identity
from p2pstore.wire import (
    Auth,
    Hello,
    InitiatorHandshake,
    MessageCodec,
    Opener,
    ResponderHandshake,
    Sealer,
    encode_frame,
)
from p2pstore.wire.framing import FrameDecoder
from p2pstore.wire.handshake import HandshakeRefused


def _frames(data: bytes) -> list[bytes]:
    return FrameDecoder(1 << 16).feed(data)


def _run(
    initiator: InitiatorHandshake,
    responder: ResponderHandshake,
    to_responder: Any = lambda b: b,
    to_initiator: Any = lambda b: b,
) -> None:
    reply = responder.receive_data(to_responder(initiator.initial_bytes()))
    final = initiator.receive_data(to_initiator(reply))
    responder.receive_data(to_responder(final))


def test_handshake_success_keys_match() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(b)
    _run(ini, res)
    assert ini.result is not None
    assert res.result is not None
    assert ini.result.send_key == res.result.receive_key
    assert ini.result.receive_key == res.result.send_key
    assert ini.result.send_key != ini.result.receive_key
    assert ini.result.peer_node_id == b.node_id
    assert res.result.peer_node_id == a.node_id
    assert ini.result.authenticated_as_expected
    assert not res.result.authenticated_as_expected
    assert ini.result.version == res.result.version == 1
    assert ini.result.transcript_hash == res.result.transcript_hash
    assert ini.result.features == {"get", "have", "put", "cancel", "swarm"}


def test_unknown_node_is_flagged_not_trusted() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, None)
    _run(ini, ResponderHandshake(b))
    assert ini.result is not None
    assert ini.result.peer_node_id == b.node_id
    assert ini.result.expected_node_id is None
    assert not ini.result.authenticated_as_expected


def test_wrong_expected_node_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, Identity.generate().node_id)
    res = ResponderHandshake(b)
    with pytest.raises(HandshakeError, match="not the expected"):
        _run(ini, res)
    assert ini.result is None
    with pytest.raises(HandshakeError):
        ini.receive_data(b"")


def test_fresh_ephemeral_keys_give_fresh_session_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    results = []
    for _ in range(2):
        ini = InitiatorHandshake(a, b.node_id)
        _run(ini, ResponderHandshake(b))
        assert ini.result is not None
        results.append(ini.result.send_key)
    assert results[0] != results[1]


def _resign(frame: bytes, **changes: Any) -> bytes:
    codec = MessageCodec()
    message = codec.decode(_frames(frame)[0])
    fields = {f: getattr(message, f) for f in message.__dataclass_fields__}
    fields.update(changes)
    return encode_frame(codec.encode(type(message)(**fields)))


def test_bad_responder_signature_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(b)
    reply = res.receive_data(ini.initial_bytes())
    hello, auth = _frames(reply)
    forged = encode_frame(hello) + _resign(encode_frame(auth), signature=os.urandom(64))
    with pytest.raises(HandshakeError, match="signature"):
        ini.receive_data(forged)


def test_bad_initiator_signature_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(b)
    final = ini.receive_data(res.receive_data(ini.initial_bytes()))
    with pytest.raises(HandshakeError, match="signature"):
        res.receive_data(_resign(final, signature=os.urandom(64)))
    assert res.result is None


def test_signature_by_another_key_refused() -> None:
    """An attacker relaying a real node's HELLO but signing with its own key is caught."""
    a, b, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(mallory)
    reply = res.receive_data(ini.initial_bytes())
    hello, auth = _frames(reply)
    # claim b's identity in the HELLO, keep mallory's signature
    swapped = _resign(encode_frame(hello), node_id=b.node_id, public_key=b.public_key)
    with pytest.raises(HandshakeError):
        ini.receive_data(swapped + encode_frame(auth))


def test_node_id_not_matching_key_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, None)
    res = ResponderHandshake(b)
    hello = _resign(ini.initial_bytes(), node_id=os.urandom(32))
    with pytest.raises(HandshakeError, match="hash"):
        res.receive_data(hello)


def test_downgrade_of_offered_versions_detected() -> None:
    """A man in the middle strips version 2 from the offer: the signature no longer verifies."""
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id, versions=(1, 2))
    res = ResponderHandshake(b, versions=(1, 2))

    def strip(data: bytes) -> bytes:
        return _resign(data, versions=(1,))

    reply = res.receive_data(strip(ini.initial_bytes()))
    with pytest.raises(HandshakeError, match=r"downgrade|signature"):
        ini.receive_data(reply)
    # even if the forger also rewrites the responder's list, the signature gives it away
    ini2 = InitiatorHandshake(a, b.node_id, versions=(1, 2))
    res2 = ResponderHandshake(b, versions=(1, 2))
    hello, auth = _frames(res2.receive_data(strip(ini2.initial_bytes())))
    forged = _resign(encode_frame(hello), versions=(1,)) + encode_frame(auth)
    with pytest.raises(HandshakeError, match="signature"):
        ini2.receive_data(forged)


def test_downgraded_choice_refused() -> None:
    """A responder (or forger) choosing less than the best common version is refused."""
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id, versions=(1, 2))
    res = ResponderHandshake(b, versions=(1, 2))
    hello, auth = _frames(res.receive_data(ini.initial_bytes()))
    with pytest.raises(HandshakeError, match="downgrade"):
        ini.receive_data(_resign(encode_frame(hello), version=1) + encode_frame(auth))


def test_best_common_version_chosen() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id, versions=(1, 2, 3))
    res = ResponderHandshake(b, versions=(2, 1))
    _run(ini, res)
    assert ini.result is not None
    assert ini.result.version == 2


def test_no_common_version_refused_with_error_frame() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id, versions=(7,))
    res = ResponderHandshake(b)
    with pytest.raises(HandshakeRefused) as refused:
        res.receive_data(ini.initial_bytes())
    with pytest.raises(HandshakeError, match="refused"):
        ini.receive_data(refused.value.reply)


def test_unexpected_messages_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    res = ResponderHandshake(b)
    codec = MessageCodec()
    with pytest.raises(HandshakeError):
        res.receive_data(encode_frame(codec.encode(Auth(0, b"s" * 64))))
    ini = InitiatorHandshake(a, None)
    ini.initial_bytes()
    # a HELLO without a chosen version is an initiator's HELLO, not a reply
    with pytest.raises(HandshakeError):
        ini.receive_data(
            encode_frame(codec.encode(Hello(0, (1,), (), b.node_id, b.public_key, b"e" * 32)))
        )


def test_oversized_handshake_frame_refused() -> None:
    res = ResponderHandshake(Identity.generate())
    with pytest.raises(HandshakeError):
        res.receive_data(b"\x00\x01\x00\x00")


@given(st.binary(max_size=300))
def test_garbage_to_responder_is_handshake_error(blob: bytes) -> None:
    res = ResponderHandshake(Identity.generate())
    with contextlib.suppress(HandshakeError):
        res.receive_data(blob)
    assert res.result is None


@given(st.data())
def test_any_single_byte_change_in_transit_is_refused_or_harmless(data: st.DataObject) -> None:
    """Flip one byte of one handshake flight: the handshake fails, or both sides agree on keys."""
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(b)
    flight = data.draw(st.sampled_from([0, 1, 2]))

    def corrupt(blob: bytes) -> bytes:
        i = data.draw(st.integers(0, len(blob) - 1))
        return blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1 :]

    flights = [ini.initial_bytes()]
    try:
        flights[0] = corrupt(flights[0]) if flight == 0 else flights[0]
        reply = res.receive_data(flights[0])
        reply = corrupt(reply) if flight == 1 else reply
        final = ini.receive_data(reply)
        final = corrupt(final) if flight == 2 else final
        res.receive_data(final)
    except ProtocolError:
        return
    if res.result is None:
        return  # a corrupted length left a side waiting for bytes: the handshake timeout ends it
    # only a change msgpack ignores could pass, and then the result must be consistent
    assert ini.result is not None
    assert ini.result.send_key == res.result.receive_key


# --- sealing -----------------------------------------------------------------------------------


def _pair() -> tuple[Sealer, Opener]:
    key = os.urandom(32)
    return Sealer(key), Opener(key)


@given(st.lists(st.binary(max_size=200), max_size=10))
def test_seal_roundtrip_in_order(plaintexts: list[bytes]) -> None:
    sealer, opener = _pair()
    for p in plaintexts:
        frame = sealer.seal(p)
        assert opener.open(_frames(frame)[0]) == p


def test_replayed_frame_refused() -> None:
    sealer, opener = _pair()
    frame = _frames(sealer.seal(b"hello"))[0]
    assert opener.open(frame) == b"hello"
    with pytest.raises(ProtocolError):
        opener.open(frame)


def test_reordered_frames_refused() -> None:
    sealer, opener = _pair()
    _first, second = (_frames(sealer.seal(p))[0] for p in (b"one", b"two"))
    with pytest.raises(ProtocolError):
        opener.open(second)


@given(st.binary(min_size=1, max_size=64), st.data())
def test_tampered_or_truncated_frame_refused(plaintext: bytes, data: st.DataObject) -> None:
    sealer, opener = _pair()
    payload = bytearray(_frames(sealer.seal(plaintext))[0])
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] ^= data.draw(st.integers(1, 255))
    else:
        del payload[data.draw(st.integers(0, len(payload) - 1)) :]
    with pytest.raises(ProtocolError):
        opener.open(bytes(payload))


def test_directions_use_different_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    ini = InitiatorHandshake(a, b.node_id)
    res = ResponderHandshake(b)
    _run(ini, res)
    assert ini.result is not None
    # a frame sealed by the initiator cannot be reflected back to it
    frame = _frames(Sealer(ini.result.send_key).seal(b"x"))[0]
    with pytest.raises(ProtocolError):
        Opener(ini.result.receive_key).open(frame)
