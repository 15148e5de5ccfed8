"""Saving and loading the routing table's contacts: msgpack, written atomically (never pickle).

File format: a msgpack map ``{"v": 1, "node_id": bin32, "contacts": [packed contact, ...]}`` with
contacts packed as on the wire (38/50 bytes). A file for another node ID, or a malformed one, is
ignored: its contacts would only be candidates to PING anyway, never trusted table entries.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgpack

from ..errors import ProtocolError
from .contact import NODE_ID_BYTES, Contact, pack_contact, unpack_contact

TABLE_FILE_NAME = "dht_routing.msgpack"
FILE_VERSION = 1
MAX_SAVED_CONTACTS = 4096
"""More contacts than any routing table of k=20 buckets holds in a realistic network."""
MAX_TABLE_FILE_BYTES = MAX_SAVED_CONTACTS * 56 + 1024
"""A larger file is not ours; it is refused before parsing."""


def save_contacts(path: Path, node_id: bytes, contacts: list[Contact]) -> None:
    """Write ``contacts`` to ``path`` atomically (temp file, fsync, rename). Blocking: run it in
    a thread from async code. Raises :class:`OSError` on I/O failure (the old file is kept)."""
    data = msgpack.packb(
        {
            "v": FILE_VERSION,
            "node_id": node_id,
            "contacts": [pack_contact(c) for c in contacts[:MAX_SAVED_CONTACTS]],
        },
        use_bin_type=True,
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A random name, created exclusively and never through a link, private to this user: the
    # data directory's rules (p2pstore.datadir) hold for this file too.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(tmp, flags, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_contacts(path: Path, node_id: bytes) -> list[Contact]:
    """The contacts saved at ``path`` for ``node_id``; ``[]`` if absent, foreign or malformed."""
    try:
        if path.stat().st_size > MAX_TABLE_FILE_BYTES:
            return []
        raw = path.read_bytes()
    except OSError:
        return []
    try:
        obj = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_bin_len=NODE_ID_BYTES * 2,
            max_str_len=64,
            max_array_len=MAX_SAVED_CONTACTS,
            max_map_len=8,
            max_ext_len=0,
        )
    except Exception:  # any msgpack failure means "not a file we wrote"
        return []
    if (
        not isinstance(obj, dict)
        or obj.get("v") != FILE_VERSION
        or obj.get("node_id") != node_id
        or not isinstance(obj.get("contacts"), list)
    ):
        return []
    contacts = []
    for item in obj["contacts"]:
        if not isinstance(item, bytes):
            continue
        try:
            contact = unpack_contact(item)
        except ProtocolError:
            continue
        if contact.node_id != node_id:
            contacts.append(contact)
    return contacts
