"""The secure channel's handshake, as two sans-IO state machines.

Four plaintext frames (see ``docs/protocol.md`` for the byte layout and the reasoning)::

    dialler (initiator)                         listener (responder)
    1. HELLO {versions, features, node_id, public_key, ephemeral}  ->
                       <-  2. HELLO {versions, version, features, node_id, public_key, ephemeral}
                       <-  3. AUTH  {sig: Ed25519_R("p2pstore-wire responder\\0" || th)}
    4. AUTH {sig: Ed25519_I("p2pstore-wire initiator\\0" || th)}  ->

    th = SHA-256("p2pstore-wire handshake\\0" || frame1 || frame2)   (frames with length prefix)
    k_i2r || k_r2i = HKDF-SHA256(ikm = X25519(e_I, e_R), salt = th, info = "p2pstore-wire keys", 64)

Each machine is fed bytes and returns bytes to send; it raises
:class:`~p2pstore.errors.HandshakeError` on any failure (the caller closes the connection) and sets
``result`` once the handshake is complete. Bytes received past the last handshake frame stay in
``decoder`` for the channel.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import HandshakeError, ProtocolError
from ..identity import Identity, node_id_from_public_key, verify_signature
from .config import HANDSHAKE_MAX_FRAME_BYTES
from .framing import FrameDecoder, encode_frame
from .messages import Auth, Error, ErrorCode, Hello, Message, MessageCodec

PROTOCOL_VERSION = 1
"""The version this implementation speaks best."""

SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
"""Every version this implementation can speak; the highest one in common is chosen."""

FEATURES: tuple[str, ...] = ("get", "have", "put", "cancel", "swarm")
"""Optional capabilities announced in HELLO; the channel's features are those both sides list."""

TRANSCRIPT_PROLOGUE = b"p2pstore-wire handshake\x00"
RESPONDER_SIG_CONTEXT = b"p2pstore-wire responder\x00"
INITIATOR_SIG_CONTEXT = b"p2pstore-wire initiator\x00"
KEY_INFO = b"p2pstore-wire keys"


@dataclass(frozen=True)
class HandshakeResult:
    """What a completed handshake established.

    ``peer_node_id`` is always verified: the peer proved possession of the identity key it hashes
    from. ``expected_node_id`` is what the dialler asked for (``None`` for a listener or a dial to
    an unknown node): ``authenticated_as_expected`` tells the two cases apart.
    """

    initiator: bool
    peer_node_id: bytes
    peer_public_key: bytes
    expected_node_id: bytes | None
    version: int
    features: frozenset[str]
    transcript_hash: bytes
    send_key: bytes = field(repr=False)
    receive_key: bytes = field(repr=False)

    @property
    def authenticated_as_expected(self) -> bool:
        """True only if the dialler named a node ID and the peer proved it is that node."""
        return self.expected_node_id is not None and hmac.compare_digest(
            self.expected_node_id, self.peer_node_id
        )


class HandshakeRefused(HandshakeError):
    """The responder refuses the handshake; ``reply`` (an ERROR frame) should be sent first."""

    def __init__(self, message: str, reply: bytes) -> None:
        super().__init__(message)
        self.reply = reply


class _State(enum.Enum):
    START = enum.auto()
    WAIT_HELLO = enum.auto()
    WAIT_AUTH = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _choose_version(ours: tuple[int, ...], theirs: tuple[int, ...]) -> int | None:
    common = set(ours) & set(theirs)
    return max(common) if common else None


def _check_identity(hello: Hello) -> None:
    if not hmac.compare_digest(node_id_from_public_key(hello.public_key), hello.node_id):
        raise HandshakeError("peer's node ID is not the hash of its identity key")


class _Handshake:
    def __init__(
        self,
        identity: Identity,
        versions: tuple[int, ...],
        features: tuple[str, ...],
    ) -> None:
        self.identity = identity
        self.versions = versions
        self.features = features
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME_BYTES)
        self.result: HandshakeResult | None = None
        self._codec = MessageCodec()
        self._ephemeral = X25519PrivateKey.generate()
        self._state = _State.START

    @property
    def done(self) -> bool:
        """Whether ``result`` is set."""
        return self._state is _State.DONE

    def _next_message(self) -> tuple[bytes, Message] | None:
        payload = self.decoder.next_frame()
        if payload is None:
            return None
        return encode_frame(payload), self._codec.decode(payload)

    def _hello(self, version: int | None) -> bytes:
        return encode_frame(
            self._codec.encode(
                Hello(
                    request_id=0,
                    versions=self.versions,
                    features=self.features,
                    node_id=self.identity.node_id,
                    public_key=self.identity.public_key,
                    ephemeral=_raw(self._ephemeral.public_key()),
                    version=version,
                )
            )
        )

    def _finish(
        self, peer: Hello, version: int, transcript_hash: bytes, expected: bytes | None
    ) -> None:
        try:
            shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(peer.ephemeral))
        except ValueError:
            raise HandshakeError("peer's ephemeral key is invalid (low order)") from None
        okm = HKDF(hashes.SHA256(), 64, salt=transcript_hash, info=KEY_INFO).derive(shared)
        initiator = isinstance(self, InitiatorHandshake)
        i2r, r2i = okm[:32], okm[32:]
        self.result = HandshakeResult(
            initiator=initiator,
            peer_node_id=peer.node_id,
            peer_public_key=peer.public_key,
            expected_node_id=expected,
            version=version,
            features=frozenset(self.features) & frozenset(peer.features),
            transcript_hash=transcript_hash,
            send_key=i2r if initiator else r2i,
            receive_key=r2i if initiator else i2r,
        )
        self._state = _State.DONE

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the peer; returns bytes to send to it (possibly empty).

        Raises :class:`HandshakeError` (after which every call raises) on any failure; a
        :class:`HandshakeRefused` carries an ERROR frame to send before closing.
        """
        if self._state is _State.FAILED:
            raise HandshakeError("handshake already failed")
        try:
            self.decoder.receive_data(data)
            out = bytearray()
            while self._state is not _State.DONE:
                item = self._next_message()
                if item is None:
                    break
                out += self._handle(*item)
            return bytes(out)
        except ProtocolError as exc:
            self._state = _State.FAILED
            if isinstance(exc, HandshakeError):
                raise
            raise HandshakeError(f"handshake failed: {exc}") from exc

    def _handle(self, frame: bytes, message: Message) -> bytes:
        raise NotImplementedError


class InitiatorHandshake(_Handshake):
    """The dialling side. ``expected_node_id=None`` dials an unknown node (see the result)."""

    def __init__(
        self,
        identity: Identity,
        expected_node_id: bytes | None,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        features: tuple[str, ...] = FEATURES,
    ) -> None:
        super().__init__(identity, versions, features)
        self.expected_node_id = expected_node_id
        self._frame1 = b""
        self._peer_hello: Hello | None = None
        self._transcript_hash = b""

    def initial_bytes(self) -> bytes:
        """The first frame (HELLO) to send; call once, before anything is received."""
        if self._state is not _State.START:
            raise RuntimeError("initial_bytes() may be called once")
        self._frame1 = self._hello(None)
        self._state = _State.WAIT_HELLO
        return self._frame1

    def _handle(self, frame: bytes, message: Message) -> bytes:
        if isinstance(message, Error):
            raise HandshakeError(f"peer refused the handshake: {message.message!r}")
        if self._state is _State.WAIT_HELLO:
            if not isinstance(message, Hello) or message.version is None:
                raise HandshakeError("expected the peer's HELLO reply")
            _check_identity(message)
            if self.expected_node_id is not None and not hmac.compare_digest(
                message.node_id, self.expected_node_id
            ):
                raise HandshakeError(
                    f"peer is node {message.node_id.hex()[:16]}..., "
                    f"not the expected {self.expected_node_id.hex()[:16]}..."
                )
            if message.version != _choose_version(self.versions, message.versions):
                raise HandshakeError(
                    f"peer chose version {message.version}, not the highest in common "
                    "(downgrade or unknown version)"
                )
            self._peer_hello = message
            self._transcript_hash = hashlib.sha256(
                TRANSCRIPT_PROLOGUE + self._frame1 + frame
            ).digest()
            self._state = _State.WAIT_AUTH
            return b""
        if self._state is _State.WAIT_AUTH:
            peer = self._peer_hello
            assert peer is not None
            assert peer.version is not None
            if not isinstance(message, Auth):
                raise HandshakeError("expected the peer's AUTH")
            if not verify_signature(
                peer.public_key, message.signature, RESPONDER_SIG_CONTEXT + self._transcript_hash
            ):
                raise HandshakeError("peer's handshake signature is invalid")
            signature = self.identity.sign(INITIATOR_SIG_CONTEXT + self._transcript_hash)
            reply = encode_frame(self._codec.encode(Auth(request_id=0, signature=signature)))
            self._finish(peer, peer.version, self._transcript_hash, self.expected_node_id)
            return reply
        raise HandshakeError("unexpected handshake message")


class ResponderHandshake(_Handshake):
    """The listening side: accepts any peer that proves its identity (see ``peer_node_id``)."""

    def __init__(
        self,
        identity: Identity,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        features: tuple[str, ...] = FEATURES,
    ) -> None:
        super().__init__(identity, versions, features)
        self._state = _State.WAIT_HELLO
        self._peer_hello: Hello | None = None
        self._version = 0
        self._transcript_hash = b""

    def _handle(self, frame: bytes, message: Message) -> bytes:
        if self._state is _State.WAIT_HELLO:
            if not isinstance(message, Hello) or message.version is not None:
                raise HandshakeError("expected HELLO")
            _check_identity(message)
            version = _choose_version(self.versions, message.versions)
            if version is None:
                reply = Error(
                    request_id=0,
                    code=ErrorCode.UNSUPPORTED_VERSION,
                    message=f"no common protocol version; this node speaks {list(self.versions)}",
                )
                raise HandshakeRefused(
                    "no common protocol version", encode_frame(self._codec.encode(reply))
                )
            hello = self._hello(version)
            self._transcript_hash = hashlib.sha256(TRANSCRIPT_PROLOGUE + frame + hello).digest()
            signature = self.identity.sign(RESPONDER_SIG_CONTEXT + self._transcript_hash)
            self._peer_hello = message
            self._version = version
            self._state = _State.WAIT_AUTH
            return hello + encode_frame(self._codec.encode(Auth(request_id=0, signature=signature)))
        if self._state is _State.WAIT_AUTH:
            peer = self._peer_hello
            assert peer is not None
            if not isinstance(message, Auth):
                raise HandshakeError("expected AUTH")
            if not verify_signature(
                peer.public_key, message.signature, INITIATOR_SIG_CONTEXT + self._transcript_hash
            ):
                raise HandshakeError("peer's handshake signature is invalid")
            self._finish(peer, self._version, self._transcript_hash, None)
            return b""
        raise HandshakeError("unexpected handshake message")
