"""The manifest: a file's description, its canonical encoding and its file ID.

Wire/disk format (format version 1). The *root* manifest is one canonical msgpack array::

    [1, name: str, size: int, chunk_size: int, k: int, m: int, depth: int, table: bin]

The *stripe table* is the concatenation of every chunk ID of the file (32 bytes each) in
canonical order: stripe-major, and within a stripe its data chunks then its parity chunks (see
:mod:`p2pstore.chunking`). The number of IDs per stripe follows from size/chunk_size/k/m, so the
table needs no further structure.

* ``depth == 0``: ``table`` is the stripe table itself.
* ``depth == d >= 1``: the level-``d-1`` bytes (level 0 = the stripe table) are split into
  *index chunks* of exactly ``chunk_size`` bytes (the last one may be shorter); level ``d`` is the
  concatenation of their IDs, and the root's ``table`` is level ``depth``.

``depth`` is the smallest for which the root's table is at most ``root_table_capacity(chunk_size)``
bytes, so every root fits in one chunk and a manifest has exactly one encoding. Index chunks are
stored and fetched like any chunk and verified by their IDs. The *file ID* is the SHA-256 of the
root bytes; the root is itself stored as the chunk whose ID is the file ID.

Decoding is bounded and schema-checked, and only the canonical encoding is accepted (re-encoding
must reproduce the input byte for byte). Everything malformed or inconsistent raises
:class:`~p2pstore.errors.ManifestError`, never anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgpack

from .chunking import MAX_CHUNK_SIZE, Layout
from .errors import ConfigError, ManifestError

__all__ = [
    "FORMAT_VERSION",
    "ID_LEN",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "MAX_NAME_BYTES",
    "Manifest",
    "ManifestRoot",
    "chunk_id",
    "root_table_capacity",
    "unpack_array",
    "validate_name",
]

#: Version of the encoding described above; anything else is rejected.
FORMAT_VERSION = 1
#: Length of a chunk ID (SHA-256).
ID_LEN = 32
#: A name is a single path component; 255 bytes is the common filesystem limit (NAME_MAX).
MAX_NAME_BYTES = 255
#: 2**50 bytes (1 PiB): far above any real file, keeps all size arithmetic and checks bounded.
MAX_FILE_SIZE = 1 << 50
#: Index levels needed are at most 3 even at 64 KiB chunks and MAX_FILE_SIZE; 4 leaves headroom.
MAX_DEPTH = 4
#: A root can never exceed the largest chunk; checked before any parsing.
MAX_ROOT_BYTES = MAX_CHUNK_SIZE
_ROOT_FIELDS = 8


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """The ID of a chunk: SHA-256 of its bytes (32 bytes)."""
    return hashlib.sha256(data).digest()


def root_table_capacity(chunk_size: int) -> int:
    """Most table bytes a root may hold: half a chunk, leaving room for the name and fields."""
    return (chunk_size // 2) // ID_LEN * ID_LEN


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid file name, else raise :class:`ManifestError`.

    Valid: a non-empty ``str`` of at most ``MAX_NAME_BYTES`` UTF-8 bytes, a single path
    component (no ``/``, ``\\`` or NUL, not ``.`` or ``..``) without control characters.
    Names come from peers and end up as file names and in terminals, hence the strictness.
    """
    if not isinstance(name, str) or not name:
        raise ManifestError("file name must be a non-empty string")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ManifestError("file name is not valid Unicode") from exc
    if len(encoded) > MAX_NAME_BYTES:
        raise ManifestError(f"file name longer than {MAX_NAME_BYTES} bytes")
    if name in (".", "..") or any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ManifestError(f"file name {name!r} is not a single plain path component")
    return name


def _layout(chunk_size: int, k: int, m: int) -> Layout:
    try:
        return Layout(chunk_size, k, m)
    except ConfigError as exc:
        raise ManifestError(f"bad manifest parameters: {exc}") from exc


def _split(level: bytes, chunk_size: int) -> list[bytes]:
    return [level[i : i + chunk_size] for i in range(0, len(level), chunk_size)]


def _level_lengths(table_len: int, chunk_size: int) -> list[int]:
    """Byte lengths of levels 0..depth; the last one is what the root holds."""
    lengths = [table_len]
    capacity = root_table_capacity(chunk_size)
    while lengths[-1] > capacity:
        pieces = -(-lengths[-1] // chunk_size)
        lengths.append(pieces * ID_LEN)
        if len(lengths) - 1 > MAX_DEPTH:
            raise ManifestError("manifest would need too many index levels")
    return lengths


def _piece_lengths(level_len: int, chunk_size: int) -> list[int]:
    full, rest = divmod(level_len, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def _encode_root(
    name: str, size: int, chunk_size: int, k: int, m: int, depth: int, table: bytes
) -> bytes:
    packed: bytes = msgpack.packb(
        [FORMAT_VERSION, name, size, chunk_size, k, m, depth, table], use_bin_type=True
    )
    return packed


def unpack_array(
    data: bytes,
    *,
    fields: int,
    error: type[ManifestError],
    what: str,
    shape: str,
    max_str_len: int,
    max_bin_len: int,
    max_array_len: int,
    detail: Callable[[Exception], str] = str,
) -> list[Any]:
    """Decode untrusted msgpack ``data`` that must be one array of ``fields`` items, with every
    string, binary and array no longer than the limits given (maps and extension types are
    refused), so nothing larger than they allow is ever allocated.

    Raises ``error`` (a :class:`ManifestError`) and nothing else: ``"{what} is not valid
    msgpack: {detail(exc)}"`` for any decoding failure, ``shape`` for anything but an array of
    ``fields`` items. Shared by the root manifest's and the directory listing's decoders.
    """
    try:
        obj: Any = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_str_len,
            max_bin_len=max_bin_len,
            max_array_len=max_array_len,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # any decoding failure of untrusted bytes is a bad manifest
        raise error(f"{what} is not valid msgpack: {detail(exc)}") from exc
    if not isinstance(obj, list) or len(obj) != fields:
        raise error(shape)
    return obj


def _is_int(v: object) -> bool:
    return type(v) is int


@dataclass(frozen=True)
class ManifestRoot:
    """A decoded, validated root manifest: everything but (for ``depth > 0``) the stripe table.

    Obtain one with :meth:`decode`. ``table`` is the root's table bytes (the stripe table itself
    if ``depth == 0``, else the IDs of the top-level index chunks).
    """

    name: str
    size: int
    chunk_size: int
    k: int
    m: int
    depth: int
    table: bytes
    file_id: bytes

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> ManifestRoot:
        """Parse and validate root manifest bytes (e.g. from an untrusted peer).

        The file ID is the SHA-256 of ``data``; the caller compares it with the ID it asked for.
        Raises :class:`ManifestError` on anything malformed, out of range, inconsistent or not
        canonically encoded.
        """
        data = bytes(data)
        if len(data) > MAX_ROOT_BYTES:
            raise ManifestError(f"root manifest larger than {MAX_ROOT_BYTES} bytes")
        obj = unpack_array(
            data,
            fields=_ROOT_FIELDS,
            error=ManifestError,
            what="root manifest",
            shape=f"root manifest must be an array of {_ROOT_FIELDS} fields",
            max_str_len=MAX_NAME_BYTES,
            max_bin_len=MAX_ROOT_BYTES,
            max_array_len=_ROOT_FIELDS,
        )
        version, name, size, chunk_size, k, m, depth, table = obj
        if not _is_int(version) or version != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format version {version!r}")
        validate_name(name)
        for label, v in (("size", size), ("chunk_size", chunk_size), ("k", k), ("m", m)):
            if not _is_int(v):
                raise ManifestError(f"manifest {label} must be an integer")
        if not 0 <= size <= MAX_FILE_SIZE:
            raise ManifestError(f"file size {size} out of range")
        layout = _layout(chunk_size, k, m)
        if not _is_int(depth) or not 0 <= depth <= MAX_DEPTH:
            raise ManifestError(f"manifest depth {depth!r} out of range")
        if not isinstance(table, bytes):
            raise ManifestError("manifest table must be binary")
        lengths = _level_lengths(layout.total_chunks(size) * ID_LEN, chunk_size)
        if depth != len(lengths) - 1:
            raise ManifestError(f"manifest depth {depth} inconsistent with its size")
        if len(table) != lengths[-1]:
            raise ManifestError(
                f"manifest table has {len(table)} bytes; size, chunk size, k and m"
                f" require {lengths[-1]}"
            )
        if _encode_root(name, size, chunk_size, k, m, depth, table) != data:
            raise ManifestError("root manifest is not canonically encoded")
        return cls(name, size, chunk_size, k, m, depth, table, hashlib.sha256(data).digest())

    @property
    def layout(self) -> Layout:
        """The file's chunking parameters."""
        return Layout(self.chunk_size, self.k, self.m)

    def needed_chunk_ids(self, parts: Mapping[bytes, bytes] | None = None) -> list[bytes]:
        """IDs of index chunks to fetch next, given the index chunks already in ``parts``.

        Returns ``[]`` when ``parts`` (plus the root) is enough for :meth:`Manifest.from_parts`.
        With ``depth > 1`` the deeper levels are only known once the upper ones are in ``parts``,
        so call again after fetching. Raises :class:`ManifestError` if a supplied part is wrong.
        """
        parts = parts or {}
        try:
            self._resolve(parts)
        except _Missing as missing:
            return missing.ids
        return []

    def _resolve(self, parts: Mapping[bytes, bytes]) -> bytes:
        """The stripe table, from the root and ``parts``; raises _Missing naming what is needed."""
        lengths = _level_lengths(self.layout.total_chunks(self.size) * ID_LEN, self.chunk_size)
        level = self.table
        for d in range(self.depth, 0, -1):
            ids = [level[i : i + ID_LEN] for i in range(0, len(level), ID_LEN)]
            absent = [i for i in ids if i not in parts]
            if absent:
                raise _Missing(list(dict.fromkeys(absent)))
            expected = _piece_lengths(lengths[d - 1], self.chunk_size)
            pieces = []
            for cid, want in zip(ids, expected, strict=True):
                piece = parts[cid]
                if len(piece) != want or hashlib.sha256(piece).digest() != cid:
                    raise ManifestError(f"index chunk {cid.hex()} does not match its ID or length")
                pieces.append(bytes(piece))
            level = b"".join(pieces)
        return level


class _Missing(Exception):
    def __init__(self, ids: list[bytes]) -> None:
        self.ids = ids


@dataclass(frozen=True)
class Manifest:
    """A file's description: name, size, chunking parameters and every chunk ID.

    ``stripes[s]`` holds the IDs of stripe ``s``: its ``data_chunk_count(s)`` data chunks, then
    its ``m`` parity chunks. Construction validates everything and raises
    :class:`ManifestError` on any inconsistency, so a ``Manifest`` is always well formed.
    Equal manifests have equal encodings and therefore equal :attr:`file_id`.
    """

    name: str
    size: int
    chunk_size: int
    k: int
    m: int
    stripes: tuple[tuple[bytes, ...], ...] = field(repr=False)

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not _is_int(self.size) or not 0 <= self.size <= MAX_FILE_SIZE:
            raise ManifestError(f"file size {self.size!r} out of range")
        layout = _layout(self.chunk_size, self.k, self.m)
        n = layout.stripe_count(self.size)
        if len(self.stripes) != n:
            raise ManifestError(f"expected {n} stripes for this size, got {len(self.stripes)}")
        for s, ids in enumerate(self.stripes):
            if len(ids) != layout.share_count(self.size, s):
                raise ManifestError(f"stripe {s} has {len(ids)} chunk IDs, expected more/fewer")
            for cid in ids:
                if not isinstance(cid, bytes) or len(cid) != ID_LEN:
                    raise ManifestError(f"stripe {s} holds an ID that is not {ID_LEN} bytes")

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_table(
        cls, name: str, size: int, chunk_size: int, k: int, m: int, table: bytes
    ) -> Manifest:
        """Build from the concatenated stripe table (canonical order). Raises ManifestError."""
        layout = _layout(chunk_size, k, m)
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            raise ManifestError(f"file size {size!r} out of range")
        if len(table) != layout.total_chunks(size) * ID_LEN:
            raise ManifestError("stripe table length does not match size, chunk size, k and m")
        stripes = []
        pos = 0
        for s in range(layout.stripe_count(size)):
            n = layout.share_count(size, s)
            stripes.append(
                tuple(table[pos + i * ID_LEN : pos + (i + 1) * ID_LEN] for i in range(n))
            )
            pos += n * ID_LEN
        return cls(name, size, chunk_size, k, m, tuple(stripes))

    @classmethod
    def from_parts(cls, root: ManifestRoot, parts: Mapping[bytes, bytes]) -> Manifest:
        """The full manifest from a decoded root and its index chunks (``{id: bytes}``).

        Every index chunk is checked against its ID and expected length. Raises
        :class:`ManifestError` if one is missing or wrong
        (see :meth:`ManifestRoot.needed_chunk_ids`).
        """
        try:
            table = root._resolve(parts)
        except _Missing as missing:
            raise ManifestError(
                f"{len(missing.ids)} index chunk(s) of the manifest are missing"
            ) from None
        return cls.from_table(root.name, root.size, root.chunk_size, root.k, root.m, table)

    @classmethod
    def decode(
        cls, root_bytes: bytes | bytearray | memoryview, parts: Mapping[bytes, bytes] | None = None
    ) -> Manifest:
        """Shorthand for ``from_parts(ManifestRoot.decode(root_bytes), parts or {})``."""
        return cls.from_parts(ManifestRoot.decode(root_bytes), parts or {})

    # -- encoding ----------------------------------------------------------------------------

    @cached_property
    def _levels(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        level = self.table_bytes()
        depth = len(_level_lengths(len(level), self.chunk_size)) - 1
        index: list[tuple[bytes, bytes]] = []
        for _ in range(depth):
            pieces = _split(level, self.chunk_size)
            ids = [hashlib.sha256(p).digest() for p in pieces]
            index.extend(zip(ids, pieces, strict=True))
            level = b"".join(ids)
        root = _encode_root(self.name, self.size, self.chunk_size, self.k, self.m, depth, level)
        return root, index

    @cached_property
    def _root(self) -> bytes:
        return self._levels[0]

    def table_bytes(self) -> bytes:
        """The stripe table: every chunk ID concatenated in canonical order."""
        return b"".join(cid for ids in self.stripes for cid in ids)

    def encode_root(self) -> bytes:
        """The canonical root manifest bytes (at most ``chunk_size`` bytes)."""
        return self._root

    def index_chunks(self) -> list[tuple[bytes, bytes]]:
        """``(id, bytes)`` of every index chunk (empty for small manifests), top level last."""
        return list(self._levels[1])

    def manifest_chunks(self) -> list[tuple[bytes, bytes]]:
        """``(id, bytes)`` of the root (first, its ID is the file ID) and every index chunk."""
        return [(self.file_id, self.encode_root()), *self.index_chunks()]

    @cached_property
    def file_id(self) -> bytes:
        """SHA-256 of the root manifest bytes: the file's identity on every machine."""
        return hashlib.sha256(self.encode_root()).digest()

    # -- queries -----------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """The file's chunking parameters."""
        return Layout(self.chunk_size, self.k, self.m)

    def chunk_ids(self) -> list[bytes]:
        """All data and parity chunk IDs in canonical order (stripe-major, then position).

        This is the order of HAVE bitmaps. An ID may repeat (identical chunks).
        """
        return [cid for ids in self.stripes for cid in ids]

    @property
    def chunk_count(self) -> int:
        """Number of entries in :meth:`chunk_ids`."""
        return sum(len(ids) for ids in self.stripes)

    def data_chunk_count(self, stripe_index: int) -> int:
        """Number of data chunks of the stripe (``k`` except maybe the last stripe)."""
        return self.layout.data_chunk_count(self.size, stripe_index)

    def stripe_data_size(self, stripe_index: int) -> int:
        """Bytes of file data in the stripe."""
        return self.layout.stripe_data_size(self.size, stripe_index)

    def chunk_length(self, stripe_index: int, share_index: int) -> int:
        """Length in bytes of chunk ``stripes[stripe_index][share_index]``."""
        return self.layout.chunk_length(self.size, stripe_index, share_index)

    def share_length(self, stripe_index: int) -> int:
        """Length of the stripe's erasure shares (= its parity chunks, = its first data chunk)."""
        return self.layout.share_length(self.size, stripe_index)

    def erasure_index(self, stripe_index: int, share_index: int) -> int:
        """Reed-Solomon share index (0..k+m-1) of ``stripes[stripe_index][share_index]``."""
        return self.layout.erasure_index(self.size, stripe_index, share_index)
