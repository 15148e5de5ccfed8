"""The SQLite index of a chunk store (private to :mod:`p2pstore.store`).

Tables: ``chunks`` (every chunk file that is durable on disk), ``files`` (known manifests),
``file_chunks`` (which chunks belong to which file; ``share`` = 1 for data/parity chunks, 0 for
manifest chunks and chunks held before their manifest is known), ``pins`` (files whose chunks
garbage collection keeps), ``downloads`` (destinations of downloads that have not ended: a
crash may have left a temporary file beside them), ``spares`` (manifest chunks that also have a
second copy under ``manifests/``) and ``damaged`` (chunks found corrupt or missing and not
stored again since: damage stays on record until it is repaired). The last three were added
without a schema version change: older code ignores them, and this code creates them in an older
index. One connection in WAL mode is shared by the Trio thread and worker threads under a lock;
every method is one short transaction.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _full_disk_as_oserror(
    method: Callable[Concatenate[Index, _P], _R],
) -> Callable[Concatenate[Index, _P], _R]:
    """A write of the index on a full disk raises ``OSError(ENOSPC)`` naming the index file,
    as every other write of the store does, instead of SQLite's own "database or disk is full"
    (which the layers above would treat as an internal error)."""

    @functools.wraps(method)
    def wrapper(self: Index, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path)) from exc

    return wrapper


#: Schema version in ``PRAGMA user_version``; a newer one is refused rather than misread.
SCHEMA_VERSION = 1
#: Parameters per ``IN (...)`` query; SQLite's default limit is 32766, stay far below.
_IN_BATCH = 500
#: How long a statement waits for a lock held by another connection (another tool reading).
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    file_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    k INTEGER NOT NULL,
    m INTEGER NOT NULL,
    chunk_total INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS file_chunks (
    file_id BLOB NOT NULL,
    chunk_id BLOB NOT NULL,
    share INTEGER NOT NULL,
    PRIMARY KEY (file_id, chunk_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS file_chunks_by_chunk ON file_chunks (chunk_id);
CREATE TABLE IF NOT EXISTS pins (
    file_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spares (
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS downloads (
    dest TEXT PRIMARY KEY,
    started REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS damaged (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    since REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class FileRow:
    """One row of ``files`` joined with its pin and the count of its share chunks present."""

    file_id: bytes
    name: str
    size: int
    chunk_size: int
    k: int
    m: int
    created: float
    pin_kind: str | None
    chunks_present: int
    chunks_total: int


def _batches(items: Sequence[bytes]) -> Iterable[Sequence[bytes]]:
    for i in range(0, len(items), _IN_BATCH):
        yield items[i : i + _IN_BATCH]


class Index:
    """Thread-safe access to the store's SQLite index. Also tracks the total bytes indexed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The index file (named in errors)."""
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"index schema {version} is newer than this program")
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: WAL commits survive a process crash; commit_durable() forces a sync where a
            # power loss must not lose the commit (a file becoming listed).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM chunks").fetchone()
            self._total = int(row[0])
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all indexed chunks."""
        return self._total

    # -- chunks --------------------------------------------------------------------------------

    def present(self, ids: Sequence[bytes]) -> set[bytes]:
        """The subset of ``ids`` that is indexed."""
        found: set[bytes] = set()
        with self._lock:
            for batch in _batches(ids):
                q = f"SELECT id FROM chunks WHERE id IN ({','.join('?' * len(batch))})"
                found.update(r[0] for r in self._db.execute(q, list(batch)))
        return found

    def chunk_size(self, chunk_id: bytes) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT size FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return None if row is None else int(row[0])

    @_full_disk_as_oserror
    def insert_chunks(self, rows: Sequence[tuple[bytes, int]]) -> set[bytes]:
        """Index chunks whose files are durable; returns the IDs that were not indexed before.

        A chunk on record as damaged is repaired by this: its ``damaged`` row goes."""
        now = time.time()
        new: set[bytes] = set()
        added = 0
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for cid, size in rows:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO chunks (id, size, stored_at) VALUES (?, ?, ?)",
                        (cid, size, now),
                    )
                    if cur.rowcount == 1:
                        new.add(cid)
                        added += size
                        self._db.execute("DELETE FROM damaged WHERE id = ?", (cid,))
            self._total += added
        return new

    # -- spare copies of manifest chunks, and damage on record ----------------------------------

    @_full_disk_as_oserror
    def add_spares(self, rows: Sequence[tuple[bytes, int]]) -> None:
        """Record that these chunks have a durable second copy."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO spares (id, size) VALUES (?, ?)", rows)

    def spare_size(self, chunk_id: bytes) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT size FROM spares WHERE id = ?", (chunk_id,)).fetchone()
        return None if row is None else int(row[0])

    def spares(self) -> list[tuple[bytes, int]]:
        with self._lock:
            return [(r[0], int(r[1])) for r in self._db.execute("SELECT id, size FROM spares")]

    @_full_disk_as_oserror
    def delete_spares(self, ids: Sequence[bytes]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM spares WHERE id = ?", ((cid,) for cid in ids))

    @_full_disk_as_oserror
    def note_download(self, dest: str) -> None:
        """Record that a download into ``dest`` is starting (until :meth:`forget_download`)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO downloads (dest, started) VALUES (?, ?)",
                (dest, time.time()),
            )

    @_full_disk_as_oserror
    def forget_download(self, dest: str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM downloads WHERE dest = ?", (dest,))

    def downloads(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT dest FROM downloads")]

    @_full_disk_as_oserror
    def mark_damaged(self, ids: Sequence[bytes], kind: str) -> None:
        """Put chunks on record as damaged (``"corrupt"`` or ``"missing"``) until re-stored."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO damaged (id, kind, since) VALUES (?, ?, ?)",
                ((cid, kind, now) for cid in ids),
            )

    def damaged(self) -> dict[bytes, str]:
        """Damaged chunks not stored again since, with their kind."""
        with self._lock:
            return {r[0]: r[1] for r in self._db.execute("SELECT id, kind FROM damaged")}

    def damaged_by_file(self) -> dict[bytes, list[bytes]]:
        """file ID -> its chunks on record as damaged (only files with a manifest recorded)."""
        out: dict[bytes, list[bytes]] = {}
        with self._lock:
            for file_id, cid in self._db.execute(
                "SELECT fc.file_id, d.id FROM damaged d JOIN file_chunks fc ON fc.chunk_id = d.id"
                " JOIN files f ON f.file_id = fc.file_id ORDER BY fc.file_id, d.id"
            ):
                out.setdefault(file_id, []).append(cid)
        return out

    @_full_disk_as_oserror
    def forget_unneeded(self) -> list[bytes]:
        """Drop damage records and spare rows of chunks no pinned file needs (gc); returns the
        IDs of the spare rows dropped (their files are the caller's to delete)."""
        needed = (
            " NOT IN (SELECT fc.chunk_id FROM file_chunks fc JOIN pins p ON p.file_id = fc.file_id)"
        )
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM damaged WHERE id" + needed)
            gone = self._db.execute("DELETE FROM spares WHERE id" + needed + " RETURNING id")
            ids = [r[0] for r in gone]
        return ids

    @_full_disk_as_oserror
    def delete_chunks(self, ids: Sequence[bytes]) -> int:
        """Remove chunk rows; returns the bytes they accounted for."""
        freed = 0
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for cid in ids:
                    row = self._db.execute(
                        "DELETE FROM chunks WHERE id = ? RETURNING size", (cid,)
                    ).fetchone()
                    if row is not None:
                        freed += int(row[0])
            self._total -= freed
        return freed

    def all_chunk_ids(self) -> list[bytes]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM chunks ORDER BY id")]

    def unreferenced_chunks(self) -> list[tuple[bytes, int]]:
        """Chunks that belong to no pinned file: what garbage collection may delete."""
        with self._lock:
            return [
                (r[0], int(r[1]))
                for r in self._db.execute(
                    "SELECT id, size FROM chunks WHERE id NOT IN ("
                    " SELECT fc.chunk_id FROM file_chunks fc JOIN pins p"
                    " ON p.file_id = fc.file_id)"
                )
            ]

    # -- files and pins ------------------------------------------------------------------------

    @_full_disk_as_oserror
    def add_file(
        self,
        *,
        file_id: bytes,
        name: str,
        size: int,
        chunk_size: int,
        k: int,
        m: int,
        share_ids: Sequence[bytes],
        manifest_ids: Sequence[bytes],
        pin_kind: str | None,
    ) -> None:
        """Record a file (its chunk membership, then its row, then its pin) in one durable commit.

        Idempotent: re-adding updates nothing but may add a pin.
        """
        now = time.time()
        distinct_shares = set(share_ids)
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT INTO file_chunks (file_id, chunk_id, share) VALUES (?, ?, 1)"
                        " ON CONFLICT DO UPDATE SET share = 1",
                        ((file_id, cid) for cid in distinct_shares),
                    )
                    self._db.executemany(
                        "INSERT OR IGNORE INTO file_chunks (file_id, chunk_id, share)"
                        " VALUES (?, ?, 0)",
                        ((file_id, cid) for cid in manifest_ids),
                    )
                    self._db.execute(
                        "INSERT OR IGNORE INTO files (file_id, name, size, chunk_size, k, m,"
                        " chunk_total, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (file_id, name, size, chunk_size, k, m, len(distinct_shares), now),
                    )
                    if pin_kind is not None:
                        self._upsert_pin(file_id, pin_kind, now)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def _upsert_pin(self, file_id: bytes, kind: str, now: float) -> None:
        # A 'local' pin (the user's own file) outranks a 'held' one (kept for other nodes).
        self._db.execute(
            "INSERT INTO pins (file_id, kind, created) VALUES (?, ?, ?) ON CONFLICT DO UPDATE"
            " SET kind = CASE WHEN excluded.kind = 'local' THEN 'local' ELSE pins.kind END",
            (file_id, kind, now),
        )

    @_full_disk_as_oserror
    def hold_chunks(self, file_id: bytes, ids: Sequence[bytes]) -> None:
        """Record ``ids`` as held for ``file_id`` (manifest maybe unknown) and pin it as 'held'."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO file_chunks (file_id, chunk_id, share) VALUES (?, ?, 0)",
                ((file_id, cid) for cid in ids),
            )
            self._upsert_pin(file_id, "held", now)

    def is_known(self, file_id: bytes) -> bool:
        """True if the file has a row or any chunk recorded for it."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files WHERE file_id = ? UNION ALL"
                " SELECT 1 FROM file_chunks WHERE file_id = ? LIMIT 1",
                (file_id, file_id),
            ).fetchone()
        return row is not None

    def has_file(self, file_id: bytes) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return row is not None

    @_full_disk_as_oserror
    def pin(self, file_id: bytes, kind: str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._upsert_pin(file_id, kind, time.time())

    @_full_disk_as_oserror
    def unpin(self, file_id: bytes) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM pins WHERE file_id = ?", (file_id,))

    def partial_files(self) -> list[tuple[bytes, int, int]]:
        """Files with chunks held for them but no manifest recorded (an unfinished or failed
        download): ``(file_id, chunks, bytes)`` each."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.file_id, COUNT(c.id), COALESCE(SUM(c.size), 0) FROM pins p"
                " JOIN file_chunks fc ON fc.file_id = p.file_id JOIN chunks c ON c.id = fc.chunk_id"
                " WHERE p.file_id NOT IN (SELECT file_id FROM files)"
                " GROUP BY p.file_id ORDER BY MIN(p.created)"
            ).fetchall()
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    @_full_disk_as_oserror
    def forget_unpinned_files(self) -> None:
        """Drop the records of files nobody pins any more (gc): an unpinned file's chunks are
        about to be freed, so it must not linger in the listing as ``0/N`` chunks."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM files WHERE file_id NOT IN (SELECT file_id FROM pins)")

    @_full_disk_as_oserror
    def forget_unpinned_held(self) -> None:
        """Drop membership rows of files that are neither pinned nor described by a manifest."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM file_chunks WHERE file_id NOT IN (SELECT file_id FROM pins)"
                " AND file_id NOT IN (SELECT file_id FROM files)"
            )

    _FILES_QUERY = (
        "SELECT f.file_id, f.name, f.size, f.chunk_size, f.k, f.m, f.created, p.kind,"
        " (SELECT COUNT(*) FROM file_chunks fc JOIN chunks c ON c.id = fc.chunk_id"
        "  WHERE fc.file_id = f.file_id AND fc.share = 1),"
        " f.chunk_total"
        " FROM files f LEFT JOIN pins p ON p.file_id = f.file_id"
    )

    def file_row(self, file_id: bytes) -> FileRow | None:
        """:meth:`files` for one file, by its primary key: cost independent of the file count."""
        with self._lock:
            rows = self._db.execute(self._FILES_QUERY + " WHERE f.file_id = ?", (file_id,))
            found = rows.fetchall()
        return self._rows(found)[0] if found else None

    def files(self) -> list[FileRow]:
        with self._lock:
            rows = self._db.execute(self._FILES_QUERY + " ORDER BY f.created, f.name").fetchall()
        return self._rows(rows)

    @staticmethod
    def _rows(rows: Sequence[Any]) -> list[FileRow]:
        return [
            FileRow(
                r[0],
                r[1],
                int(r[2]),
                int(r[3]),
                int(r[4]),
                int(r[5]),
                float(r[6]),
                r[7],
                int(r[8]),
                int(r[9]),
            )
            for r in rows
        ]
