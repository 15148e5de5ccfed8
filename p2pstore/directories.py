"""Storing and fetching directory trees: the I/O around :mod:`p2pstore.directory`.

* :func:`scan_tree` walks a local directory (never following a link) into what a listing needs.
* :class:`TreeWriter` extracts a validated listing into a private temporary directory beside the
  target and renames it into place only when every file is there and verified, so a failed or
  cancelled ``get`` never leaves a half tree under the target's name.
* :func:`put_directory`, :func:`fetch_listing` and :func:`get_directory` are what
  :class:`p2pstore.node.Node`'s directory methods run: every file of the tree is an ordinary
  file (stored, announced, dispersed and fetched like any other), and the listing is one more.

Policies, for users: regular files, directories (empty ones too) and symlinks whose target stays
inside the tree are stored; symlinks leaving it (absolute, or climbing above the root), sockets,
FIFOs, devices and names that are not valid file names are **skipped with a warning** (listed in
the result). Only the permission bits ``0o777`` of modes are kept. A received listing is checked
in full (:meth:`DirectoryListing.decode`) before anything is written; on a filesystem that folds
case, names that would merge are refused as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._groups import collapse_exception_groups
from .directory import (
    DIRECTORY_HEADER,
    MAX_ENTRIES,
    MAX_LISTING_BYTES,
    MAX_PATH_DEPTH,
    DirectoryError,
    DirectoryListing,
    Entry,
    EntryKind,
    is_listing,
    symlink_target_error,
)
from .errors import (
    ConfigError,
    FileUnavailableError,
    ManifestError,
    NotDispersedError,
    P2PStoreError,
)
from .manifest import Manifest, validate_name
from .ratelimit import RateLimiter
from .transfer.download import Provider
from .transfer.output import OutputFile
from .treerefs import tree_operation

if TYPE_CHECKING:
    from .node import DownloadProgress, GetResult, Node

log = logging.getLogger(__name__)

#: Files of a tree stored or fetched at once (each fans out to many peers by itself).
FILE_CONCURRENCY = 4
#: Pauses before looking a file of a tree up again when no provider or manifest was found.
LOOKUP_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
#: Seconds between two repeated announcements (a few DHT requests each; nodes allow 50/s).
ANNOUNCE_PACE = 0.05
#: DHT work per file of a tree is paced at this many files per second after a burst of
#: FILE_BURST: the dispersal of each file of a put (a look-up of its targets), and the look-ups a
#: get falls back to for files the directory's providers do not have. A DHT node answers one
#: address at most 50 requests/s after a burst of 200 (DhtConfig.rate_limit_*); beyond that it
#: drops its requests (measured: 200 small files at once on 2 nodes). A tree's get asks the
#: directory's providers first (:class:`TreeProviders`) and a put announces the tree's files in
#: the background (paced by the node), so neither costs a look-up per file otherwise.
FILE_RATE = 20.0
FILE_BURST = 64
_PART_SUFFIX = ".p2pstore-dir"
_RANDOM_HEX = 8


class NotADirectoryListingError(DirectoryError):
    """The ID names an ordinary file, not a directory listing.

    ``fetched``: the get that fetched the whole file to look (a file small enough to be a
    listing), whose chunks are now in the store; ``None`` when its manifest alone told."""

    def __init__(self, message: str, fetched: GetResult | None = None) -> None:
        super().__init__(message)
        self.fetched = fetched


# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScannedFile:
    """A regular file of a scanned tree: its path in the tree, on disk, and its mode bits."""

    rel: str
    path: Path
    mode: int


@dataclass
class ScannedTree:
    """What :func:`scan_tree` found: the root's name and mode, entries other than files (which
    get their IDs once stored), the files, and what was skipped (``(path, reason)``)."""

    name: str
    mode: int
    others: list[Entry] = field(default_factory=list)
    files: list[ScannedFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan_tree(root: Path, name: str | None = None) -> ScannedTree:
    """Walk ``root`` (blocking; run it in a thread). Raises :class:`ConfigError` if the tree
    has more entries or levels than a listing may hold, ``OSError`` if it cannot be read."""
    root = Path(root)
    top = os.stat(root)  # follows a link given as the root itself, as ``ls`` would
    if not stat.S_ISDIR(top.st_mode):
        raise ConfigError(f"not a directory: {root}")
    tree_name = name if name is not None else root.resolve().name
    try:
        validate_name(tree_name)
    except ManifestError as exc:
        raise ConfigError(f"cannot name the directory {tree_name!r}: {exc}") from None
    tree = ScannedTree(tree_name, stat.S_IMODE(top.st_mode) & 0o777)
    count = 0
    pending: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda d: d.name)
        for child in children:
            parts = (*prefix, child.name)
            rel = "/".join(parts)
            try:
                validate_name(child.name)
                child.name.encode("utf-8")
            except (ManifestError, UnicodeEncodeError):
                tree.skipped.append((rel, "not a valid file name"))
                continue
            count += 1
            if count > MAX_ENTRIES:
                raise ConfigError(f"{root} has more than {MAX_ENTRIES} entries (the most a"
                                  " directory manifest holds)")  # fmt: skip
            if len(parts) > MAX_PATH_DEPTH:
                raise ConfigError(f"{root} is deeper than {MAX_PATH_DEPTH} levels")
            info = child.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode) & 0o777
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(child.path)
                problem = symlink_target_error(parts, target)
                if problem is not None:
                    tree.skipped.append((rel, f"symlink: {problem}"))
                    continue
                tree.others.append(Entry(rel, EntryKind.SYMLINK, target=target))
            elif stat.S_ISDIR(info.st_mode):
                tree.others.append(Entry(rel, EntryKind.DIR, mode))
                pending.append((Path(child.path), parts))
            elif stat.S_ISREG(info.st_mode):
                tree.files.append(ScannedFile(rel, Path(child.path), mode))
            else:
                tree.skipped.append((rel, "not a regular file, directory or symlink"))
    return tree


# ----------------------------------------------------------------------------- extracting


_active_parts: set[Path] = set()  # temporary trees of gets running in this process


def _part_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(
        re.escape(f".{target.name}.") + f"[0-9a-f]{{{_RANDOM_HEX}}}" + re.escape(_PART_SUFFIX)
    )


def _make_writable(path: Path) -> None:
    """Give every directory below ``path`` (itself included) owner rwx so it can be removed."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in [dirpath, *(os.path.join(dirpath, n) for n in dirnames)]:
            with contextlib.suppress(OSError):
                if not os.path.islink(d):
                    os.chmod(d, 0o700)


def remove_tree(path: Path) -> None:
    """Delete a temporary tree, read-only directories included (links are never followed)."""
    if not path.exists() and not path.is_symlink():
        return
    _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)


def remove_dead_trees(target: Path) -> list[Path]:
    """Delete temporary trees that gets into ``target`` left (a crash) and that no get of this
    process is writing; returns them. Blocking."""
    pattern = _part_pattern(target)
    removed: list[Path] = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        path = target.parent / name
        if pattern.fullmatch(name) and path not in _active_parts and not path.is_symlink():
            remove_tree(path)
            removed.append(path)
    return removed


def _folds_case(directory: Path) -> bool:
    """Whether names in ``directory`` are case-insensitive (probed with a temporary file)."""
    probe = directory / f".case-probe-{secrets.token_hex(4)}"
    probe.touch()
    try:
        return (directory / probe.name.upper()).exists()
    finally:
        probe.unlink()


class TreeWriter:
    """Extract ``listing`` to ``target`` (which must not exist) through a temporary tree.

    :meth:`prepare` (blocking) creates the temporary tree and its directories; files are then
    written at :meth:`path_of` (by downloads, each atomically); :meth:`finish` (blocking) adds
    the symlinks, applies the modes and renames the tree into place; :meth:`abort` (blocking)
    removes it.
    """

    def __init__(self, listing: DirectoryListing, target: Path) -> None:
        self.listing = listing
        self.target = Path(target)
        self.tmp = self.target.parent / (
            f".{self.target.name}.{secrets.token_hex(_RANDOM_HEX // 2)}{_PART_SUFFIX}"
        )

    def path_of(self, entry: Entry) -> Path:
        """Where ``entry`` goes in the temporary tree."""
        return self.tmp.joinpath(*entry.parts)

    def _refuse_existing(self) -> None:
        if self.target.exists() or self.target.is_symlink():
            raise FileExistsError(
                17, "File exists (choose another path with -o)", os.fspath(self.target)
            )

    def prepare(self) -> None:
        """Refuse an existing target; create the temporary tree and its directories."""
        self._refuse_existing()
        remove_dead_trees(self.target)
        os.mkdir(self.tmp, 0o700)
        _active_parts.add(self.tmp)
        try:
            if _folds_case(self.tmp):
                clashes = self.listing.case_collisions()
                if clashes:
                    a, b = clashes[0]
                    raise DirectoryError(
                        f"{a!r} and {b!r} are the same name on this filesystem (it ignores case);"
                        f" {len(clashes)} such clash(es): refusing to extract"
                    )
            for entry in self.listing.directories():
                os.mkdir(self.path_of(entry), 0o700)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> None:
        """Symlinks, then modes (files, then directories deepest first), then the rename."""
        for entry in self.listing.symlinks():
            os.symlink(entry.target, self.path_of(entry))
        for entry in self.listing.files():
            path = self.path_of(entry)
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
                raise DirectoryError(f"{entry.path!r} was not written as expected")
            os.chmod(path, entry.mode, follow_symlinks=False)
        for entry in reversed(self.listing.directories()):
            os.chmod(self.path_of(entry), entry.mode)
        os.chmod(self.tmp, self.listing.mode)
        self._refuse_existing()
        os.rename(self.tmp, self.target)
        _active_parts.discard(self.tmp)
        with contextlib.suppress(OSError):
            fd = os.open(self.target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abort(self) -> None:
        """Remove the temporary tree (whatever state it is in)."""
        remove_tree(self.tmp)
        _active_parts.discard(self.tmp)


# ----------------------------------------------------------------------------- node operations


@dataclass(frozen=True)
class DirectoryPutProgress:
    """A directory put: ``done``/``total`` bytes of its files stored, and files finished."""

    phase: str
    done: int
    total: int
    files_done: int
    files_total: int


@dataclass(frozen=True)
class DirectoryPutResult:
    """A stored directory: its ID (the listing's file ID) and what it holds.

    ``skipped`` lists ``(path, reason)`` of what was left out; ``not_dispersed`` is ``None`` if
    dispersal was not asked for or reached some peer for every file, else why not."""

    file_id: bytes
    name: str
    files: int
    directories: int
    symlinks: int
    size: int
    skipped: list[tuple[str, str]]
    not_dispersed: str | None


@dataclass(frozen=True)
class DirectoryGetResult:
    """A fetched directory: where it is, what it holds, and the bytes each peer sent."""

    file_id: bytes
    path: Path
    name: str
    files: int
    size: int
    seconds: float
    bytes_from_peers: dict[str, int]


def _release_new(node: Node, file_ids: set[bytes], pinned_before: set[bytes]) -> None:
    """A failed or cancelled directory put: unpin the files it stored that nothing else holds
    (not pinned before it, not pinned on their own since, not held for other nodes), so that
    gc frees them; no listing names them, and a new put of the directory stores them again."""
    for file_id in file_ids - pinned_before - node.tree_refs.own:
        info = node.file_info(file_id)
        if info is not None and info.pinned and info.pin_kind == "local":
            node.unpin(file_id)


async def put_directory(
    node: Node,
    path: Path,
    *,
    disperse: bool = True,
    name: str | None = None,
    progress: Callable[[DirectoryPutProgress], None] | None = None,
) -> DirectoryPutResult:
    """See :meth:`p2pstore.node.Node.put_directory`."""
    tree = await trio.to_thread.run_sync(scan_tree, Path(path), name)
    sizes = {f.rel: os.stat(f.path).st_size for f in tree.files}
    total = sum(sizes.values())
    stored: dict[str, int] = {}  # bytes stored so far, per file
    entries: list[Entry] = list(tree.others)
    failures: list[str] = []
    finished = 0
    limit = trio.Semaphore(FILE_CONCURRENCY)
    pace = RateLimiter(FILE_RATE, FILE_BURST)
    # What this put may release if it fails: files not pinned before it (see _release_new).
    pinned_before = {f.file_id for f in node.list_files() if f.pinned}

    async def store_one(scanned: ScannedFile) -> None:
        nonlocal finished

        def on_file(p: Any) -> None:
            if getattr(p, "phase", None) == "store":
                stored[scanned.rel] = min(int(p.done), sizes[scanned.rel])
                report()

        async with limit:
            if disperse:
                await pace.acquire(1)  # each dispersal looks its targets up in the DHT
            try:
                # Announced in the background unless dispersing: the dispersal's own look-ups
                # plus background announcements overran the DHT nodes' per-address limit
                # (measured: bench_tree --nodes 3 --disperse, most files not dispersed).
                file_id = await node.put(
                    scanned.path, disperse=disperse, progress=on_file, announce=disperse
                )
            except NotDispersedError as exc:
                file_id = exc.file_id
                failures.append(f"{scanned.rel}: {exc}")
        info = node.file_info(file_id)
        size = info.size if info is not None else sizes[scanned.rel]
        entries.append(Entry(scanned.rel, EntryKind.FILE, scanned.mode, size, file_id))
        stored[scanned.rel] = sizes[scanned.rel]
        finished += 1
        report()

    with node.tracked_transfer("put", None, tree.name) as transfer:

        def report() -> None:
            done = sum(stored.values())
            transfer.bytes_done, transfer.bytes_total = done, total
            if progress is not None:
                progress(DirectoryPutProgress("files", done, total, finished, len(tree.files)))

        report()
        try:
            with collapse_exception_groups():
                async with trio.open_nursery() as nursery:
                    for scanned in tree.files:
                        nursery.start_soon(store_one, scanned)
            listing = DirectoryListing.build(tree.name, tree.mode, entries)
            listing_id = await _put_listing(node, listing, disperse, failures)
        except BaseException:
            _release_new(node, {e.file_id for e in entries if e.file_id}, pinned_before)
            raise
        node.tree_refs.add_trees([listing_id])
        await _announce_unacknowledged(node, [listing_id])
        transfer.file_id = listing_id
    not_dispersed = None
    if failures:
        not_dispersed = (
            f"{len(failures)} of {len(tree.files) + 1} file(s) not dispersed: " + (failures[0])
        )
    return DirectoryPutResult(
        file_id=listing_id,
        name=listing.name,
        files=len(listing.files()),
        directories=len(listing.directories()),
        symlinks=len(listing.symlinks()),
        size=listing.total_size,
        skipped=tree.skipped,
        not_dispersed=not_dispersed,
    )


async def _announce_unacknowledged(node: Node, file_ids: list[bytes]) -> None:
    """Announce again, one at a time and with backoff, the files whose provider record no DHT
    node acknowledged: a tree's puts announce many files in a burst, and the nodes closest to
    them may drop some of the requests (their per-address rate limit), which would leave those
    files unfindable (the node's own re-announcement waits for its routing table to grow)."""
    if node.dht.routing_table_size() == 0:
        return  # alone: nobody to acknowledge anything (a busy peer may drop out of the
        # table for a moment under this very burst, hence the check only before the first round)
    for delay in (0.0, *LOOKUP_RETRY_DELAYS):
        pending = [
            fid
            for fid in dict.fromkeys(file_ids)
            if (ann := node._announcements.get(fid)) is None or ann.acked == 0
        ]
        if not pending:
            return
        log.info("%d provider record(s) not acknowledged; announcing again", len(pending))
        await trio.sleep(delay)
        for fid in pending:
            await node._announce_quietly(fid)
            await trio.sleep(ANNOUNCE_PACE)  # stay under the DHT nodes' rate limits


async def _put_listing(
    node: Node, listing: DirectoryListing, disperse: bool, failures: list[str]
) -> bytes:
    """Store the listing as an ordinary file (named as the directory) and return its ID."""
    fd, tmp_name = tempfile.mkstemp(prefix=".listing-", suffix=".part", dir=node.data_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(listing.encode())
        try:
            return await node.put(tmp, disperse=disperse, name=listing.name)
        except NotDispersedError as exc:
            failures.append(f"the listing: {exc}")
            return exc.file_id
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


async def fetch_listing(
    node: Node,
    dir_id: bytes,
    *,
    peer_hint: tuple[str, int] | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    label: str | None = None,
    providers: TreeProviders | None = None,
) -> DirectoryListing:
    """See :meth:`p2pstore.node.Node.fetch_listing`; ``providers``, if given, records who
    served the listing (for the tree's files, :func:`get_directory`)."""
    if len(dir_id) != 32:
        raise ConfigError("a file ID is 32 bytes (64 hex digits)")

    def bounded_sink(manifest: Manifest, dest: Path) -> OutputFile:
        if manifest.size > MAX_LISTING_BYTES:
            raise NotADirectoryListingError(
                f"{dir_id.hex()} is a file ({manifest.name!r}), not a directory"
            )
        return OutputFile(manifest, dest)

    directory = Path(tempfile.mkdtemp(prefix=".listing-", dir=node.data_dir))
    try:
        dest = directory / "listing"
        # As an ordinary get (tracked, cancellable, rate-limited, a partial provider while it
        # runs): for a file that is no listing, its chunks are then already in the store.
        fetched = await node.get(
            dir_id,
            dest,
            progress=progress,
            peer_hint=peer_hint,
            sink=bounded_sink,
            label=dir_id.hex()[:16] + "…" if label is None else label,
            find_providers=None if providers is None else providers.for_listing,
        )
        data = await trio.to_thread.run_sync(dest.read_bytes)
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, directory, True)
    try:
        listing = DirectoryListing.decode(data)
    except DirectoryError as exc:
        if str(exc) == "not a directory listing":
            raise NotADirectoryListingError(
                f"{dir_id.hex()} is a file, not a directory", fetched
            ) from None
        raise DirectoryError(f"the directory manifest {dir_id.hex()} is refused: {exc}") from None
    node.tree_refs.add_trees([dir_id])
    return listing


class TreeProviders:
    """The provider look-up for the files of one directory being fetched: the directory's own
    providers (those the look-up of its listing found, the share link's peer hint among them
    once it has shown it knows the listing) are what the first two look-ups of each file
    return, the quick and the full one a download starts with, without asking the DHT. Only a
    file they cannot serve (its manifest race fails, a stripe stays unreachable) makes later
    look-ups ask the DHT (paced at :data:`FILE_RATE`), merged with them.

    Whoever put the tree, and everyone who fetched it, holds its files and announces its
    listing, so a tree of N files costs one DHT look-up instead of N (the DHT's per-address
    rate limit made a burst of those fail)."""

    def __init__(self, node: Node, dir_id: bytes, peer_hint: tuple[str, int] | None) -> None:
        self._dht = node._find_file_providers
        self._dir_id = dir_id
        self._listing_finder = node._file_providers_finder(dir_id, peer_hint)
        self.providers: dict[bytes, Provider] = {}
        self._calls: dict[bytes, int] = {}
        self._pace = RateLimiter(FILE_RATE, FILE_BURST)
        self.dht_lookups = 0
        """Look-ups of files of the tree that went to the DHT (for tests and measurements)."""

    async def for_listing(self, key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        """The listing's look-up (with the peer hint); remembers every provider it names."""
        found = await self._listing_finder(key, quick=quick)
        if key == self._dir_id:
            for p in found:
                self.providers.setdefault(p.node_id, p)
        return found

    async def look_up_listing(self) -> None:
        """Find the listing's providers (when the listing came without a look-up)."""
        try:
            await self.for_listing(self._dir_id)
        except P2PStoreError as exc:
            log.info("look-up of the providers of %s failed: %s", self._dir_id.hex()[:16], exc)

    async def __call__(self, key: bytes, *, quick: bool = False) -> Sequence[Provider]:
        calls = self._calls[key] = self._calls.get(key, 0) + 1
        known = list(self.providers.values())
        if known and calls <= 2:
            return known
        await self._pace.acquire(1)
        self.dht_lookups += 1
        found = await self._dht(key, quick=quick)
        return [*known, *(p for p in found if p.node_id not in self.providers)]


async def _get_file(
    node: Node,
    entry: Entry,
    dest: Path,
    progress: Callable[[DownloadProgress], None],
    providers: TreeProviders,
) -> GetResult:
    """``node.get`` of one file of a tree, looked up again a few times (with backoff) while no
    provider or manifest is found: a tree's gets make many DHT look-ups in a burst, which the
    per-address rate limit of the nodes asked may drop for a moment (50 requests/s by default)."""
    for delay in (*LOOKUP_RETRY_DELAYS, None):
        try:
            return await node.get(entry.file_id, dest, progress=progress, find_providers=providers)
        except FileUnavailableError as exc:
            if exc.missing or delay is None:  # shares are missing: looking again will not help
                raise
            log.info("get %s: %s; looking it up again in %.1f s", entry.path, exc, delay)
            await trio.sleep(delay)
    raise AssertionError("unreachable")


async def get_directory(
    node: Node,
    dir_id: bytes,
    dest: Path,
    *,
    listing: DirectoryListing | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    peer_hint: tuple[str, int] | None = None,
    providers: TreeProviders | None = None,
) -> DirectoryGetResult:
    """See :meth:`p2pstore.node.Node.get_directory`; ``providers``: those the listing's
    download found (else looked up here)."""
    from .node import DownloadProgress

    started = trio.current_time()
    if providers is None:
        providers = TreeProviders(node, dir_id, peer_hint)
    if listing is None:
        listing = await fetch_listing(node, dir_id, peer_hint=peer_hint, providers=providers)
    if not providers.providers and listing.files():
        await providers.look_up_listing()  # fetched before, or from the local store
    writer = TreeWriter(listing, Path(dest))
    await trio.to_thread.run_sync(writer.prepare)
    done: dict[str, int] = {}
    peers: dict[str, Any] = {}
    from_peers: dict[str, int] = {}
    limit = trio.Semaphore(FILE_CONCURRENCY)

    def report() -> None:
        if progress is not None:
            progress(DownloadProgress(sum(done.values()), listing.total_size, dict(peers)))

    async def fetch_one(entry: Entry) -> None:
        def on_file(p: DownloadProgress) -> None:
            done[entry.path] = p.bytes_done
            peers.update(p.peers)
            report()

        async with limit:
            result = await _get_file(node, entry, writer.path_of(entry), on_file, providers)
        if result.size != entry.size:
            raise DirectoryError(
                f"{entry.path!r}: the listing says {entry.size} bytes, its file has {result.size}"
            )
        done[entry.path] = entry.size
        for label, n in result.bytes_from_peers.items():
            from_peers[label] = from_peers.get(label, 0) + n
        report()

    try:
        with node.tracked_transfer("get", dir_id, listing.name), collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for entry in listing.files():
                    nursery.start_soon(fetch_one, entry)
            await trio.to_thread.run_sync(writer.finish)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(writer.abort)
        raise
    return DirectoryGetResult(
        file_id=dir_id,
        path=writer.target,
        name=listing.name,
        files=len(listing.files()),
        size=listing.total_size,
        seconds=trio.current_time() - started,
        bytes_from_peers=from_peers,
    )


# ----------------------------------------------------------------------------- local trees

#: Decoded listings of local trees kept in memory (they are immutable: content-addressed).
_LISTING_CACHE_SIZE = 16
#: Files of a tree checked (or repaired) at once by :func:`check_tree`.
CHECK_CONCURRENCY = 4


async def local_listing(node: Node, dir_id: bytes) -> DirectoryListing | None:
    """The listing ``dir_id`` read from the local store, or ``None`` if the local chunks cannot
    rebuild it or it is not a listing (its first chunk, when stored here, is read to tell).

    A node that fetched the listing holds only the shares it needed (``k`` of each stripe, not
    all ``k + m``), so "readable" is what counts, not "every chunk present"."""
    cache = node.tree_listings
    if dir_id in cache:
        return cache[dir_id]
    info = node.file_info(dir_id)
    if info is None or info.size > MAX_LISTING_BYTES or info.chunks_present == 0:
        return None
    try:
        manifest = await node.store.load_manifest(dir_id)
        if manifest.size == 0:
            return None
        first = manifest.stripes[0][0]
        if node.store.has_chunk(first) and not is_listing(await node.store.get_chunk(first)):
            return None
        directory = Path(await trio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix=".listing-", dir=node.data_dir)
        ))  # fmt: skip
        try:
            await node.store.reassemble(manifest, directory / "listing")
            data = await trio.to_thread.run_sync((directory / "listing").read_bytes)
        finally:
            await trio.to_thread.run_sync(shutil.rmtree, directory, True)
        if not is_listing(data):
            return None
        listing = DirectoryListing.decode(data)
    except (P2PStoreError, OSError) as exc:
        log.info("%s is not a readable local listing: %s", dir_id.hex()[:16], exc)
        return None
    while len(cache) >= _LISTING_CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[dir_id] = listing
    return listing


async def scan_local_trees(node: Node) -> None:
    """Once per data directory (one that predates :mod:`p2pstore.treerefs`): record every local
    file that is a directory listing. Later trees are recorded as they are put or fetched."""
    refs = node.tree_refs
    if refs.scanned:
        return
    found = [
        info.file_id
        for info in node.list_files()
        if info.size <= MAX_LISTING_BYTES and await local_listing(node, info.file_id) is not None
    ]
    refs.add_trees(found)
    refs.mark_scanned()


async def local_trees(node: Node) -> set[bytes]:
    """IDs of the directory listings stored here (complete or not), for ``ls`` to mark."""
    await scan_local_trees(node)
    gone = {t for t in node.tree_refs.trees if not node.store.knows_file(t)}
    node.tree_refs.forget_trees(gone)
    return set(node.tree_refs.trees)


@dataclass(frozen=True)
class TreeAction:
    """What ``pin``/``unpin`` of a directory did.

    ``files``/``size``: the distinct files of the tree and their bytes. ``changed``/
    ``changed_bytes``: files pinned (pin) or released (unpin) now. ``kept``/``kept_bytes``
    (unpin): files left pinned because something else holds them (another pinned tree lists
    them, they were pinned on their own, or they are held for other nodes). ``missing``/
    ``missing_bytes`` (pin): files of the tree not stored here (get the directory to fetch
    them)."""

    file_id: bytes
    name: str
    pinned: bool
    files: int
    size: int
    changed: int
    changed_bytes: int
    kept: int = 0
    kept_bytes: int = 0
    missing: int = 0
    missing_bytes: int = 0


def _distinct_files(listing: DirectoryListing) -> dict[bytes, int]:
    """``file ID -> size`` of the tree's files (two entries may share one file ID)."""
    return {e.file_id: e.size for e in listing.files()}


async def tree_listing(node: Node, dir_id: bytes) -> DirectoryListing | None:
    """The listing of ``dir_id`` if it is a directory stored here, else ``None``."""
    await scan_local_trees(node)
    listing = await local_listing(node, dir_id)
    if listing is not None:
        node.tree_refs.add_trees([dir_id])
    return listing


async def pin_tree(node: Node, dir_id: bytes, listing: DirectoryListing) -> TreeAction:
    """Pin the directory's listing and every file of its tree stored here."""
    files = _distinct_files(listing)
    changed = changed_bytes = missing = missing_bytes = 0
    with tree_operation():
        node.pin(dir_id)
        for fid, size in files.items():
            info = node.file_info(fid)
            if info is None:
                missing, missing_bytes = missing + 1, missing_bytes + size
                continue
            if not info.pinned:
                changed, changed_bytes = changed + 1, changed_bytes + size
            node.pin(fid)
    return TreeAction(
        dir_id, listing.name, True, len(files), sum(files.values()), changed, changed_bytes,
        missing=missing, missing_bytes=missing_bytes,
    )  # fmt: skip


async def unpin_tree(node: Node, dir_id: bytes, listing: DirectoryListing) -> TreeAction:
    """Unpin the directory's listing and every file of its tree that nothing else holds (see
    :mod:`p2pstore.treerefs`): files another pinned tree lists, files pinned on their own and
    files held for other nodes stay pinned."""
    files = _distinct_files(listing)
    held_elsewhere: set[bytes] = set(node.tree_refs.own)
    for other in sorted(await local_trees(node)):
        if other == dir_id:
            continue
        info = node.file_info(other)
        if info is None or not info.pinned:
            continue
        other_listing = await local_listing(node, other)
        if other_listing is not None:
            held_elsewhere.update(e.file_id for e in other_listing.files())
    changed = changed_bytes = kept = kept_bytes = 0
    with tree_operation():
        node.unpin(dir_id)
        for fid, size in files.items():
            info = node.file_info(fid)
            if info is None or not info.pinned:
                continue
            if fid in held_elsewhere or info.pin_kind != "local":
                kept, kept_bytes = kept + 1, kept_bytes + size
                continue
            node.unpin(fid)
            changed, changed_bytes = changed + 1, changed_bytes + size
    return TreeAction(
        dir_id, listing.name, False, len(files), sum(files.values()), changed, changed_bytes,
        kept=kept, kept_bytes=kept_bytes,
    )  # fmt: skip


@dataclass(frozen=True)
class TreeHealth:
    """``check`` of a directory: the worst verdict of its listing and its files, and which.

    ``by_verdict`` maps each verdict (``healthy``, ``degraded``, ``lost``) to the paths in that
    state (``""`` is the listing itself); ``repaired``: paths whose repair rebuilt shares."""

    file_id: bytes
    name: str
    verdict: str
    files: int
    by_verdict: dict[str, list[str]]
    repaired: list[str]
    errors: dict[str, str]


async def check_tree(
    node: Node,
    dir_id: bytes,
    listing: DirectoryListing,
    *,
    repair: bool = False,
) -> TreeHealth:
    """Check (and with ``repair``, repair) the listing and every distinct file of the tree, a
    few at once. A file no reachable node has a manifest of counts as lost."""
    paths: dict[bytes, str] = {dir_id: ""}
    for entry in listing.files():
        paths.setdefault(entry.file_id, entry.path)
    by_verdict: dict[str, list[str]] = {"healthy": [], "degraded": [], "lost": []}
    repaired: list[str] = []
    errors: dict[str, str] = {}
    limit = trio.Semaphore(CHECK_CONCURRENCY)

    async def one(fid: bytes, path: str) -> None:
        async with limit:
            try:
                if repair:
                    report = await node.repair(fid)
                    verdict = report.after.verdict.value
                    if report.rebuilt or report.copied:
                        repaired.append(path)
                else:
                    verdict = (await node.check(fid)).verdict.value
            except FileUnavailableError as exc:
                verdict, errors[path] = "lost", str(exc)
        by_verdict[verdict].append(path)

    with tree_operation():
        async with trio.open_nursery() as nursery:
            for fid, path in paths.items():
                nursery.start_soon(one, fid, path)
    for names in by_verdict.values():
        names.sort()
    worst = next(v for v in ("lost", "degraded", "healthy") if by_verdict[v] or v == "healthy")
    return TreeHealth(
        dir_id, listing.name, worst, len(paths) - 1, by_verdict, sorted(repaired), errors
    )


# ----------------------------------------------------------------------------- get of any ID


async def get_file_or_directory(
    node: Node,
    file_id: bytes,
    target_for: Callable[[str], Path],
    *,
    peer_hint: tuple[str, int] | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    label: str | None = None,
) -> GetResult | DirectoryGetResult:
    """``get`` of an ID that may name a file or a directory, downloading it once.

    ``target_for(name)`` is where something named ``name`` goes (the file, or the tree's root);
    it is asked with the manifest's name as soon as the manifest is in, and an existing target
    is refused (``FileExistsError``) before any chunk is fetched. The content is downloaded
    (verified, as by :meth:`Node.get`) to a hidden file in the target's directory; a small one
    that turns out to be a directory listing is then extracted as :func:`get_directory` does
    (into ``target_for(listing.name)``) and removed, anything else is renamed to the target.
    Returns the file's :class:`~p2pstore.node.GetResult` (``path``: the target) or the
    directory's :class:`DirectoryGetResult`."""
    part = private_part(target_for(file_id.hex()).parent, file_id)
    targets: list[Path] = []

    def sink(manifest: Manifest, dest: Path) -> OutputFile:
        target = target_for(manifest.name)
        _refuse_existing(target)  # before a single chunk is fetched
        targets.append(target)
        return OutputFile(manifest, dest)

    providers = TreeProviders(node, file_id, peer_hint)
    try:
        fetched = await node.get(
            file_id,
            part,
            progress=progress,
            sink=sink,
            label=label,
            find_providers=providers.for_listing,
        )
        listing = None
        if fetched.size <= MAX_LISTING_BYTES:
            listing = await trio.to_thread.run_sync(_read_listing_file, part, file_id)
        if listing is None:
            target = targets[-1]
            await trio.to_thread.run_sync(_rename_new, part, target)
            return replace(fetched, path=target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await trio.to_thread.run_sync(part.unlink)
    node.tree_refs.drop_own(file_id)  # the get above took it for a file of the user's
    node.tree_refs.add_trees([file_id])
    with tree_operation():
        return await get_directory(
            node,
            file_id,
            target_for(listing.name),
            listing=listing,
            progress=progress,
            peer_hint=peer_hint,
            providers=providers,
        )


def private_part(directory: Path, file_id: bytes) -> Path:
    """A hidden file name in ``directory`` for a get of ``file_id`` whose final name is not
    known yet, unique to this get: gets of one ID into one directory at once must not share it
    (each download's output is renamed onto it when complete, then moved to its final name)."""
    return directory / f".{file_id.hex()[:16]}.{secrets.token_hex(6)}.p2pstore-part"


def _refuse_existing(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise FileExistsError(17, "File exists (choose another path with -o)", os.fspath(path))


def _read_listing_file(path: Path, file_id: bytes) -> DirectoryListing | None:
    """The listing in the file at ``path``, ``None`` if it is no listing; DirectoryError if it
    starts as one but is refused (blocking)."""
    with open(path, "rb") as f:
        if not is_listing(f.read(len(DIRECTORY_HEADER))):
            return None
        f.seek(0)
        data = f.read(MAX_LISTING_BYTES + 1)
    try:
        return DirectoryListing.decode(data)
    except DirectoryError as exc:
        raise DirectoryError(f"the directory manifest {file_id.hex()} is refused: {exc}") from None


def _rename_new(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, never over an existing one (blocking)."""
    _refuse_existing(target)
    os.rename(source, target)
