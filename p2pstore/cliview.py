"""What the client commands print, shared by the full CLI (:mod:`p2pstore.cli`) and its fast
path (:mod:`p2pstore.fastcli`), so that both give byte-identical output and errors.

Importing this module is cheap: it needs only the control client and the size/address
formatters. Rich (for tables) is imported only when a table is actually printed; Typer never.
Every ``show_*`` function takes the daemon's reply and prints it to standard output, as one JSON
object when ``json_out`` is set.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import control
from ._version import version_text as version_text
from .config import format_host_port, format_size, resolve_data_dir
from .errors import ConfigError, P2PStoreError

EXIT_OK = 0
"""The command did what was asked."""

EXIT_FAILED = 1
"""The operation failed (no daemon, file unavailable, port in use, verification failed...)."""

EXIT_USAGE = 2
"""Bad command line, bad settings file, or an input file that does not exist."""

EXIT_DEGRADED = 3
"""``check``: the file is degraded (some stripe lacks shares but can still be rebuilt)."""

EXIT_LOST = 4
"""``check``: the file is lost (some stripe has fewer shares reachable than it needs)."""

EXIT_CANCELLED = 5
"""The operation was stopped by ``p2pstore cancel`` (from another terminal)."""

EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT), as shells expect."""

PIPE_WIDTH = 240
"""Table width when stdout is not a terminal: wide enough that 64-character IDs are never cut."""


class CommandFailed(Exception):
    """A client command failed in a way the user is told about in one line: ``message``, exit
    status ``code``, and for a usage error a ``hint`` (``see p2pstore get --help``)."""

    def __init__(self, message: str, code: int = EXIT_FAILED, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def usage_failure(message: str, command: str | None) -> CommandFailed:
    """A bad command line (exit 2), pointing at the help of ``command`` (None: the program's)."""
    where = f"p2pstore {command}" if command else "p2pstore"
    return CommandFailed(message, EXIT_USAGE, f"see {where} --help")


def clean(text: str) -> str:
    """One printable line (no terminal escapes smuggled in through names or messages)."""
    return "".join(c if c.isprintable() else " " for c in text)


def error_text(message: str, code: int, json_errors: bool, hint: str | None = None) -> str:
    """The one stderr line reporting a failed command (a JSON object under ``--json``, which
    leaves the ``hint`` out: a program reading it has no use for it)."""
    if json_errors:
        return json.dumps({"error": clean(message), "exit_code": code})
    return f"error: {clean(message)}" + (f" ({clean(hint)})" if hint else "")


def report_failure(failure: CommandFailed, json_errors: bool) -> None:
    """Print ``failure`` as its one stderr line; after Ctrl-C the terminal's ``^C`` echo is
    erased first, so the message stands on a line of its own."""
    if failure.code == EXIT_INTERRUPTED and sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    echo_err(error_text(failure.message, failure.code, json_errors, failure.hint))


def echo(text: str) -> None:
    """One line on standard output, flushed (as ``typer.echo`` does)."""
    out = sys.stdout
    out.write(text + "\n")
    out.flush()


def echo_err(text: str) -> None:
    """One line on standard error, flushed."""
    err = sys.stderr
    err.write(text + "\n")
    err.flush()


def emit_json(data: Any) -> None:
    """``data`` as one JSON line on standard output (keys sorted, so output is stable)."""
    echo(json.dumps(data, sort_keys=True))


def start_hint(flag: Path | None, data_dir: Path) -> str:
    """How to start the daemon the user was trying to reach."""
    return f"p2pstore daemon --data-dir {data_dir}" if flag is not None else "p2pstore daemon"


def call_daemon(
    flag: Path | None,
    op: str,
    args: dict[str, Any] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """Run ``op`` on the daemon of the data directory ``flag`` names (else the default one);
    ``on_data`` receives a streaming operation's data frames (``cat``).

    Raises :class:`CommandFailed` with the message and exit status the user sees when there is
    no daemon, the daemon refuses, or the user presses Ctrl-C.
    """
    data_dir = resolve_data_dir(flag)
    try:
        return control.call_blocking(data_dir, op, args, on_progress=on_progress, on_data=on_data)
    except control.DaemonNotRunningError:
        raise CommandFailed(
            f"no p2pstore daemon is running for {data_dir}; start one with:"
            f" {start_hint(flag, data_dir)}"
        ) from None
    except KeyboardInterrupt:
        raise CommandFailed("interrupted", EXIT_INTERRUPTED) from None
    except (P2PStoreError, OSError) as exc:
        raise CommandFailed(control.error_message(exc), exit_for(exc)) from None


def exit_for(exc: BaseException) -> int:
    """The exit status for a failed daemon call."""
    if isinstance(exc, control.ControlError) and exc.code == "cancelled":
        return EXIT_CANCELLED
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


# ----------------------------------------------------------------------------- tables


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 peer", "3 peers"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    return console


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a table; the first column holds full 64-character IDs and is never truncated."""
    from rich.table import Table

    console = _console()
    table = Table(title=title)
    for i, column in enumerate(columns):
        if i == 0:
            table.add_column(column, no_wrap=True, min_width=64)
        else:
            table.add_column(column)
    for row in rows:
        table.add_row(*(clean(cell) for cell in row))
    console.print(table)


def addr_text(value: Any) -> str:
    """An address from a reply (``[host, port]`` or ``{"host", "port"}``) as ``HOST:PORT``."""
    if isinstance(value, list) and len(value) == 2:
        return format_host_port(str(value[0]), int(value[1]))
    if isinstance(value, dict) and "host" in value and "port" in value:
        return format_host_port(str(value["host"]), int(value["port"]))
    return str(value)


def contact_rows(contacts: list[Any], port_key: str) -> list[list[str]]:
    """Rows of node ID, host, port for the contacts (or providers) of a reply."""
    rows = []
    for c in contacts:
        if isinstance(c, dict):
            port = c.get(port_key, c.get("port", c.get("tcp_port", "")))
            rows.append([str(c.get("node_id", "")), str(c.get("host", "")), str(port)])
    return rows


def duration_text(seconds: float) -> str:
    """``75`` as ``1m15s``; ``3700`` as ``1h01m``."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def transfer_rows(transfers: list[Any], now: float) -> list[list[str]]:
    """One row per running transfer: ID, kind (and phase), name, bytes, rate, peers, ETA."""
    rows = []
    for t in transfers:
        if not isinstance(t, dict):
            continue
        done, total = int(t.get("bytes_done") or 0), int(t.get("bytes_total") or 0)
        started = t.get("started")
        elapsed = now - started if isinstance(started, (int, float)) else 0.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total > done else None
        fid = str(t.get("file_id") or "")
        name = str(t.get("name") or "")
        if not name or name.startswith("."):  # an internal temporary name means nothing
            name = f"{fid[:16]}…" if fid else "?"
        size = f"{format_size(done)} / {format_size(total)}" if total else format_size(done)
        rows.append(
            [
                str(t.get("id") or "-"),  # what `p2pstore cancel ID` takes
                str(t.get("kind") or "") + (f" ({t['phase']})" if t.get("phase") else ""),
                name,
                size,
                f"{format_size(rate)}/s" if rate else "-",
                str(t.get("peers") or 0),
                duration_text(eta) if eta is not None else "-",
            ]
        )
    return rows


def print_transfers(transfers: list[Any]) -> None:
    """The running transfers as a table."""
    import time

    from rich.table import Table

    rows = transfer_rows(transfers, time.time())
    console = _console()
    table = Table(title=counted(len(rows), "transfer"))
    for column in ("ID", "kind", "name", "bytes", "rate", "peers", "ETA"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(clean(cell) for cell in row))
    console.print(table)


# ----------------------------------------------------------------------------- commands


def show_status(result: dict[str, Any], json_out: bool) -> None:
    """``p2pstore status``."""
    if json_out:
        # Addresses as HOST:PORT strings, exactly as the daemon's ready line prints them; the
        # daemon's "peers" (open connections) as "connections", which `peers` (the DHT
        # contacts, "routing_table_size" here) cannot be mistaken for.
        shown = {k: v for k, v in result.items() if k != "peers"}
        emit_json(
            {
                **shown,
                "connections": result.get("peers"),
                "udp": addr_text(result.get("udp")),
                "tcp": addr_text(result.get("tcp")),
            }
        )
        return
    transfers = result.get("transfers") or []
    count = len(transfers) if isinstance(transfers, list) else 0
    lines = [
        f"node ID:        {result.get('node_id')}",
        f"udp:            {addr_text(result.get('udp'))}",
        f"tcp:            {addr_text(result.get('tcp'))}",
        f"contacts:       {result.get('routing_table_size')} in the DHT routing table",
        f"connections:    {result.get('peers')} open to other nodes",
        f"stored:         {format_size(int(result.get('stored_bytes') or 0))}",
        *quota_line(result),
        *limit_lines(result),
        f"files:          {result.get('files')}",
        f"transfers:      {count}",
    ]
    for line in lines:
        echo(clean(line))
    if count:
        print_transfers(transfers)


def quota_line(result: dict[str, Any]) -> list[str]:
    """The quota line of ``status`` (absent if the daemon did not say)."""
    if "quota_bytes" not in result:
        return []
    quota = result.get("quota_bytes")
    text = format_size(quota) if isinstance(quota, int) else "unlimited"
    return [f"quota:          {text} (beyond it, shares pushed by other nodes are refused)"]


def limit_lines(result: dict[str, Any]) -> list[str]:
    """The upload and download limit lines of ``status`` (absent if the daemon did not say)."""
    lines = []
    for key, label in (
        ("upload_limit", "upload limit:   "),
        ("download_limit", "download limit: "),
    ):
        if key in result:
            rate = result.get(key)
            lines.append(label + (f"{format_size(rate)}/s" if rate else "unlimited"))
    return lines


def show_transfers(result: dict[str, Any], json_out: bool) -> None:
    """``p2pstore transfers`` (from a ``status`` reply)."""
    running = result.get("transfers") or []
    if json_out:
        emit_json({"transfers": running})
        return
    if not isinstance(running, list) or not running:
        echo("no transfers")
        return
    print_transfers(running)


def show_peers(result: dict[str, Any], json_out: bool) -> None:
    """``p2pstore peers``."""
    if json_out:
        emit_json(result)
        return
    rows = contact_rows(list(result.get("peers") or []), "port")
    if not rows:
        echo("no peers")
        return
    print_table(counted(len(rows), "peer"), ["node ID", "host", "udp port"], rows)


def show_files(result: dict[str, Any], json_out: bool) -> None:
    """``p2pstore ls``: the local files, then the unfinished downloads."""
    files = result.get("files", [])
    if json_out:
        emit_json(result)
        return
    rows = [
        [
            str(f.get("file_id")),
            str(f.get("name") or "") + ("/" if f.get("directory") else ""),
            format_size(int(f.get("size") or 0)),
            "yes" if f.get("pinned") else "",
            f"{f.get('chunks_present', '?')}/{f.get('chunks_total', '?')}",
        ]
        for f in files
        if isinstance(f, dict)
    ]
    partial = [p for p in result.get("partial") or [] if isinstance(p, dict)]
    if not rows and not partial:
        echo("no files")
        return
    if rows:
        print_table(
            counted(len(rows), "file"), ["file ID", "name", "size", "pinned", "chunks"], rows
        )
    if partial:
        print_table(
            f"{counted(len(partial), 'unfinished download')}"
            " (get ID again to resume, rm ID to remove)",
            ["file ID", "chunks held", "size"],
            [
                [str(p.get("file_id")), str(p.get("chunks")), format_size(int(p.get("bytes") or 0))]
                for p in partial
            ],
        )
