from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.identity import Identity, node_id_from_public_key, verify_signature


def test_load_or_create_is_stable_across_restarts(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path)
    second = Identity.load_or_create(tmp_path)
    assert first.node_id == second.node_id
    assert first.node_id == hashlib.sha256(first.public_key).digest()
    mode = stat.S_IMODE((tmp_path / "identity.key").stat().st_mode)
    assert mode == 0o600


def test_distinct_identities_have_distinct_ids() -> None:
    assert Identity.generate().node_id != Identity.generate().node_id


@given(st.binary(max_size=256))
def test_sign_and_verify(message: bytes) -> None:
    ident = Identity.generate()
    sig = ident.sign(message)
    assert verify_signature(ident.public_key, sig, message)
    assert not verify_signature(ident.public_key, sig, message + b"x")
    assert not verify_signature(Identity.generate().public_key, sig, message)


@given(st.binary(max_size=40), st.binary(max_size=80), st.binary(max_size=32))
def test_verify_never_raises_on_garbage(key: bytes, sig: bytes, message: bytes) -> None:
    assert verify_signature(key, sig, message) in (True, False)


def test_node_id_is_sha256_of_public_key() -> None:
    assert node_id_from_public_key(b"\x01" * 32) == hashlib.sha256(b"\x01" * 32).digest()
