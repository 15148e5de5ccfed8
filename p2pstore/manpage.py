"""A man page for ``p2pstore``, generated from the command line itself (so it cannot drift).

``python -m p2pstore.manpage > p2pstore.1`` writes it; ``man ./p2pstore.1`` reads it. Every
command, argument and option comes from the Typer app in :mod:`p2pstore.cli`.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from ._version import __version__


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote on any line."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        stripped = line.strip()
        lines.append("\\&" + stripped if stripped.startswith((".", "'")) else stripped)
    return "\n".join(lines)


def _param_line(param: Any) -> tuple[str, str] | None:
    if getattr(param, "hidden", False) and getattr(param, "param_type_name", "") == "option":
        return None
    opts = list(getattr(param, "opts", [])) + list(getattr(param, "secondary_opts", []))
    if getattr(param, "param_type_name", "") == "argument":
        name = str(getattr(param, "metavar", None) or getattr(param, "name", "")).upper()
        return name, str(getattr(param, "help", "") or "")
    metavar = getattr(param, "metavar", None)
    flag = ", ".join(opts) + (
        f" {metavar}" if metavar and not getattr(param, "is_flag", False) else ""
    )
    return flag, str(getattr(param, "help", "") or "")


def render() -> str:
    """The whole man page, in roff (man macros)."""
    from .cli import app

    group: Any = typer.main.get_command(app)
    out = [
        f'.TH P2PSTORE 1 "" "p2pstore {__version__}" "User Commands"',
        ".SH NAME",
        "p2pstore \\- " + _roff(str(group.help or "").splitlines()[0]),
        ".SH SYNOPSIS",
        ".B p2pstore",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH OPTIONS",
    ]
    for param in group.params:
        line = _param_line(param)
        if line is not None:
            out += [".TP", f"\\fB{_roff(line[0])}\\fR", _roff(line[1])]
    out.append(".SH COMMANDS")
    for name, command in group.commands.items():
        if getattr(command, "hidden", False):
            continue
        out += [".SS " + _roff(f"p2pstore {name}"), _roff(str(command.help or ""))]
        for param in command.params:
            line = _param_line(param)
            if line is not None and line[0] != "--help":
                out += [".TP", f"\\fB{_roff(line[0])}\\fR", _roff(line[1])]
    out += [
        ".SH FILES",
        "The data directory holds p2pstore.toml (settings), the identity key, the chunk store"
        " and control.sock; see docs/cli.md.",
        ".SH EXIT STATUS",
        "0 success, 1 the operation failed, 2 usage error, 3 check: degraded, 4 check: lost,"
        " 130 interrupted.",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    """Write the man page to stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
