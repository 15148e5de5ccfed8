"""``p2pstore get`` and ``p2pstore cat``, shared by the full CLI (:mod:`p2pstore.cli`) and its
fast path (:mod:`p2pstore.fastcli`), so both behave and print alike.

Nothing here imports Typer; Rich only when a progress bar is shown (:mod:`p2pstore.clibar`).
Every failure is raised as :class:`~p2pstore.cliview.CommandFailed` (message, exit status and,
for a bad argument, a usage hint); the caller prints it.
"""

from __future__ import annotations

import contextlib
import json
import os
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import cliview
from .cliview import EXIT_USAGE, CommandFailed
from .config import format_size
from .errors import ConfigError

MIN_ID_PREFIX = 4
"""Shortest ID prefix ``get`` and ``rm`` resolve among local files."""


@dataclass(frozen=True)
class Invocation:
    """How the command was asked for: the ``--data-dir`` flag, ``--json``, ``-q``, and the
    command's name (for the usage hint of a bad argument)."""

    flag: Path | None
    json_out: bool = False
    quiet: bool = False
    command: str = "get"

    def bad(self, param: str, message: str) -> CommandFailed:
        """A bad value for ``param``: exit 2, with a pointer to the command's help."""
        return cliview.usage_failure(f"invalid value for {param}: {message}", self.command)

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        *,
        on_data: Callable[[bytes], None] | None = None,
    ) -> dict[str, Any]:
        return cliview.call_daemon(self.flag, op, args, on_progress, on_data=on_data)

    def show_progress(self) -> bool:
        """Whether to draw a bar: on a terminal, without ``--json`` or ``-q``."""
        return not self.json_out and not self.quiet and sys.stderr.isatty()


# ----------------------------------------------------------------------------- progress bars


class _NoBar:
    """What a bar does when none is shown: nothing (and Rich is never imported)."""

    bar = None

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def update(self, **fields: Any) -> None:
        return None

    def reset(self) -> None:
        return None

    def finish(self) -> None:
        return None


def progress_bar(
    enabled: bool, phase: str, *, peers: bool = False, files: bool = False, total: int | None = None
) -> Any:
    """A progress bar labelled ``phase`` from its first frame (with a peers or files column,
    and ``total`` if known before the first event), or a :class:`_NoBar`."""
    if not enabled:
        return _NoBar()
    from . import clibar

    extra = [clibar.peers_column()] if peers else []
    if files:
        extra.append(clibar.text_column("{task.fields[files]} files"))
    return clibar.ProgressBar(True, clibar.phased_columns(*extra), phase=phase, total=total)


DOWNLOAD_START = "finding peers"
"""A download's label until its first bytes come in."""


def get_call(
    inv: Invocation,
    args: dict[str, Any],
    *,
    op: str = "get",
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """The control ``get`` (or ``get_dir``, or the streaming ``cat``, whose data goes to
    ``on_data``), with its progress bar."""
    with progress_bar(inv.show_progress(), DOWNLOAD_START, peers=True) as bar:

        def progress(data: dict[str, Any]) -> None:
            done, total = data.get("bytes_done"), data.get("bytes_total")
            peers = data.get("peers", data.get("per_peer", {}))
            if isinstance(done, int) and isinstance(total, int):
                count = len(peers) if isinstance(peers, (dict, list)) else 0
                # All bytes in: the file is being checked and moved into place.
                phase = "finishing" if total and done >= total else "downloading"
                bar.update(completed=done, total=total or None, peers=count, phase=phase)

        result = inv.call(op, args, progress, on_data=on_data)
        bar.finish()
        return result


# ----------------------------------------------------------------------------- file references


def parse_id(inv: Invocation, value: str, param: str) -> bytes:
    """A full 64-hex-digit ID."""
    text = value.strip().lower()
    if len(text) != 64 or any(c not in string.hexdigits for c in text):
        raise inv.bad(
            param, f"{cliview.clean(value)!r} is not an ID (expected 64 hexadecimal characters)"
        )
    return bytes.fromhex(text)


def resolve_file(inv: Invocation, value: str, param: str) -> bytes:
    """A file named by a share link, a full ID, or a unique prefix of a local file's ID."""
    from .links import is_link, parse_link

    text = value.strip()
    if is_link(text):
        try:
            return parse_link(text).file_id
        except ConfigError as exc:
            raise inv.bad(param, str(exc)) from None
    lowered = text.lower()
    if len(lowered) >= 64 or not lowered or any(c not in string.hexdigits for c in lowered):
        return parse_id(inv, value, param)
    if len(lowered) < MIN_ID_PREFIX:
        raise inv.bad(param, f"an ID prefix needs at least {MIN_ID_PREFIX} hexadecimal characters")
    listed = inv.call("ls")
    known = [*(listed.get("files") or []), *(listed.get("partial") or [])]  # unfinished too
    matches = sorted(
        {
            str(f.get("file_id"))
            for f in known
            if isinstance(f, dict) and str(f.get("file_id", "")).startswith(lowered)
        }
    )
    if not matches:
        raise inv.bad(
            param, f"no local file ID starts with {lowered} (give the full 64-character ID)"
        )
    if len(matches) > 1:
        raise inv.bad(
            param, f"{lowered} is the start of {len(matches)} local file IDs: give more of it"
        )
    return bytes.fromhex(matches[0])


def link_peer(value: str) -> tuple[str, int] | None:
    """The peer hint of a share link (already parsed by :func:`resolve_file`), else None."""
    from .links import is_link, parse_link

    text = value.strip()
    return parse_link(text).peer if is_link(text) else None


def _with_hint(args: dict[str, Any], ref: str) -> dict[str, Any]:
    peer = link_peer(ref)
    if peer is not None:
        args["peer"] = list(peer)
    return args


# ----------------------------------------------------------------------------- to standard output


class _IsADirectory(Exception):
    """``cat`` of a directory ID: its first bytes are a directory listing."""


class _ReaderGone(Exception):
    """Standard output's reader went away (``| head``): not an error of ours."""


def is_our_stdout(path: str) -> bool:
    """Whether ``path`` (``/dev/stdout``, ``/proc/self/fd/1``, ...) is this process's standard
    output: ``-o`` then streams to it, as ``-o -`` does (a device or pipe cannot take the
    download's temporary file and rename)."""
    try:
        named, ours = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def get_to_stdout(inv: Invocation, fid: bytes, ref: str) -> None:
    """``get -o -`` / ``cat``: the daemon streams the file in order while it downloads (control
    ``cat``, with the peer hint of a share link ``ref``), every byte verified before it is sent,
    and each piece is written to stdout as it comes. A reader that stops early (``| head``) ends
    the command quietly with exit 0: closing the control connection cancels the download in the
    daemon."""
    from .directory import is_listing

    out = sys.stdout.buffer
    first = True

    def on_data(piece: bytes) -> None:
        nonlocal first
        if first and is_listing(piece):  # a directory's listing: no use as raw bytes
            raise _IsADirectory
        first = False
        try:
            out.write(piece)
        except BrokenPipeError:
            raise _ReaderGone from None

    try:
        args = _with_hint({"file_id": fid}, ref)
        result = get_call(inv, args, op="cat", on_data=on_data)
        out.flush()
    except _IsADirectory:
        raise CommandFailed(
            f"{fid.hex()} is a directory: list it with `p2pstore ls ID`,"
            " fetch it with `p2pstore get ID -o DIR`"
        ) from None
    except (_ReaderGone, BrokenPipeError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Point stdout at /dev/null so the flush at exit does not fail again.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
        return
    if inv.json_out:  # stdout carries the file: the summary goes to stderr
        cliview.echo_err(json.dumps({**result, "path": "-"}, sort_keys=True))


def run_cat(inv: Invocation, ref: str) -> None:
    """``p2pstore cat REF``."""
    get_to_stdout(inv, resolve_file(inv, ref, "FILE_ID"), ref)


# ----------------------------------------------------------------------------- to a file


def names_a_directory(text: str) -> bool:
    """``PATH/`` (or ``PATH/.``): the user means a directory, whether or not it exists."""
    return text.endswith(("/", os.sep, "/.")) or text in (".", "..")


def _count(value: Any) -> int:
    if isinstance(value, list | dict):
        return len(value)
    return int(value) if isinstance(value, int) else 0


def get_directory(inv: Invocation, args: dict[str, Any]) -> dict[str, Any] | None:
    """``get`` of an ID that may be a directory (control ``get_dir``, one download): a tree is
    fetched and reported here (``None``); a file's get result is returned for the caller to
    report; ``{}`` if the daemon left it to ``get`` (a node without directories)."""
    result = get_call(inv, args, op="get_dir")
    if not result.get("directory"):
        return result if "path" in result else {}
    if inv.json_out:
        cliview.emit_json(result)
    elif not inv.quiet:
        size, seconds = result.get("size"), result.get("seconds")
        files = cliview.counted(_count(result.get("files")), "file")
        line = f"saved {cliview.clean(str(result.get('path')))}/ ({files}"
        if isinstance(size, int):
            line += f", {format_size(size)}"
            if isinstance(seconds, (int, float)) and seconds > 0:
                line += f" in {seconds:.2f} s"
        cliview.echo(line + ")")
    return None


def saved_line(result: dict[str, Any]) -> str:
    """What ``get`` prints for a saved file: where, how big, how fast, from how many peers (or
    "from the local store" when no byte had to be fetched: then a rate would mean nothing)."""
    size, seconds = result.get("size"), result.get("seconds")
    peers = result.get("bytes_from_peers")
    line = f"saved {cliview.clean(str(result.get('path')))}"
    if not isinstance(size, int):
        return line
    local = isinstance(peers, dict) and not any(peers.values())
    line += f" ({format_size(size)}"
    if local:
        return line + ", from the local store)"
    if isinstance(seconds, (int, float)) and seconds > 0:
        line += f" in {seconds:.2f} s, {format_size(size / seconds)}/s"
    if isinstance(peers, dict):
        line += f", from {cliview.counted(len(peers), 'peer')}"
    return line + ")"


def run_get(inv: Invocation, ref: str, output: str | None) -> None:
    """``p2pstore get REF [-o PATH]``: the file is written only once complete and verified."""
    fid = resolve_file(inv, ref, "FILE_ID")
    if output == "-" or (output is not None and is_our_stdout(output)):
        get_to_stdout(inv, fid, ref)
        return
    cwd = Path.cwd()
    dest: str | None = None
    if output is not None:
        target = (cwd / Path(output).expanduser()).absolute()
        if not target.parent.is_dir():
            raise CommandFailed(f"no such directory: {target.parent}", EXIT_USAGE)
        if names_a_directory(output) and not target.is_dir():
            # "-o dir/" means "into the directory dir", never "a file named dir".
            raise CommandFailed(f"no such directory: {output}", EXIT_USAGE)
        dest = str(target)
    args = _with_hint({"file_id": fid, "dest": dest, "cwd": str(cwd)}, ref)
    result = get_directory(inv, args)
    if result is None:
        return
    if not result:
        result = get_call(inv, args)
    result.pop("directory", None)
    if inv.json_out:
        cliview.emit_json(result)
    elif not inv.quiet:
        cliview.echo(saved_line(result))
