"""The directory manifest: a directory tree's canonical, bounded listing (sans-IO).

A stored directory is an **ordinary content-addressed file** whose content is the listing
encoded here; its file ID is the directory's ID. The files of the tree are ordinary files too,
named in the listing by their file IDs, so chunking, erasure code, dispersal, repair and provider
records apply to both without change. One listing describes the whole tree (entries carry
relative paths), so ``ls ID`` and ``get ID`` need a single small download before the files.

Encoding (format version 1), one canonical msgpack array (see ``docs/protocol.md``,
"Directories")::

    ["p2pstore-directory", 1, name: str, mode: int, entries: array]
    file entry:    [path: str, 0, mode: int, size: int, file_id: bin 32]
    directory:     [path: str, 1, mode: int]
    symlink:       [path: str, 2, target: str]

``path`` is relative to the tree's root, components joined with ``/``, each a valid single file
name (:func:`p2pstore.manifest.validate_name`: no ``/``, ``\\``, NUL or control characters, not
empty, ``.`` or ``..``). Entries are sorted by their paths' component tuples compared as UTF-8
bytes, strictly (so no duplicates), and every entry's parent directory is itself an entry (the
root excepted), so a listing has exactly one encoding. ``mode`` keeps the permission bits only
(``0..0o777``: never setuid, setgid or sticky). A symlink's target is relative, made of valid names,
with ``..`` allowed only as leading components and never more of them than the link's depth, so
that it cannot leave the tree (even through other links of the tree: see the document).

:meth:`DirectoryListing.decode` refuses anything malformed, out of bounds, inconsistent or not
canonical with :class:`DirectoryError` (a :class:`~p2pstore.errors.ManifestError`) and nothing
else: a downloader runs it on a hostile peer's bytes before writing anything.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from .errors import ManifestError
from .manifest import ID_LEN, MAX_FILE_SIZE, MAX_NAME_BYTES, unpack_array, validate_name

__all__ = [
    "DIRECTORY_HEADER",
    "DIRECTORY_MAGIC",
    "DIRECTORY_VERSION",
    "MAX_ENTRIES",
    "MAX_LISTING_BYTES",
    "MAX_PATH_BYTES",
    "MAX_PATH_DEPTH",
    "MAX_TARGET_BYTES",
    "DirectoryError",
    "DirectoryListing",
    "Entry",
    "EntryKind",
    "is_listing",
    "symlink_target_error",
]

#: First field of every listing: a file that does not start so is not a directory.
DIRECTORY_MAGIC = "p2pstore-directory"
#: Version of the encoding described above; anything else is refused.
DIRECTORY_VERSION = 1
#: Most bytes of an encoded listing; a downloader refuses a larger "directory" before fetching it.
MAX_LISTING_BYTES = 16 * 1024 * 1024
#: Most entries (files, directories and symlinks) in one listing.
MAX_ENTRIES = 100_000
#: Most components of an entry's path (the tree's depth below its root).
MAX_PATH_DEPTH = 64
#: Longest path, in UTF-8 bytes (below Linux's PATH_MAX once joined to any sane destination).
MAX_PATH_BYTES = 3072
#: Longest symlink target, in UTF-8 bytes.
MAX_TARGET_BYTES = 1024
#: Permission bits kept; setuid, setgid and sticky are never stored or applied.
MODE_MASK = 0o777

_FIELDS = 5
_KINDS = frozenset({0, 1, 2})
#: The bytes every listing starts with (a 5-array, then the magic string).
DIRECTORY_HEADER = b"\x95\xb2" + DIRECTORY_MAGIC.encode()


class DirectoryError(ManifestError):
    """A directory listing is malformed, unsafe, out of bounds or not canonical."""


class EntryKind(enum.IntEnum):
    """What an entry is; the integers are the wire values."""

    FILE = 0
    DIR = 1
    SYMLINK = 2


@dataclass(frozen=True)
class Entry:
    """One entry of a listing. ``size`` and ``file_id`` are for files, ``target`` for symlinks
    (and are 0 / ``b""`` / ``""`` otherwise); ``mode`` is 0 for symlinks (they have none)."""

    path: str
    kind: EntryKind
    mode: int = 0
    size: int = 0
    file_id: bytes = b""
    target: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        """The path's components."""
        return tuple(self.path.split("/"))

    def sort_key(self) -> tuple[bytes, ...]:
        """Canonical order: component tuples compared as UTF-8 bytes."""
        return tuple(p.encode("utf-8") for p in self.parts)

    def to_wire(self) -> list[Any]:
        """The entry's msgpack array."""
        if self.kind is EntryKind.FILE:
            return [self.path, int(self.kind), self.mode, self.size, self.file_id]
        if self.kind is EntryKind.DIR:
            return [self.path, int(self.kind), self.mode]
        return [self.path, int(self.kind), self.target]


def _is_int(value: object) -> bool:
    return type(value) is int


def _check_mode(mode: object, where: str) -> int:
    if not _is_int(mode) or not 0 <= mode <= MODE_MASK:  # type: ignore[operator]
        raise DirectoryError(f"{where}: mode must be an integer in 0..0o777 (permission bits)")
    return mode  # type: ignore[return-value]


def _check_component(name: str, where: str) -> None:
    try:
        validate_name(name)
    except ManifestError as exc:
        raise DirectoryError(f"{where}: {exc}") from None


def _check_path(path: object) -> tuple[str, ...]:
    if not isinstance(path, str) or not path:
        raise DirectoryError("an entry's path must be a non-empty string")
    shown = path[:80]
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise DirectoryError(f"path {shown!r}... is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise DirectoryError(f"path {shown!r} is absolute")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_PATH_DEPTH:
        raise DirectoryError(f"path {shown!r} is deeper than {MAX_PATH_DEPTH} components")
    for part in parts:
        if part == "..":
            raise DirectoryError(f"path {shown!r} climbs out of the tree (..)")
        if part in ("", "."):
            raise DirectoryError(f"path {shown!r} has an empty or . component")
        _check_component(part, f"path {shown!r}")
    return parts


def symlink_target_error(link_parts: Sequence[str], target: object) -> str | None:
    """Why a symlink at ``link_parts`` (its path's components) may not point at ``target``, or
    ``None`` if it may: relative, valid names, ``..`` only leading and no more of them than the
    link's depth, so it resolves inside the tree (the tree's other links obey the same rule)."""
    if not isinstance(target, str) or not target:
        return "its target must be a non-empty string"
    if len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET_BYTES:
        return f"its target is longer than {MAX_TARGET_BYTES} bytes"
    if target.startswith("/"):
        return f"its target {target[:80]!r} is absolute"
    parts = target.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > len(link_parts) - 1:
        return f"its target {target[:80]!r} leaves the tree"
    rest = parts[ups:]
    if not rest:
        return None  # "..", "../..": an ancestor inside the tree
    for part in rest:
        if part == "..":
            return f"its target {target[:80]!r} has .. after a name (it could leave the tree)"
        if part in ("", "."):
            return f"its target {target[:80]!r} has an empty or . component"
        try:
            validate_name(part)
        except ManifestError as exc:
            return f"its target {target[:80]!r} is not plain names: {exc}"
    return None


def _decode_entry(raw: object, index: int) -> Entry:
    if not isinstance(raw, list) or len(raw) < 3:
        raise DirectoryError(f"entry {index} must be an array of at least 3 fields")
    path, kind = raw[0], raw[1]
    parts = _check_path(path)
    assert isinstance(path, str)
    where = f"entry {path[:80]!r}"
    if not _is_int(kind) or kind not in _KINDS:
        raise DirectoryError(f"{where}: unknown kind {kind!r}")
    kind = EntryKind(kind)
    if kind is EntryKind.FILE:
        if len(raw) != 5:
            raise DirectoryError(f"{where}: a file entry has 5 fields")
        mode, size, file_id = raw[2], raw[3], raw[4]
        _check_mode(mode, where)
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            raise DirectoryError(f"{where}: size {size!r} out of range")
        if not isinstance(file_id, bytes) or len(file_id) != ID_LEN:
            raise DirectoryError(f"{where}: file ID must be {ID_LEN} bytes")
        return Entry(path, kind, mode, size, file_id)
    if kind is EntryKind.DIR:
        if len(raw) != 3:
            raise DirectoryError(f"{where}: a directory entry has 3 fields")
        return Entry(path, kind, _check_mode(raw[2], where))
    if len(raw) != 3:
        raise DirectoryError(f"{where}: a symlink entry has 3 fields")
    problem = symlink_target_error(parts, raw[2])
    if problem is not None:
        raise DirectoryError(f"symlink {path[:80]!r}: {problem}")
    return Entry(path, kind, target=raw[2])


def _validate_tree(entries: Sequence[Entry]) -> None:
    """Sorted strictly, and every entry's parent is a directory entry listed before it."""
    if len(entries) > MAX_ENTRIES:
        raise DirectoryError(f"more than {MAX_ENTRIES} entries")
    dirs: set[tuple[str, ...]] = set()
    previous: tuple[bytes, ...] | None = None
    for entry in entries:
        key = entry.sort_key()
        if previous is not None and key <= previous:
            what = "duplicate" if key == previous else "out of order"
            raise DirectoryError(f"entry {entry.path[:80]!r} is {what} (entries sort by path)")
        previous = key
        parts = entry.parts
        if len(parts) > 1 and parts[:-1] not in dirs:
            raise DirectoryError(
                f"entry {entry.path[:80]!r}: its parent is not a directory entry of the listing"
            )
        if entry.kind is EntryKind.DIR:
            dirs.add(parts)


def is_listing(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a listing (then :meth:`DirectoryListing.decode` decides)."""
    return bytes(data[: len(DIRECTORY_HEADER)]) == DIRECTORY_HEADER


@dataclass(frozen=True)
class DirectoryListing:
    """A validated directory tree: its root's ``name`` and ``mode`` and its sorted ``entries``.

    Construction checks everything :meth:`decode` checks (so a listing is always canonical and
    safe to extract); use :meth:`build` for entries in any order.
    """

    name: str
    mode: int
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        _check_component(self.name, "directory name")
        _check_mode(self.mode, "directory")
        if len(self.entries) > MAX_ENTRIES:
            raise DirectoryError(f"more than {MAX_ENTRIES} entries")
        for entry in self.entries:
            # Re-check through the wire form: one set of rules for built and decoded listings.
            if _decode_entry(entry.to_wire(), 0) != entry:
                raise DirectoryError(f"entry {entry.path[:80]!r} has fields its kind has not")
        _validate_tree(self.entries)
        if len(self.encode()) > MAX_LISTING_BYTES:
            raise DirectoryError(f"listing larger than {MAX_LISTING_BYTES} bytes")

    @classmethod
    def build(cls, name: str, mode: int, entries: Iterable[Entry]) -> DirectoryListing:
        """A listing of ``entries`` in any order (sorted here). Raises :class:`DirectoryError`."""
        return cls(name, mode, tuple(sorted(entries, key=Entry.sort_key)))

    @cached_property
    def _encoded(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                DIRECTORY_MAGIC,
                DIRECTORY_VERSION,
                self.name,
                self.mode,
                [e.to_wire() for e in self.entries],
            ],
            use_bin_type=True,
        )
        return packed

    def encode(self) -> bytes:
        """The canonical listing bytes (the content of the directory's file)."""
        return self._encoded

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> DirectoryListing:
        """Parse and validate listing bytes from anyone. Raises :class:`DirectoryError` (and
        nothing else) on anything malformed, unsafe, out of bounds or not canonical."""
        data = bytes(data)
        if len(data) > MAX_LISTING_BYTES:
            raise DirectoryError(f"listing larger than {MAX_LISTING_BYTES} bytes")
        if not is_listing(data):
            raise DirectoryError("not a directory listing")
        obj = unpack_array(
            data,
            fields=_FIELDS,
            error=DirectoryError,
            what="listing",
            shape=f"a listing is an array of {_FIELDS} fields",
            max_str_len=max(MAX_PATH_BYTES, MAX_TARGET_BYTES),
            max_bin_len=ID_LEN,
            max_array_len=MAX_ENTRIES,
            detail=lambda exc: type(exc).__name__,
        )
        magic, version, name, mode, raw_entries = obj
        if magic != DIRECTORY_MAGIC:
            raise DirectoryError("not a directory listing")
        if not _is_int(version) or version != DIRECTORY_VERSION:
            raise DirectoryError(f"unsupported directory listing version {version!r}")
        if not isinstance(name, str):
            raise DirectoryError("the directory name must be a string")
        _check_component(name, "directory name")
        _check_mode(mode, "directory")
        if not isinstance(raw_entries, list):
            raise DirectoryError("entries must be an array")
        entries = tuple(_decode_entry(raw, i) for i, raw in enumerate(raw_entries))
        _validate_tree(entries)
        listing = cls.__new__(cls)
        object.__setattr__(listing, "name", name)
        object.__setattr__(listing, "mode", mode)
        object.__setattr__(listing, "entries", entries)
        if listing.encode() != data:
            raise DirectoryError("listing is not canonically encoded")
        return listing

    # -- queries -------------------------------------------------------------------------------

    def files(self) -> list[Entry]:
        """The file entries, in order."""
        return [e for e in self.entries if e.kind is EntryKind.FILE]

    def directories(self) -> list[Entry]:
        """The directory entries, in order (parents before children)."""
        return [e for e in self.entries if e.kind is EntryKind.DIR]

    def symlinks(self) -> list[Entry]:
        """The symlink entries, in order."""
        return [e for e in self.entries if e.kind is EntryKind.SYMLINK]

    @property
    def total_size(self) -> int:
        """Bytes of all the tree's files."""
        return sum(e.size for e in self.files())

    def file_ids(self) -> list[bytes]:
        """The distinct file IDs the tree needs, in entry order."""
        return list(dict.fromkeys(e.file_id for e in self.files()))

    def case_collisions(self) -> list[tuple[str, str]]:
        """Pairs of entry paths that name the same file on a case-insensitive, normalising
        filesystem (NTFS, APFS, FAT): extracting the tree there would merge them."""
        seen: dict[tuple[str, ...], str] = {}
        clashes: list[tuple[str, str]] = []
        for entry in self.entries:
            folded = tuple(unicodedata.normalize("NFC", p).casefold() for p in entry.parts)
            other = seen.setdefault(folded, entry.path)
            if other != entry.path:
                clashes.append((other, entry.path))
        return clashes


assert MAX_NAME_BYTES < MAX_PATH_BYTES
