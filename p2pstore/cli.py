"""The ``p2pstore`` command line (Typer).

``p2pstore daemon`` runs a node; every other command except ``demo`` talks to the daemon of its
data directory over the control socket (:mod:`p2pstore.control`). User errors are reported as one
``error: ...`` line on stderr, never a traceback. Exit codes: 0 success, 1 the operation failed
(including "no daemon running"), 2 usage error (bad arguments, bad settings file, missing input
file), 5 cancelled by ``p2pstore cancel``, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperGroup

from . import clibar, cliget, cliput, cliview, control
from .cliview import EXIT_CANCELLED as EXIT_CANCELLED
from .cliview import EXIT_DEGRADED as EXIT_DEGRADED
from .cliview import EXIT_FAILED as EXIT_FAILED
from .cliview import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from .cliview import EXIT_LOST as EXIT_LOST
from .cliview import EXIT_OK as EXIT_OK
from .cliview import EXIT_USAGE as EXIT_USAGE
from .config import (
    CONFIG_FILE_NAME,
    DATA_DIR_ENV,
    DEFAULT_DAEMON_HOST,
    DEFAULT_TCP_PORT,
    DEFAULT_UDP_PORT,
    DaemonSettings,
    format_size,
    load_settings,
    parse_host_port,
    parse_listen_address,
    parse_rate,
    parse_size,
    resolve_data_dir,
    setting_text,
    settings_rows,
)
from .datadir import UnsafeDataDirError, check_data_dir
from .errors import ConfigError, P2PStoreError
from .logs import LOG_LEVELS, setup_logging


class _PlainArgument(TyperArgument):
    """An argument shown in help by its plain name: ``FILE_ID``, ``[KEY]``, ``FILE...``.

    Typer writes ``{FILE_ID}`` in the usage line and ``FILE_ID <str>`` in the argument list."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _plain_name(self) -> str:
        return self.metavar or (self.name or "").upper()

    def _rich_display_name(self) -> str:  # the name in the argument list
        return f"{self._plain_name()}..." if self.nargs != 1 else self._plain_name()

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self._plain_name() if self.required else f"[{self._plain_name()}]"
        return [f"{name}..." if self.nargs != 1 else name]


class _PlainHelpGroup(TyperGroup):
    """The command group, with every command's arguments shown plainly (:class:`_PlainArgument`)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for command in self.commands.values():
            for param in command.params:
                if type(param) is TyperArgument:
                    param.__class__ = _PlainArgument  # same fields; only the help differs

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; a command-line error (unknown option, missing argument, bad
        value) is one ``error:`` line with a pointer to the command's help (one JSON object
        under ``--json``), exit 2, like every other error, rather than Click's usage block."""
        run = functools.partial(
            super().main,
            args,
            prog_name,
            complete_var,
            standalone_mode=False,
            windows_expand_args=windows_expand_args,
            **extra,
        )
        if not standalone_mode:
            return run()
        argv = list(args) if args is not None else sys.argv[1:]
        words = argv[: argv.index("--")] if "--" in argv else argv
        json_errors = "--json" in words
        try:
            code = run()
        except _CLICK_ERROR as exc:
            message = exc.format_message()  # type: ignore[attr-defined]
            status = int(getattr(exc, "exit_code", EXIT_USAGE))
            if json_errors:  # the same message as the text line, without its hint
                failure = cliview.CommandFailed(_plain_message(message), status)
            else:
                ctx = getattr(exc, "ctx", None)
                path = str(getattr(ctx, "command_path", "") or "").split()[1:]
                failure = cliview.usage_failure(_plain_message(message), " ".join(path))
                failure.code = status
            cliview.report_failure(failure, json_errors)
            sys.exit(status)
        except typer.Abort:
            cliview.report_failure(
                cliview.CommandFailed("interrupted", EXIT_INTERRUPTED), json_errors
            )
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _plain_message(message: str) -> str:
    """Click's ``No such option: --x.`` as ``no such option: --x``, like our other errors;
    without Click's ``(Possible options: ...)``, a guess by spelling that offers ``--verbose`` for
    ``--bogus`` (the help the hint points at lists the real ones)."""
    text = re.sub(r"\s*\(Possible options: [^)]*\)", "", message.strip()).rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


app = typer.Typer(
    cls=_PlainHelpGroup,
    name="p2pstore",
    help="A peer-to-peer, content-addressed, erasure-coded file store.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help=f"Data directory [default: ${DATA_DIR_ENV}, else the platform's user data dir].",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the result (and any error) as JSON.", show_default=False),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="More log output on stderr (-vv: debug).",
        show_default=False,
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress bars, no log output below errors, only the result.",
        show_default=False,
    ),
]
LogJsonOpt = Annotated[
    bool,
    typer.Option("--log-json", help="Log one JSON object per line on stderr.", show_default=False),
]
FileIdArg = Annotated[
    str,
    typer.Argument(
        metavar="FILE_ID", help="File ID: 64 hexadecimal characters.", show_default=False
    ),
]


FileRefArg = Annotated[
    str,
    typer.Argument(
        metavar="FILE_ID",
        help="A file ID (64 hex characters), a p2p:// share link, or the first characters"
        " (at least 4) of a local file's ID.",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(cliview.version_text())
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Show the version.",
            show_default=False,
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """A peer-to-peer, content-addressed, erasure-coded file store.

    The options above are also accepted after the command (p2pstore status --data-dir D).
    """
    global _STATE
    # Until the command merges its own options; _setup reads the rest from here.
    _STATE = _State(
        json_errors=json_out,
        quiet=quiet,
        verbose=verbose,
        log_json=log_json,
        data_dir=data_dir,
        command=ctx.invoked_subcommand or "",
    )


@dataclass
class _State:
    """What the running invocation chose; reset by every invocation's root callback."""

    json_errors: bool = False
    quiet: bool = False
    verbose: int = 0
    log_json: bool = False
    data_dir: Path | None = None
    command: str = ""
    """The command's name, for the usage hint of a bad argument."""


_STATE = _State()


def main() -> None:
    """Entry point of the full command line (the console script's fast path,
    :mod:`p2pstore.fastcli`, hands it what it does not run itself).

    A command-line error (unknown option, missing argument...) is one ``error:`` line with a
    hint, or under ``--json`` one JSON object ``{"error": ..., "exit_code": 2}`` on stderr, like
    every other error (:meth:`_PlainHelpGroup.main`)."""
    app(prog_name="p2pstore")


# Click's error base class (typer >= 0.29 vendors click and calls it TyperException; before, it
# was click's ClickException): found from an exception typer exports, whichever it is.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ in ("TyperException", "ClickException")
)


# ----------------------------------------------------------------------------- helpers


_clean = cliview.clean


def _fail(message: str, code: int = EXIT_FAILED, hint: str | None = None) -> NoReturn:
    """Report a user error as one line on stderr (one JSON object under ``--json``), exit.

    A progress bar on screen is taken off first, and after Ctrl-C the terminal's ``^C`` echo is
    erased, so the message stands on a line of its own."""
    clibar.stop_active()
    cliview.report_failure(cliview.CommandFailed(message, code, hint), _STATE.json_errors)
    raise typer.Exit(code)


def _bad(param: str, message: str) -> NoReturn:
    """A bad value for ``param``: one line (with a pointer to the command's help), exit 2."""
    _fail_with(_invocation(None, False).bad(param, message))


def _fail_with(failure: cliview.CommandFailed) -> NoReturn:
    _fail(failure.message, failure.code, failure.hint)


def _invocation(data_dir: Path | None, json_out: bool) -> cliget.Invocation:
    """The shared code's view of this invocation (after :func:`_setup`)."""
    return cliget.Invocation(data_dir, json_out, _STATE.quiet, _STATE.command)


@contextlib.contextmanager
def _failing() -> Iterator[None]:
    """Report a :class:`cliview.CommandFailed` raised by shared code as :func:`_fail` does."""
    try:
        yield
    except cliview.CommandFailed as exc:
        _fail_with(exc)


_emit_json = cliview.emit_json


def _setup(
    data_dir: Path | None,
    json_out: bool,
    verbose: int,
    quiet: bool,
    log_json: bool,
) -> tuple[Path | None, bool]:
    """Merge the command's options with those given before it; set up logging.

    An option after the command wins over the same option before it; flags (``--json``,
    ``-q``, ``--log-json``) are on if given in either place, and ``-v`` counts add up.
    Returns the data-directory flag and whether output is JSON.
    """
    root = _STATE
    data_dir = data_dir if data_dir is not None else root.data_dir
    json_out = json_out or root.json_errors
    verbose += root.verbose
    quiet = quiet or root.quiet
    log_json = log_json or root.log_json
    _STATE.json_errors = json_out
    _STATE.quiet = quiet
    _STATE.verbose = verbose
    _STATE.log_json = log_json
    _apply_log_level(None)
    return data_dir, json_out


def _apply_log_level(file_level: int | None) -> None:
    """Logging from ``-q`` / ``-v``, else ``file_level`` (``log_level`` in the settings file)."""
    level = logging.ERROR if _STATE.quiet else (file_level if _STATE.verbose == 0 else None)
    setup_logging(_STATE.verbose, _STATE.log_json, level=level)


def _data_dir(flag: Path | None) -> Path:
    return resolve_data_dir(flag)


def _parse_id(value: str, param: str) -> bytes:
    with _failing():
        return cliget.parse_id(_invocation(None, False), value, param)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: _failing may swallow)


def _user_error(exc: BaseException) -> BaseException | None:
    """The error to report if ``exc`` (possibly a group) holds only user-facing errors."""
    if isinstance(exc, (P2PStoreError, OSError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        import trio  # only the daemon and the demo raise groups, and they have imported it

        leaves = [_user_error(e) for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        found = [leaf for leaf in leaves if leaf is not None]
        if found and len(found) == len(leaves):
            return found[0]
    return None


_exit_for = cliview.exit_for


def _call(
    flag: Path | None,
    op: str,
    args: dict[str, Any] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    try:
        return cliview.call_daemon(flag, op, args, on_progress, on_data=on_data)
    except cliview.CommandFailed as exc:
        _fail(exc.message, exc.code)


# ----------------------------------------------------------------------------- daemon


def _check_port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise typer.BadParameter(f"{value} is not a port (expected 0-65535)")
    return value


@app.command()
def daemon(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="HOST",
            help=f"Address to listen on [default: {DEFAULT_DAEMON_HOST}].",
            show_default=False,
        ),
    ] = None,
    udp_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            callback=_check_port,
            help=f"DHT (UDP) port 0-65535; 0 picks a free one [default: {DEFAULT_UDP_PORT}].",
            show_default=False,
        ),
    ] = None,
    tcp_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            callback=_check_port,
            help=f"Chunk (TCP) port 0-65535; 0 picks a free one [default: {DEFAULT_TCP_PORT}].",
            show_default=False,
        ),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST:PORT",
            help="UDP address of a node to join through; repeatable.",
            show_default=False,
        ),
    ] = None,
    upload_limit: Annotated[
        str | None,
        typer.Option(
            metavar="RATE",
            help="Upload rate limit, e.g. 5MB/s or unlimited [default: unlimited].",
            show_default=False,
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Serve the HTTP gateway, API, status page and metrics here (port 0: a free"
            " one; docs/http.md) [default: off].",
            show_default=False,
        ),
    ] = None,
    download_limit: Annotated[
        str | None,
        typer.Option(
            metavar="RATE",
            help="Download rate limit all downloads share, e.g. 20MB/s or unlimited"
            " [default: unlimited].",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Run a node in the foreground until SIGINT/SIGTERM.

    Once listening it prints one line with its node ID and addresses (with --json, one JSON object
    with node_id, udp, tcp, and http when --http is on). Settings not given here come from
    p2pstore.toml in the data directory.
    """
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    try:
        peers = tuple(parse_host_port(b) for b in bootstrap or ())
    except ConfigError as exc:
        _bad("--bootstrap", str(exc))
    limit: int | None = None
    if upload_limit is not None:
        try:
            limit = parse_rate(upload_limit)
        except ConfigError as exc:
            _bad("--upload-limit", str(exc))
    directory = _data_dir(data_dir)
    try:
        check_data_dir(directory)  # before reading p2pstore.toml from it
        settings = load_settings(directory)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    if settings.log_level is not None:
        _apply_log_level(LOG_LEVELS[settings.log_level])
    settings = settings.merged(
        host=host, udp_port=udp_port, tcp_port=tcp_port, bootstrap=peers or None
    )
    if upload_limit is not None:
        settings = replace(settings, upload_limit=limit)
    if download_limit is not None:
        try:
            settings = replace(settings, download_limit=parse_rate(download_limit))
        except ConfigError as exc:
            _bad("--download-limit", str(exc))
    if http is not None:
        try:
            settings = replace(settings, http=parse_listen_address(http))
        except ConfigError as exc:
            _bad("--http", str(exc))
    given = {
        "host": host,
        "udp_port": udp_port,
        "tcp_port": tcp_port,
        "bootstrap": bootstrap or None,
        "upload_limit": upload_limit,
        "download_limit": download_limit,
        "http": http,
    }
    flags = {key: "--" + key.replace("_", "-") for key, value in given.items() if value is not None}
    _run_daemon(directory, settings, json_out, _settings_report(data_dir, settings, flags))


def _settings_report(
    flag: Path | None, settings: DaemonSettings, flags: dict[str, str]
) -> dict[str, Any]:
    """What ``p2pstore config`` shows of a daemon started with ``settings``: each one's value
    and where it came from (``flags``: the settings given on the command line, by flag)."""
    directory = _data_dir(flag)
    path = directory / CONFIG_FILE_NAME
    sources = {key: str(path) for key in _file_keys(path)} | flags
    rows = settings_rows(directory, _data_dir_source(flag), settings, sources)
    return {"settings": rows, "file": str(path), "pid": os.getpid()}


def _data_dir_source(flag: Path | None) -> str:
    """Where the data directory came from: the flag, the environment, or the platform."""
    if flag is not None and str(flag) != "":
        return "--data-dir"
    if os.environ.get(DATA_DIR_ENV):
        return f"${DATA_DIR_ENV}"
    return "platform default"


def _run_daemon(
    directory: Path,
    settings: DaemonSettings,
    json_out: bool,
    report: dict[str, Any] | None = None,
) -> None:
    import trio

    from .config import show_bound_ports
    from .daemon import ReadyInfo, run_daemon
    from .proctune import tune_process

    def ready(info: ReadyInfo) -> None:
        if report is not None:
            show_bound_ports(report, {"udp_port": info.udp[1], "tcp_port": info.tcp[1]})
        tune_process()  # start-up is done: freeze its heap, collect cycles less often
        line = json.dumps(info.as_json()) if json_out else info.as_text()
        print(line, flush=True)

    try:
        trio.run(functools.partial(run_daemon, settings_report=report), directory, settings, ready)
    except BaseException as exc:
        found = _user_error(exc)
        if found is None:
            raise
        code = EXIT_USAGE if isinstance(found, UnsafeDataDirError) else EXIT_FAILED
        _fail(f"daemon: {control.error_message(found)}", code)


# ----------------------------------------------------------------------------- put / get


_AmountColumn = clibar.AmountColumn
_RateColumn = clibar.RateColumn
_ProgressBar = clibar.ProgressBar


STDIN_BLOCK = cliput.STDIN_BLOCK
_PUT_PHASES = cliput.PUT_PHASES
_UNCOUNTED_PHASES = cliput.UNCOUNTED_PHASES


def _phased_call(
    data_dir: Path | None,
    op: str,
    args: dict[str, Any] | None,
    json_out: bool,
    names: dict[str, str],
    units: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`cliput.phased_call` (verify, check --repair), failures reported by :func:`_fail`."""
    with _failing():
        return cliput.phased_call(_invocation(data_dir, json_out), op, args, names, units)
    raise AssertionError("unreachable")  # pragma: no cover


_VERIFY_PHASES = {
    "hashing": "re-hashing",
    "spares": "checking manifest copies",
    "rebuilding": "rebuilding damaged stripes",
}
"""How each phase of verify is named on its progress bar."""

_REPAIR_PHASES = {"surveying": "asking holders", "rebuilding": "repairing"}
"""How each phase of check --repair is named on its progress bar."""


def _resolve_file(value: str, param: str, data_dir: Path | None) -> bytes:
    """A file named by a share link, a full ID, or a unique prefix of a local file's ID."""
    with _failing():
        return cliget.resolve_file(_invocation(data_dir, _STATE.json_errors), value, param)
    raise AssertionError("unreachable")  # pragma: no cover


_link_peer = cliget.link_peer
MIN_ID_PREFIX = cliget.MIN_ID_PREFIX


# ----------------------------------------------------------------------------- directories

_DIRECTORY_KEYS = cliput.DIRECTORY_KEYS


_KIND_MARK = {"dir": "/", "symlink": "", "file": ""}


def _ls_directory(
    data_dir: Path | None, dir_id: bytes, json_out: bool, peer: tuple[str, int] | None = None
) -> None:
    """``ls DIR_ID``: the tree of a directory, from its directory manifest alone (``peer``: a
    link's peer hint)."""
    args: dict[str, Any] = {"file_id": dir_id}
    if peer is not None:
        args["peer"] = list(peer)
    result = _call(data_dir, "ls_dir", args)
    if json_out:
        _emit_json(result)
        return
    entries = [e for e in result.get("entries") or [] if isinstance(e, dict)]
    rows = []
    for e in entries:
        kind = str(e.get("kind"))
        mode = e.get("mode")
        shown = str(e.get("path")) + _KIND_MARK.get(kind, "")
        if kind == "symlink":
            shown += f" -> {e.get('target')}"
        rows.append(
            [
                str(e.get("file_id") or ""),
                shown,
                format_size(int(e.get("size") or 0)) if kind == "file" else "",
                stat.filemode(int(mode) | _KIND_BITS[kind]) if isinstance(mode, int) else "",
            ]
        )
    title = (
        f"{_clean(str(result.get('name')))}/: {_counted(_count(result.get('files')), 'file')},"
        f" {format_size(int(result.get('size') or 0))}"
    )
    if not rows:
        typer.echo(f"{title} (empty)")
        return
    _table(title, ["file ID", "path", "size", "mode"], rows)


_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def _tree_action_text(result: dict[str, Any]) -> str:
    """What ``pin``/``unpin`` of a directory did to its tree (empty for a file)."""
    if not result.get("directory"):
        return ""
    name, files = _clean(str(result.get("name"))), _count(result.get("files"))
    changed, changed_bytes = _count(result.get("changed")), int(result.get("changed_bytes") or 0)
    verb = "pinned" if result.get("pinned") else "released"
    text = f": directory {name}/, {changed} of {_counted(files, 'file')} {verb}"
    text += f" ({format_size(changed_bytes)})"
    kept = _count(result.get("kept"))
    if kept:
        text += (
            f", {kept} kept ({format_size(int(result.get('kept_bytes') or 0))}: in another"
            " pinned directory, pinned on their own or held for other nodes)"
        )
    missing = _count(result.get("missing"))
    if missing:
        text += (
            f", {missing} not stored here ({format_size(int(result.get('missing_bytes') or 0))};"
            " get the directory to fetch them)"
        )
    return text


def _tree_health_lines(fid: bytes, result: dict[str, Any]) -> list[str]:
    """``check`` of a directory: the verdict, then the files in each state but healthy."""
    by_verdict = result.get("by_verdict")
    groups = by_verdict if isinstance(by_verdict, dict) else {}
    healthy = _count(groups.get("healthy"))
    lines = [
        f"{fid.hex()}: {result.get('verdict')} (directory {result.get('name')}/,"
        f" {_counted(_count(result.get('files')), 'file')} and its listing:"
        f" {healthy} healthy)"
    ]
    errors = result.get("errors")
    for state in ("degraded", "lost"):
        for path in groups.get(state) or []:
            shown = str(path) or "(the directory manifest)"
            why = errors.get(str(path)) if isinstance(errors, dict) else None
            lines.append(f"  {state + ':':10} {shown}" + (f" ({why})" if why else ""))
    repaired = result.get("repaired")
    if isinstance(repaired, list) and repaired:
        lines.append(f"  repaired:  {_counted(len(repaired), 'file')}")
    return lines


@app.command()
def put(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="The files to store, in order; - reads standard input (alone).",
            show_default=False,
        ),
    ],
    no_disperse: Annotated[
        bool,
        typer.Option(
            "--no-disperse", help="Keep the chunks here; only publish the file.", show_default=False
        ),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="The name recorded in the manifest (one FILE only) [default: FILE's name;"
            " stdin for -].",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Store each FILE, in order, and publish it through the running daemon; print one file ID
    per line (and a share link on stderr).

    FILE - reads standard input (then it must be the only FILE). A directory is stored with its
    whole tree under one directory ID: get ID fetches the tree, ls ID lists it.
    """
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    with _failing():
        cliput.run_put(_invocation(data_dir, json_out), files, no_disperse, name)


@app.command()
def cat(
    file_id: FileRefArg,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Write FILE_ID to standard output (as get FILE_ID -o -), in order while it downloads,
    every byte verified before it is written."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    with _failing():
        cliget.run_cat(_invocation(data_dir, json_out), file_id)


@app.command()
def get(
    file_id: FileRefArg,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Output file, or a directory to save into under the manifest's name (PATH/"
            " must exist), or - for standard output [default: the manifest's name, in the"
            " current directory].",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Download FILE_ID (an ID, a p2p:// share link, or a unique prefix of a local file's ID)
    through the daemon; the file is written only once complete and verified."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    with _failing():
        cliget.run_get(_invocation(data_dir, json_out), file_id, output)


# ----------------------------------------------------------------------------- queries


PIPE_WIDTH = cliview.PIPE_WIDTH
_counted = cliview.counted
_table = cliview.print_table


@app.command("ls")
def ls_(
    dir_id: Annotated[
        str | None,
        typer.Argument(
            metavar="DIR_ID",
            help="A directory's ID, link or unique prefix: list its tree (fetching only its"
            " directory manifest) instead of this node's files.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """List the files this node knows (stored, published or fetched), or the tree of the
    directory DIR_ID."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    if dir_id is not None:
        resolved = _resolve_file(dir_id, "DIR_ID", data_dir)
        _ls_directory(data_dir, resolved, json_out, _link_peer(dir_id))
        return
    cliview.show_files(_call(data_dir, "ls"), json_out)


@app.command()
def status(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Show the node ID, addresses, DHT contacts, open connections, stored bytes, files and
    the running transfers."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    cliview.show_status(_call(data_dir, "status"), json_out)


_transfer_rows = cliview.transfer_rows


@app.command()
def transfers(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """List the running transfers: ID (for cancel), kind, name, bytes, rate, peers, ETA."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    cliview.show_transfers(_call(data_dir, "status"), json_out)


@app.command()
def cancel(
    transfer_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="The transfer's number, as transfers lists it.", show_default=False
        ),
    ],
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Stop a running transfer (put, get, cat, verify, check/repair, a gateway read).

    The command that started it fails with "cancelled" (exit 5). It cleans up as a failed one:
    a put removes what it stored, a get keeps its verified chunks (get again resumes them)."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    text = transfer_id.strip()
    if not text.isdecimal() or not 0 < int(text) < 2**63:
        _bad(
            "ID",
            f"{_clean(transfer_id)!r} is not a transfer number; `p2pstore transfers` lists them",
        )
    result = _call(data_dir, "cancel", {"transfer": int(text)})
    if json_out:
        _emit_json(result)
    elif not _STATE.quiet:
        what = " ".join(str(result.get(k) or "") for k in ("kind", "name")).strip()
        typer.echo(f"cancelled transfer {int(text)}" + (f" ({_clean(what)})" if what else ""))


_contact_rows = cliview.contact_rows


@app.command()
def peers(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """List the contacts in the node's DHT routing table."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    cliview.show_peers(_call(data_dir, "peers"), json_out)


@app.command()
def providers(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY", help="A file ID or chunk ID (64 hex characters).", show_default=False
        ),
    ],
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Look up which nodes provide KEY in the DHT."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    raw = _resolve_file(key, "KEY", data_dir)  # a link or a local file's prefix too, as get
    result = _call(data_dir, "providers", {"key": raw})
    if json_out:
        _emit_json(result)
        return
    rows = _contact_rows(list(result.get("providers") or []), "tcp_port")
    if not rows:
        typer.echo("no providers found")
        return
    _table(
        f"{_counted(len(rows), 'provider')} of {raw.hex()[:16]}...",
        ["node ID", "host", "tcp port"],
        rows,
    )


@app.command()
def pin(
    file_id: FileIdArg,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Pin FILE_ID: its chunks are kept by gc."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    result = _call(data_dir, "pin", {"file_id": _resolve_file(file_id, "FILE_ID", data_dir)})
    _emit_json(result) if json_out else typer.echo(f"pinned {result.get('file_id')}"
                                                   + _tree_action_text(result))  # fmt: skip


@app.command()
def unpin(
    file_id: FileIdArg,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Unpin FILE_ID: gc may then remove its chunks."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    result = _call(data_dir, "unpin", {"file_id": _resolve_file(file_id, "FILE_ID", data_dir)})
    _emit_json(result) if json_out else typer.echo(f"unpinned {result.get('file_id')}"
                                                   + _tree_action_text(result))  # fmt: skip


@app.command()
def rm(
    file_id: FileRefArg,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Forget FILE_ID (an ID, link or unique prefix) here: unpin it, stop announcing it, and
    delete the chunks no other pinned file needs (this runs gc)."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    fid = _resolve_file(file_id, "FILE_ID", data_dir)
    unpinned = _call(data_dir, "unpin", {"file_id": fid})
    result = _call(data_dir, "gc")
    freed = int(result.get("freed_bytes") or 0)
    if json_out:
        outcome = {"file_id": fid.hex(), "removed": True, "freed_bytes": freed}
        _emit_json({**unpinned, **outcome} if unpinned.get("directory") else outcome)
    elif not _STATE.quiet:
        typer.echo(f"removed {fid.hex()}{_tree_action_text(unpinned)} (freed {format_size(freed)})")


@app.command()
def gc(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Remove chunks no pinned or local file needs; print the bytes freed."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    result = _call(data_dir, "gc")
    if json_out:
        _emit_json(result)
    else:
        typer.echo(f"freed {format_size(int(result.get('freed_bytes') or 0))}")


def _count(value: Any) -> int:
    if isinstance(value, list | dict):
        return len(value)
    return int(value) if isinstance(value, int) else 0


@app.command()
def verify(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Re-hash every stored chunk, repair what local copies allow; exit 1 if anything was
    found wrong or earlier damage is still unrepaired."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    result = _phased_call(data_dir, "verify", None, json_out, _VERIFY_PHASES)
    corrupt, missing = _count(result.get("corrupt")), _count(result.get("missing"))
    repaired, damaged = _count(result.get("repaired")), _count(result.get("damaged"))
    if json_out:
        _emit_json(result)
    else:
        typer.echo(
            f"checked {result.get('checked')} chunks: {corrupt} corrupt, {missing} missing,"
            f" {repaired} repaired, {damaged} still damaged"
        )
        files = result.get("damaged_files")
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, dict):
                fid, name = _clean(str(entry.get("file_id"))), _clean(str(entry.get("name")))
                typer.echo(
                    f"  {fid} {name}: {entry.get('chunks')} chunk(s) lost; repair with"
                    f" `p2pstore get {fid} -o PATH`, then verify again"
                )
    if corrupt or missing or damaged:
        raise typer.Exit(EXIT_FAILED)


def _ranges_text(value: Any) -> str:
    """``[[0, 3], [7, 7]]`` as ``0-3, 7``."""
    if not isinstance(value, list):
        return ""
    parts = []
    for item in value:
        if isinstance(item, list) and len(item) == 2:
            first, last = item
            parts.append(str(first) if first == last else f"{first}-{last}")
    return ", ".join(parts)


@app.command()
def check(
    file_id: FileIdArg,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild and place the missing shares of degraded stripes.",
            show_default=False,
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Report how many shares of each stripe of FILE_ID are reachable: healthy, degraded or lost.

    Exit 0 healthy, 3 degraded, 4 lost (after the repair, with --repair), 1 if it cannot be
    checked.
    """
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    fid = _resolve_file(file_id, "FILE_ID", data_dir)  # a link or a unique prefix, as get
    result = _phased_call(
        data_dir, "check", {"file_id": fid, "repair": repair}, json_out, _REPAIR_PHASES
    )
    verdict = result.get("verdict")
    if json_out:
        _emit_json(result)
    elif result.get("directory"):
        for line in _tree_health_lines(fid, result):
            typer.echo(_clean(line))
    else:
        holders = result.get("holders")
        lines = [
            f"{fid.hex()}: {verdict}",
            f"  stripes:      {result.get('stripes')} (k={result.get('k')}, m={result.get('m')})",
            f"  fewest:       {result.get('fewest')} shares reachable in a stripe;"
            f" the weakest can lose {result.get('margin')} more",
            f"  spread:       every stripe has {result.get('fewest_nodes')} or more shares on"
            " distinct nodes",
            f"  holders:      {_count(holders)} live"
            f" ({result.get('unreachable_providers')} provider(s) did not answer)",
        ]
        for state in ("degraded", "lost"):
            text = _ranges_text(result.get(state))
            if text:
                lines.append(f"  {state + ':':13} stripe(s) {text}")
        done = result.get("repair")
        if isinstance(done, dict):
            moved = int(done.get("bytes_fetched") or 0) + int(done.get("bytes_sent") or 0)
            placed = done.get("placed")
            lines.append(
                f"  repair:       {done.get('shares_rebuilt')} share(s) rebuilt in"
                f" {done.get('stripes_repaired')} stripe(s), placed on {_count(placed)} node(s),"
                f" {format_size(moved)} moved"
            )
            failed = done.get("failed_targets")
            if isinstance(failed, dict) and failed:
                lines.append(f"  failed:       {', '.join(str(k) for k in failed)}")
        for line in lines:
            typer.echo(_clean(line))
    if verdict == "lost":
        raise typer.Exit(EXIT_LOST)
    if verdict == "degraded":
        raise typer.Exit(EXIT_DEGRADED)


# ----------------------------------------------------------------------------- config


@app.command("config")
def config_(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Print the settings the running daemon of the data directory uses and where each came
    from (its flags, p2pstore.toml, the defaults); with no daemon running, those a daemon
    started now would use (file and defaults; its own flags would win over them)."""
    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    directory = _data_dir(data_dir)
    path = directory / CONFIG_FILE_NAME
    report: dict[str, Any] | None = None
    try:
        report = control.call_blocking(directory, "config")
    except (control.DaemonNotRunningError, control.ControlError, OSError):
        pass  # no daemon (or one too old to say): the file and the defaults
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except P2PStoreError as exc:
        _fail(control.error_message(exc), _exit_for(exc))
    rows = report.get("settings") if isinstance(report, dict) else None
    if isinstance(rows, list) and isinstance(report, dict):
        header = f"# the running daemon's settings (pid {report.get('pid')})"
    else:
        try:
            settings = load_settings(directory)
            given = _file_keys(path)
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
        sources = {key: str(path) for key in given}
        rows = settings_rows(directory, _data_dir_source(data_dir), settings, sources)
        header = (
            f"# no daemon is running for {directory}: the settings one started now would use"
            " (its own flags win over them)"
        )
    running = isinstance(report, dict) and isinstance(report.get("settings"), list)
    if json_out:
        _emit_json(
            {
                "settings": rows,
                "file": str(path),
                "file_exists": path.exists(),
                "daemon": running,
                "pid": report.get("pid") if running and report is not None else None,
            }
        )
        return
    typer.echo(_clean(header))
    good = [r for r in rows if isinstance(r, dict)]
    width = max(len(str(r.get("key"))) for r in good)
    for r in good:
        typer.echo(_clean(f"{r.get('key')!s:<{width}}  {r.get('value')}  ({r.get('source')})"))


def _file_keys(path: Path) -> set[str]:
    """The keys set in the settings file (already validated by ``load_settings``)."""
    import tomllib

    try:
        return set(tomllib.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return set()


_setting_text = setting_text


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    nodes: Annotated[
        int,
        typer.Option(
            metavar="N", help="How many nodes to start (3-32) [default: 5].", show_default=False
        ),
    ] = 5,
    size: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help="Size of the generated file, e.g. 4MiB [default: 32MiB].",
            show_default=False,
        ),
    ] = "32MiB",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Where to create the temporary node directories [default: system temp dir].",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
) -> None:
    """Run a whole network in this process: put a file on one node, stop it, fetch it on another.

    Needs no daemon. Exits 0 only if the fetched file verified.
    """
    import trio

    from .demo import MAX_NODES, MIN_NODES, print_report, run_demo

    data_dir, json_out = _setup(data_dir, json_out, verbose, quiet, log_json)
    try:
        nbytes = parse_size(size)
    except ConfigError as exc:
        _bad("--size", str(exc))
    if not MIN_NODES <= nodes <= MAX_NODES:
        _bad("--nodes", f"must be between {MIN_NODES} and {MAX_NODES}")
    if data_dir is not None and not data_dir.is_dir():
        _fail(f"no such directory: {data_dir}", EXIT_USAGE)
    console = Console(stderr=json_out)
    try:
        report = trio.run(
            lambda: run_demo(nodes=nodes, size=nbytes, console=console, workdir=data_dir)
        )
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except BaseException as exc:
        found = _user_error(exc)
        if found is None:
            raise
        _fail(f"demo: {control.error_message(found)}", _exit_for(found))
    if json_out:
        _emit_json(report.as_json())
    else:
        print_report(console, report)
    if not report.verified:
        raise typer.Exit(EXIT_FAILED)
