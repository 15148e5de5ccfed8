"""A node's long-term identity: an Ed25519 key pair and the node ID derived from it.

The same key signs DHT values and authenticates the chunk channel's handshake, so a node ID learned
from the DHT can be checked when a TCP channel is opened to that node.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError

NODE_ID_BYTES = 32
"""Node IDs are SHA-256 digests: 256 bits."""

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FILE_NAME = "identity.key"


def node_id_from_public_key(public_key: bytes) -> bytes:
    """The node ID of a raw 32-byte Ed25519 public key: its SHA-256 digest."""
    return hashlib.sha256(public_key).digest()


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Never raises for malformed input (wrong lengths, invalid points): those are simply ``False``.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """An Ed25519 key pair; ``node_id`` is the SHA-256 of the raw public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id: bytes = node_id_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (not saved anywhere)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """The identity of a raw 32-byte Ed25519 private key."""
        if len(raw) != 32:
            raise ConfigError("an Ed25519 private key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """The identity kept in ``data_dir``, created (mode 0600, written atomically) if absent.

        The same directory always yields the same node ID across restarts. The key file is never
        read through a symbolic link, and one owned by another user or readable or writable by
        anyone else is refused (:class:`ConfigError`): whoever could write it chooses this
        node's identity, whoever could read it can impersonate the node. The temp file it is
        written through is created with ``O_EXCL | O_NOFOLLOW`` under a random name. The caller
        checks the directory itself (:func:`p2pstore.datadir.prepare_data_dir`).
        """
        path = Path(data_dir) / KEY_FILE_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls._create(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{path} is a symbolic link; refusing to use it") from None
            raise
        with open(fd, "rb") as key_file:
            st = os.fstat(key_file.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{path} is not a regular file")
            if st.st_uid != os.geteuid():
                raise ConfigError(
                    f"{path} is owned by uid {st.st_uid}, not by this user; refusing to use it"
                )
            if st.st_mode & 0o077:
                raise ConfigError(
                    f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o});"
                    " run: chmod 600 " + str(path)
                )
            raw = key_file.read(33)
        if len(raw) != 32:
            raise ConfigError(f"{path} is not a 32-byte Ed25519 private key")
        return cls.from_private_bytes(raw)

    @classmethod
    def _create(cls, path: Path) -> Identity:
        identity = cls.generate()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.write(fd, identity.private_bytes())
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() never replaces: if another process created the key meanwhile, use theirs.
            try:
                os.link(tmp, path)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                os.replace(tmp, path)  # a filesystem without hard links
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            return cls.load_or_create(path.parent)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return identity

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (for saving; handle with care)."""
        return self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message``."""
        return self._private_key.sign(message)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()[:16]}...)"
