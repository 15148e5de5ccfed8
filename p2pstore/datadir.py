"""What a node demands of its data directory before trusting anything in it.

The data directory holds the node's private key, its index (file names and file IDs, and a file
ID is the capability to download the file) and chunk files the node reads, writes, renames and
deletes. So whoever can write to it can give the node another identity, make it delete or
overwrite files elsewhere through a planted symbolic link, or read what it stores. Before using
one, a node checks (:func:`check_data_dir`):

* the directory (the path as given; it may itself be a link the user chose) is a directory owned
  by the effective user and not writable by other users;
* no entry directly inside it, nor in ``chunks/`` (the shard directories), is a symbolic link,
  owned by another user or writable by other users; ``tmp/``, ``quarantine/`` and ``chunks/``
  are checked the same way;
* every directory above it (of the real path, and of the link's location if the path is a
  link) is owned by the user or by root and not writable by other users unless its sticky bit
  is set (as ``/tmp`` is: then others cannot rename or remove what is not theirs). Otherwise
  another user could rename the data directory away and put one of their own in its place, as
  OpenSSH's ``StrictModes`` reasons about the directories above ``~/.ssh``.

"Writable by other users" is the group or world write bit, except that the group bit is allowed
when the group is the user's own private group (as OpenSSH's ``StrictModes`` does). Anything
else raises :class:`UnsafeDataDirError`, a :class:`ConfigError` (the daemon exits 2).

Chunk files are not listed one by one (a store holds millions): once every directory is the
user's and closed to others, only that user (or root) can create entries in them, and the store
opens every file with ``O_NOFOLLOW`` anyway. Directories this library creates are mode 0700
(:func:`make_private_dirs`), parents included.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "PRIVATE_DIR_MODE",
    "UnsafeDataDirError",
    "check_data_dir",
    "make_private_dirs",
    "prepare_data_dir",
]

#: Mode of every directory the library creates.
PRIVATE_DIR_MODE = 0o700
#: Subdirectories whose own entries are checked too (the others hold only files).
_CHECKED_SUBDIRS = ("chunks",)


class UnsafeDataDirError(ConfigError):
    """The data directory, or something in it, could be controlled by another local user."""


def _euid() -> int:
    # One indirection, so tests can pretend to be somebody else without being root.
    return os.geteuid()


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0700 (an existing one is untouched)."""
    missing: list[Path] = []
    current = Path(path)
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        # mkdir's mode passes through the umask; 0700 is what is promised, whatever it is.
        os.chmod(directory, PRIVATE_DIR_MODE)


def _private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is ``uid``'s primary group and has no other members."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return user.pw_gid == gid and set(group.gr_mem) <= {user.pw_name}


def _problem(st: os.stat_result, uid: int) -> str | None:
    """Why an entry with status ``st`` cannot be trusted, or ``None``."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (p2pstore never follows links inside its data directory)"
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(st.st_gid, uid)):
        return f"is writable by other users (mode {mode:04o})"
    return None


def _parent_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a directory above the data directory cannot be trusted, or ``None``."""
    if st.st_uid not in (uid, 0):
        return f"is owned by uid {st.st_uid}, neither this user (uid {uid}) nor root"
    mode = stat.S_IMODE(st.st_mode)
    others_write = mode & stat.S_IWOTH or (
        mode & stat.S_IWGRP and not _private_group(st.st_gid, uid)
    )
    if others_write and not mode & stat.S_ISVTX:
        return (
            f"is writable by other users without the sticky bit (mode {mode:04o}): they could"
            " swap the data directory for their own"
        )
    return None


def _ancestors(path: Path) -> list[Path]:
    """The directories above ``path``'s real location (and above the link, if it is one)."""
    seen: dict[Path, None] = {}
    starts = [Path(os.path.realpath(path)).parent]
    if os.path.islink(path):
        starts.append(Path(os.path.realpath(Path(path).absolute().parent)))
    for start in starts:
        for parent in (start, *start.parents):
            seen.setdefault(parent, None)
    return list(seen)


def _check_parents(path: Path, uid: int) -> None:
    for parent in _ancestors(path):
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue  # to be created, 0700
        why = _parent_problem(st, uid)
        if why is not None:
            raise UnsafeDataDirError(
                f"refusing data directory: {path}: the directory above it, {parent}, {why}"
            )


def _refuse(path: Path, why: str) -> UnsafeDataDirError:
    return UnsafeDataDirError(f"refusing data directory: {path} {why}")


def _check_entries(directory: Path, uid: int, *, recurse: bool) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            why = _problem(st, uid)
            if why is not None:
                raise _refuse(Path(entry.path), why)
            if recurse and entry.name in _CHECKED_SUBDIRS and stat.S_ISDIR(st.st_mode):
                _check_entries(Path(entry.path), uid, recurse=False)


def check_data_dir(path: Path) -> None:
    """Raise :class:`UnsafeDataDirError` unless ``path`` is safe to use (see the module doc).

    A directory that does not exist yet passes if the directories above it that exist do (it
    will be created private). ``OSError`` from listing it is turned into a
    :class:`ConfigError`.
    """
    path = Path(path)
    uid = _euid()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            _check_parents(path, uid)
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {path}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cannot use data directory {path}: not a directory")
    why = _problem(st, uid)
    if why is not None:
        raise _refuse(path, why)
    try:
        _check_entries(path, uid, recurse=True)
        _check_parents(path, uid)
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror or exc}") from None


def prepare_data_dir(path: Path) -> None:
    """Create ``path`` (0700, parents too) if it does not exist, then :func:`check_data_dir`.

    An existing directory is never modified: one that fails the check is refused as it is, and
    nothing is created under a parent that fails it.
    """
    check_data_dir(path)
    try:
        make_private_dirs(path)
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror or exc}") from None
    check_data_dir(path)
