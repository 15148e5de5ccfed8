"""Which local files are directories, and which files were pinned on their own (the references
that decide what ``rm`` / ``unpin`` of a directory may release).

A directory is an ordinary file (its listing, :mod:`p2pstore.directory`) whose files are ordinary
files too, each pinned in the store. The store's pin is one flag per file, so it cannot say *why*
a file is pinned; this record can. Reference semantics:

* a **pinned tree** (a directory whose listing is pinned here) holds every file it lists;
* a file **pinned on its own** (``put FILE``, ``get FILE``, ``pin FILE`` outside any directory
  operation) holds itself, until ``unpin FILE``;
* ``unpin DIR`` (and so ``rm DIR``) unpins the listing and every file of the tree that nothing
  else holds: no other pinned tree lists it and it was not pinned on its own. ``pin DIR`` pins
  the listing and every file of the tree stored here.

What is recorded (``trees.log`` in the data directory, see :class:`TreeRefs`): the IDs of the
listings known here (put, fetched, or listed with ``ls ID``) and the IDs of the files pinned on
their own. Which files a tree lists is read from its listing, which is in the local store. A
data directory from before this record existed is scanned once for listings (a small file whose
first bytes are a listing's); its files pinned then count as pinned by the trees that list them
(the old put of a tree pinned them one by one), others are not touched by any tree operation.

Directory operations run inside :func:`tree_operation`, so the ``put``/``get``/``pin``/``unpin``
calls they make for the tree's files are not taken for the user's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "trees.log"
_VERSION = 1
_IN_TREE_OPERATION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "p2pstore_in_tree_operation", default=False
)


@contextlib.contextmanager
def tree_operation() -> Iterator[None]:
    """Mark the block (and the tasks it starts) as a directory operation: the file puts, gets,
    pins and unpins it makes are the tree's, not the user's own."""
    token = _IN_TREE_OPERATION.set(True)
    try:
        yield
    finally:
        _IN_TREE_OPERATION.reset(token)


def in_tree_operation() -> bool:
    """Whether the caller runs inside :func:`tree_operation`."""
    return _IN_TREE_OPERATION.get()


class TreeRefs:
    """The record described in the module docstring, for one data directory.

    ``trees``: IDs of the directory listings known here; ``own``: IDs of files pinned on their
    own. ``scanned`` is False for a data directory that predates the record until
    :func:`p2pstore.directories.scan_local_trees` has run.

    Stored as a journal (``trees.log``: one ``+tree ID``, ``-tree ID``, ``+own ID``,
    ``-own ID`` or ``scanned`` per line), so that noting a put costs one short append whatever
    the number of files; it is rewritten compactly (atomically) when it opens with more dead
    lines than live ones. A line that cannot be read (a torn last write) is skipped.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.trees: set[bytes] = set()
        self.own: set[bytes] = set()
        self.scanned = False
        lines = 0
        try:
            with open(self.path, encoding="utf-8", errors="replace") as journal:
                for line in journal:
                    lines += 1
                    self._replay(line.strip())
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s unreadable (%s): scanning the store for directories", self.path, exc)
        if lines > 2 * (len(self.trees) + len(self.own) + 1) + 64:
            self._compact()

    def _replay(self, line: str) -> None:
        if line == "scanned":
            self.scanned = True
            return
        op, _, hex_id = line.partition(" ")
        try:
            key = bytes.fromhex(hex_id)
        except ValueError:
            return
        if len(key) != 32:
            return
        target = {"+tree": self.trees, "-tree": self.trees, "+own": self.own, "-own": self.own}
        if op in target:
            (target[op].add if op[0] == "+" else target[op].discard)(key)

    def _append(self, lines: Iterable[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write("".join(f"{line}\n" for line in lines))

    def _compact(self) -> None:
        lines = [f"+tree {x.hex()}" for x in sorted(self.trees)]
        lines += [f"+own {x.hex()}" for x in sorted(self.own)]
        lines += ["scanned"] if self.scanned else []
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("".join(f"{line}\n" for line in lines))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not rewrite %s: %s", self.path, exc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def note_own(self, file_id: bytes) -> None:
        """A file pinned by the user (not by a directory operation: then nothing is noted)."""
        if not in_tree_operation() and file_id not in self.own:
            self.own.add(file_id)
            self._append([f"+own {file_id.hex()}"])

    def drop_own(self, file_id: bytes) -> None:
        """The user unpinned the file (outside a directory operation)."""
        if not in_tree_operation() and file_id in self.own:
            self.own.discard(file_id)
            self._append([f"-own {file_id.hex()}"])

    def add_trees(self, dir_ids: Iterable[bytes]) -> None:
        """Listings now stored here (a put, a fetch, a scan)."""
        new = sorted(set(dir_ids) - self.trees)
        if new:
            self.trees.update(new)
            self._append(f"+tree {x.hex()}" for x in new)

    def forget_trees(self, dir_ids: Iterable[bytes]) -> None:
        """Listings no longer stored here (gc freed them)."""
        gone = sorted(set(dir_ids) & self.trees)
        if gone:
            self.trees.difference_update(gone)
            self._append(f"-tree {x.hex()}" for x in gone)

    def mark_scanned(self) -> None:
        """The store was scanned for listings (:func:`p2pstore.directories.scan_local_trees`)."""
        if not self.scanned:
            self.scanned = True
            self._append(["scanned"])
