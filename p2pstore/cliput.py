"""``p2pstore put`` (and the phased progress bar verify and check share with it), for both the
full CLI (:mod:`p2pstore.cli`) and its fast path (:mod:`p2pstore.fastcli`).

Like :mod:`p2pstore.cliget`: no Typer, Rich only for a bar on a terminal, failures raised as
:class:`~p2pstore.cliview.CommandFailed`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import cliview, control
from .cliget import Invocation, progress_bar
from .cliview import EXIT_INTERRUPTED, EXIT_USAGE, CommandFailed
from .config import resolve_data_dir

STDIN_BLOCK = 1 << 20
"""Bytes read from standard input at a time by ``put -``."""

PUT_PHASES = {"store": "storing", "publish": "announcing", "disperse": "dispersing"}
"""How each phase of a put is named on its progress bar."""

UNCOUNTED_PHASES = frozenset({"publish"})
"""Phases whose count means nothing to a user (a put's announcement is one step: "1/1", "0/1")."""

DIRECTORY_KEYS = ("directory", "name", "files", "directories", "symlinks", "skipped")
"""Keys a directory put's JSON outcome adds to a file's."""


def phased_call(
    inv: Invocation,
    op: str,
    args: dict[str, Any] | None,
    names: dict[str, str],
    units: dict[str, str] | None = None,
    *,
    first_total: int | None = None,
) -> dict[str, Any]:
    """A control operation whose progress is ``{phase, done, total[, unit]}`` (put, verify,
    check --repair), with a bar showing the phase (as ``names`` calls it; the first one's name,
    and ``first_total`` if given, from the first frame), the amount in its unit (the event's,
    else ``units[phase]``), rate
    and ETA; each phase starts its own rate. A phase in :data:`UNCOUNTED_PHASES` shows no
    count; the last frame shows the finished state."""
    first = names[next(iter(names))]
    with progress_bar(inv.show_progress(), first, total=first_total) as bar:

        def progress(data: dict[str, Any]) -> None:
            if isinstance(data.get("done"), int) and isinstance(data.get("total"), int):
                phase = str(data.get("phase", ""))
                if phase != bar_phase[0]:
                    bar.reset()  # a new phase: its own rate and ETA
                    bar_phase[0] = phase
                if phase in UNCOUNTED_PHASES:
                    bar.update(phase=names.get(phase, phase), completed=0, total=None, unit="")
                    return
                unit = str(data.get("unit") or (units or {}).get(phase, ""))
                bar.update(
                    phase=names.get(phase, phase),
                    completed=data["done"],
                    total=data["total"] or None,  # no count (yet): an indeterminate bar
                    unit=unit,
                )

        bar_phase = [""]
        result = inv.call(op, args, progress)
        bar.finish()
        return result


@contextlib.contextmanager
def stdin_file(directory: Path) -> Iterator[Path]:
    """Standard input copied to a private temporary file in ``directory`` (the daemon reads
    files by path), removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix=".stdin-", suffix=".part", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            source = sys.stdin.buffer
            while block := source.read(STDIN_BLOCK):
                out.write(block)
        yield path
    except KeyboardInterrupt:
        raise CommandFailed("interrupted", EXIT_INTERRUPTED) from None
    except OSError as exc:
        raise CommandFailed(
            f"cannot store standard input in {directory}: {exc.strerror or exc}"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def put_path(inv: Invocation, path: Path, disperse: bool, name: str | None) -> dict[str, Any]:
    """The control ``put`` of one file, with its phased bar."""
    args: dict[str, Any] = {"path": str(path), "disperse": disperse}
    if name is not None:
        args["name"] = name
    units = {"store": "bytes", "disperse": "chunks"}
    try:  # the size is on the first frame, before the daemon's first event (none for a small file)
        size: int | None = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    return phased_call(inv, "put", args, PUT_PHASES, units, first_total=size)


def put_dir_path(inv: Invocation, path: Path, disperse: bool, name: str | None) -> dict[str, Any]:
    """The control ``put_dir`` with a progress bar (bytes of the tree's files stored); warns on
    stderr about every entry left out."""
    args: dict[str, Any] = {"path": str(path), "disperse": disperse}
    if name is not None:
        args["name"] = name
    with progress_bar(inv.show_progress(), "storing", files=True) as bar:

        def progress(data: dict[str, Any]) -> None:
            done, total = data.get("done"), data.get("total")
            if isinstance(done, int) and isinstance(total, int):
                files = f"{data.get('files_done', '?')}/{data.get('files_total', '?')}"
                bar.update(completed=done, total=total or None, files=files, unit="bytes")

        result = inv.call("put_dir", args, progress)
        bar.finish()
    for item in result.get("skipped") or []:
        if isinstance(item, dict) and not inv.quiet:
            where, why = (
                cliview.clean(str(item.get("path"))),
                cliview.clean(str(item.get("reason"))),
            )
            cliview.echo_err(f"warning: skipped {where}: {why}")
    return result


def checked_input(file: Path) -> Path:
    """``file`` as an absolute path, if it exists and can be read (else a usage error)."""
    path = file.expanduser().absolute()
    if not path.exists():
        raise CommandFailed(f"no such file: {file}", EXIT_USAGE)
    if not path.is_file() and not path.is_dir():
        raise CommandFailed(f"not a regular file or directory: {file}", EXIT_USAGE)
    if not os.access(path, os.R_OK):
        raise CommandFailed(f"cannot read {file}: permission denied", EXIT_USAGE)
    return path


def share_link(inv: Invocation, result: dict[str, Any]) -> str | None:
    """The share link of a put's file, with this node's chunk server as the peer hint when it
    listens on a specific address (a wildcard address is no use to anyone else)."""
    from .links import ShareLink

    try:
        fid = bytes.fromhex(str(result.get("file_id")))
    except ValueError:
        return None
    if len(fid) != 32:
        return None
    peer: tuple[str, int] | None = None
    with contextlib.suppress(Exception):
        tcp = control.call_blocking(resolve_data_dir(inv.flag), "status").get("tcp")
        if isinstance(tcp, list) and len(tcp) == 2 and str(tcp[0]) not in ("0.0.0.0", "::", ""):
            peer = (str(tcp[0]), int(tcp[1]))
    name = result.get("name")
    return str(ShareLink(fid, str(name) if name else None, peer))


def report_put(inv: Invocation, result: dict[str, Any], *, single: bool) -> dict[str, Any]:
    """Print one put's outcome (its JSON object only if it is the only file); return it."""
    link = share_link(inv, result)
    keys = ("file_id", "size", "chunks", "dispersed", "not_dispersed")
    outcome = {**{k: result.get(k) for k in keys}, "link": link}
    if result.get("directory"):
        outcome.update({k: result.get(k) for k in DIRECTORY_KEYS})
    if inv.json_out:
        if single:
            cliview.emit_json(outcome)
    else:
        cliview.echo(str(result.get("file_id")))
        if link and not inv.quiet:
            # stderr: stdout stays the bare ID, for id=$(p2pstore put f)
            cliview.echo_err(f"share: {link}")
    return outcome


def run_put(inv: Invocation, files: list[Path], no_disperse: bool, name: str | None) -> None:
    """``p2pstore put FILE... [--no-disperse] [--name NAME]``: store each FILE in order (``-``:
    standard input, alone), print its ID (and share link); exit 1 if a dispersal asked for
    placed nothing."""
    if name is not None and (not name.strip() or "/" in name or "\0" in name):
        raise inv.bad("--name", "a file name must be non-empty and contain no /")
    if len(files) > 1 and name is not None:
        raise inv.bad("--name", "names one file: give a single FILE with it")
    if len(files) > 1 and any(str(f) == "-" for f in files):
        raise inv.bad("FILE", "- (standard input) must be the only FILE")
    paths = [checked_input(f) for f in files if str(f) != "-"]  # all of them before storing
    outcomes: list[dict[str, Any]] = []
    if str(files[0]) == "-":
        inv.call("status")  # no daemon: say so before reading all of stdin
        with stdin_file(resolve_data_dir(inv.flag)) as path:
            result = put_path(inv, path, not no_disperse, name or "stdin")
        outcomes.append(report_put(inv, result, single=True))
    else:
        for path in paths:
            if path.is_dir():
                result = put_dir_path(inv, path, not no_disperse, name)
            else:
                result = put_path(inv, path, not no_disperse, name)
            outcomes.append(report_put(inv, result, single=len(paths) == 1))
    if inv.json_out and len(outcomes) > 1:
        cliview.emit_json({"files": outcomes})
    failed = [str(o["not_dispersed"]) for o in outcomes if o.get("not_dispersed")]
    if failed:
        # Asked to disperse, could not: the file ID is printed (it is stored here), but the
        # command fails so that `put x && rm x` never trusts copies that do not exist.
        raise CommandFailed(failed[0] if len(failed) == 1 else f"{len(failed)} files: {failed[0]}")
