"""Share links: ``p2p://<file ID in base32>?name=NAME&peer=HOST:PORT``.

The file ID is the 32-byte ID in RFC 4648 base32, lower case, without padding (52 characters).
``name`` (the manifest's name, percent-encoded) and ``peer`` (a chunk-server ``HOST:PORT`` that
held the file when the link was made) are optional hints: the ID alone names the file, and the
file is found through the DHT whatever the hints say. Pure functions; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

from .config import format_host_port, parse_host_port
from .errors import ConfigError

SCHEME = "p2p"
MAX_LINK_LENGTH = 2048
"""Longer input is not a link this module made: refused before parsing."""


@dataclass(frozen=True)
class ShareLink:
    """What a link says: the file ID, and the optional name and peer hints."""

    file_id: bytes
    name: str | None = None
    peer: tuple[str, int] | None = None

    def __str__(self) -> str:
        text = f"{SCHEME}://{encode_id(self.file_id)}"
        query = []
        if self.name:
            query.append(("name", self.name))
        if self.peer is not None:
            query.append(("peer", format_host_port(*self.peer)))
        if query:
            text += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="[]:")
        return text


def encode_id(file_id: bytes) -> str:
    """A 32-byte ID as 52 lower-case base32 characters."""
    if len(file_id) != 32:
        raise ValueError("a file ID is 32 bytes")
    return base64.b32encode(file_id).decode("ascii").rstrip("=").lower()


def decode_id(text: str) -> bytes:
    """The inverse of :func:`encode_id` (any case); raises :class:`ConfigError`."""
    if len(text) != 52:
        raise ConfigError(f"{text[:60]!r} is not a file ID in base32 (52 characters)")
    try:
        raw = base64.b32decode(text.upper() + "====", casefold=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{text[:60]!r} is not a file ID in base32") from None
    if len(raw) != 32 or encode_id(raw) != text.lower():
        raise ConfigError(f"{text[:60]!r} is not a file ID in base32")
    return raw


def is_link(text: str) -> bool:
    """Whether ``text`` is meant as a share link (starts with ``p2p://``)."""
    return text.strip().lower().startswith(f"{SCHEME}://")


def parse_link(text: str) -> ShareLink:
    """Parse a share link; raises :class:`ConfigError` with a one-line reason."""
    text = text.strip()
    if len(text) > MAX_LINK_LENGTH:
        raise ConfigError("link too long")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() != SCHEME or not parts.netloc:
        raise ConfigError(f"not a {SCHEME}:// link")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError("a link is p2p://ID?name=...&peer=HOST:PORT, nothing else")
    file_id = decode_id(parts.netloc)
    try:
        query = urllib.parse.parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError("malformed query in the link") from None
    unknown = sorted(set(query) - {"name", "peer"})
    if unknown or any(len(v) != 1 for v in query.values()):
        raise ConfigError("a link has at most one name and one peer, nothing else")
    name = query["name"][0] if "name" in query else None
    peer = parse_host_port(query["peer"][0]) if "peer" in query else None
    return ShareLink(file_id, name, peer)
