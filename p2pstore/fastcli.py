"""The ``p2pstore`` console script: a fast path for the commands that only ask the daemon.

``p2pstore status`` (and ``ls``, ``peers``, ``transfers``, ``--version``) should answer at
once; the full command line (:mod:`p2pstore.cli`, Typer) costs a quarter of a second before it
does anything (importing Typer, Pydantic and Rich and building a type adapter per parameter).
:func:`main` therefore first reads the arguments itself, and when it understands them
completely it runs the command with nothing but the control client (:func:`run`); anything else
(``--help``, ``-v``, an unknown or misspelt option, a missing value, any other command) goes to
the full CLI unchanged. Both paths print through :mod:`p2pstore.cliview`, so output, errors and
exit statuses are identical; ``tests/cli/test_fastcli.py`` runs both and compares them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAST_COMMANDS = ("status", "ls", "peers", "transfers")
"""The commands the fast path runs (each one control call, no arguments of its own)."""


@dataclass(frozen=True)
class FastInvocation:
    """A command line the fast path understands completely."""

    command: str | None
    """One of :data:`FAST_COMMANDS`, or None for ``--version``."""

    data_dir: Path | None = None
    json_out: bool = False


def parse_fast(argv: Sequence[str]) -> FastInvocation | None:
    """``argv`` (without the program name) as a fast invocation, or None if the full CLI must
    handle it.

    Understood: the global options ``--data-dir DIR`` (``--data-dir=DIR``), ``--json``,
    ``-q``/``--quiet`` before and after one of :data:`FAST_COMMANDS`, and ``--version`` before
    the command. Like the full CLI, a ``--data-dir`` after the command wins over one before it,
    and a later one over an earlier one at the same place; ``--version`` among the options
    before the command prints the version whatever follows (it is an eager option there).
    """
    command: str | None = None
    before: Path | None = None
    after: Path | None = None
    json_out = False
    version = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            json_out = True
        elif arg in ("-q", "--quiet"):
            pass  # quiet only lowers logging, and these commands log nothing
        elif arg == "--version" and command is None:
            version = True
        elif arg == "--data-dir" or arg.startswith("--data-dir="):
            if arg == "--data-dir":
                i += 1
                value = argv[i] if i < len(argv) else ""
            else:
                value = arg.partition("=")[2]
            if not value or value.startswith("-"):
                return None  # an error, or a value the full parser may read differently
            if command is None:
                before = Path(value)
            else:
                after = Path(value)
        elif arg.startswith("-"):
            return None
        elif command is None:
            if version:
                return FastInvocation(None)
            if arg not in FAST_COMMANDS:
                return None
            command = arg
        else:
            return None  # an argument these commands do not take
        i += 1
    if version:
        return FastInvocation(None)
    if command is None:
        return None  # no command: the full CLI prints its help
    return FastInvocation(command, after if after is not None else before, json_out)


def run(invocation: FastInvocation) -> int:
    """Run a parsed fast invocation; return its exit status."""
    if invocation.command is None:  # nothing more to import than the version
        from ._version import version_text

        sys.stdout.write(version_text() + "\n")
        return 0
    from . import cliview

    shows: dict[str, tuple[str, Callable[[dict[str, Any], bool], None]]] = {
        "status": ("status", cliview.show_status),
        "ls": ("ls", cliview.show_files),
        "peers": ("peers", cliview.show_peers),
        "transfers": ("status", cliview.show_transfers),
    }
    op, show = shows[invocation.command]
    try:
        result = cliview.call_daemon(invocation.data_dir, op)
    except cliview.CommandFailed as exc:
        sys.stderr.write(cliview.error_text(exc.message, exc.code, invocation.json_out) + "\n")
        sys.stderr.flush()
        return exc.code
    show(result, invocation.json_out)
    return cliview.EXIT_OK


def main() -> None:
    """Entry point of the ``p2pstore`` console script."""
    invocation = parse_fast(sys.argv[1:])
    if invocation is None:
        from .cli import main as full_main

        full_main()
        return
    sys.exit(run(invocation))
