"""The ``p2pstore`` console script: a fast path for the commands that only ask the daemon.

``p2pstore status`` (and ``ls``, ``peers``, ``transfers``, ``get``, ``cat``, ``--version``)
should answer at once; the full command line (:mod:`p2pstore.cli`, Typer) costs a quarter of
a second before it does anything (importing Typer, Pydantic and Rich and building a type
adapter per parameter). :func:`main` therefore first reads the arguments itself, and when it
understands them completely it runs the command with nothing but the control client
(:func:`run`); anything else
(``--help``, ``-v``, an unknown or misspelt option, a missing value, any other command) goes to
the full CLI unchanged. Both paths print through :mod:`p2pstore.cliview`, so output, errors and
exit statuses are identical (``get`` and ``cat`` run the same :mod:`p2pstore.cliget` code);
``tests/cli/test_fastcli.py`` runs both and compares them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAST_COMMANDS = ("status", "ls", "peers", "transfers", "get", "cat", "put")
"""The commands the fast path runs."""

_TAKES_REF = frozenset({"get", "cat"})
"""Commands with one argument, the file (an ID, a share link or a unique prefix)."""

_VALUED = frozenset({"--data-dir", "-o", "--output", "--name"})
"""Options that take a value (``-o``/``--output``: ``get`` only; ``--name``: ``put`` only)."""


@dataclass(frozen=True)
class FastInvocation:
    """A command line the fast path understands completely."""

    command: str | None
    """One of :data:`FAST_COMMANDS`, or None for ``--version``."""

    data_dir: Path | None = None
    json_out: bool = False
    quiet: bool = False
    ref: str | None = None
    """``get``/``cat``: the file argument."""
    output: str | None = None
    """``get``: the ``-o``/``--output`` value; ``put``: the ``--name`` value."""
    files: tuple[str, ...] = ()
    """``put``: the files (``-``: standard input)."""
    no_disperse: bool = False
    """``put --no-disperse``."""


def parse_fast(argv: Sequence[str]) -> FastInvocation | None:
    """``argv`` (without the program name) as a fast invocation, or None if the full CLI must
    handle it.

    Understood: the global options ``--data-dir DIR`` (``--data-dir=DIR``), ``--json``,
    ``-q``/``--quiet`` before and after one of :data:`FAST_COMMANDS`, ``--version`` before
    the command, the one argument of ``get``/``cat`` and ``get``'s ``-o``/``--output PATH``
    (``--output=PATH``) after it, ``put``'s files (``-`` too), ``--no-disperse`` and
    ``--name NAME`` (``--name=NAME``). Like the full CLI, a ``--data-dir`` (``-o``) after the
    command wins over one before it, and a later one over an earlier one at the same place;
    ``--version`` among the options before the command prints the version whatever follows (it
    is an eager option there). A value that starts with ``-`` (but ``-o -``), a missing
    argument or value, anything else: None.
    """
    command: str | None = None
    before: Path | None = None
    after: Path | None = None
    json_out = quiet = version = no_disperse = False
    files: list[str] = []
    ref: str | None = None
    output: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            json_out = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--version" and command is None:
            version = True
        elif arg == "--no-disperse" and command == "put":
            no_disperse = True
        elif arg in _VALUED or arg.startswith(("--data-dir=", "--output=", "--name=")):
            name, eq, value = arg.partition("=")
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            if not value or (value.startswith("-") and value != "-"):
                return None  # an error, or a value the full parser may read differently
            if name == "--data-dir":
                if value == "-":
                    return None
                if command is None:
                    before = Path(value)
                else:
                    after = Path(value)
            elif (command == "get" and name != "--name") or (command == "put" and name == "--name"):
                output = value
            else:
                return None  # -o belongs to get, --name to put, after the command
        elif command == "put" and (arg == "-" or not arg.startswith("-")):
            files.append(arg)
        elif arg.startswith("-"):
            return None
        elif command is None:
            if version:
                return FastInvocation(None)
            if arg not in FAST_COMMANDS:
                return None
            command = arg
        elif command in _TAKES_REF and ref is None:
            ref = arg
        else:
            return None  # an argument these commands do not take
        i += 1
    if version:
        return FastInvocation(None)
    if (
        command is None
        or (command in _TAKES_REF and ref is None)
        or (command == "put" and not files)
    ):
        return None  # no command: help; no file: the full CLI's usage error
    data_dir = after if after is not None else before
    return FastInvocation(
        command, data_dir, json_out, quiet, ref, output, tuple(files), no_disperse
    )


def run(invocation: FastInvocation) -> int:
    """Run a parsed fast invocation; return its exit status."""
    if invocation.command is None:  # nothing more to import than the version
        from ._version import version_text

        sys.stdout.write(version_text() + "\n")
        return 0
    from . import cliview

    if invocation.command in (*_TAKES_REF, "put"):
        return _run_transfer(invocation)
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


def _run_transfer(invocation: FastInvocation) -> int:
    """``get``, ``cat`` or ``put``, through the same code as the full CLI's."""
    from . import cliget, cliview

    assert invocation.command is not None
    inv = cliget.Invocation(
        invocation.data_dir, invocation.json_out, invocation.quiet, invocation.command
    )
    try:
        if invocation.command == "put":
            from . import cliput

            files = [Path(f) for f in invocation.files]
            cliput.run_put(inv, files, invocation.no_disperse, invocation.output)
        elif invocation.command == "cat":
            assert invocation.ref is not None
            cliget.run_cat(inv, invocation.ref)
        else:
            assert invocation.ref is not None
            cliget.run_get(inv, invocation.ref, invocation.output)
    except cliview.CommandFailed as exc:
        cliview.report_failure(exc, invocation.json_out)
        return exc.code
    except KeyboardInterrupt:  # outside a daemon call (those report it themselves)
        failure = cliview.CommandFailed("interrupted", cliview.EXIT_INTERRUPTED)
        cliview.report_failure(failure, invocation.json_out)
        return failure.code
    return cliview.EXIT_OK


def main() -> None:
    """Entry point of the ``p2pstore`` console script."""
    invocation = parse_fast(sys.argv[1:])
    if invocation is None:
        from .cli import main as full_main

        full_main()
        return
    sys.exit(run(invocation))
