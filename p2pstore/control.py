"""The daemon's local control protocol: a Unix-domain socket inside the data directory.

The socket is ``<data dir>/control.sock``, mode 0600, so only the owner can drive the daemon.
Framing is the chunk protocol's (:mod:`p2pstore.wire.framing`: 4-byte big-endian length, then a
msgpack map). A conversation is a sequence of exchanges, each::

    client -> {"v": 1, "op": "<name>", "args": {...}}
    server -> zero or more {"type": "progress", "data": {...}}
    server -> exactly one  {"type": "result", "data": {...}}
           or exactly one  {"type": "error", "code": "<code>", "message": "<one line>"}

While an operation runs the server sends ``progress`` at most every :data:`PROGRESS_INTERVAL`
seconds when something changed, and at least every :data:`KEEPALIVE_INTERVAL` seconds, so a
client can tell a slow operation from a dead daemon. A client that disconnects mid-operation
cancels it (noticed at the next write, which is made at once when the client's EOF arrives).
A streaming operation (``cat``) also sends ``{"type": "data", "data": {"bytes": <bin>}}``
frames between its progress events: the file's bytes in order, each at most
:data:`MAX_DATA_BYTES`, written as the client reads them (back-pressure; a client that reads
nothing for :data:`DATA_SEND_TIMEOUT` seconds is taken as gone).
Requests may be pipelined; they are answered in order. A malformed, oversized or unknown request
gets one ``bad_request`` error and its connection is closed; the server and its other connections
carry on.

The wire format is split from the I/O: :func:`encode_message`, :func:`decode_message`,
:func:`parse_request` and :func:`parse_reply` are pure functions; :func:`serve_control` and
:func:`call` are the thin Trio layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import functools
import logging
import os
import random
import socket as _stdlib_socket
import string
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from ._lazy import lazy_module
from .errors import (
    ChunkNotFoundError,
    ConfigError,
    FileUnavailableError,
    ManifestError,
    NoSuchTransferError,
    NotDispersedError,
    NotEnoughSharesError,
    P2PStoreError,
    ProtocolError,
    QuotaExceededError,
    TransferCancelledError,
)
from .wire.framing import FrameDecoder, encode_frame

if TYPE_CHECKING:
    import trio
else:
    # The server and the async client need trio; the CLI's blocking client (call_blocking) does
    # not, and importing trio costs a command ~60 ms, so it is loaded on first use.
    trio = lazy_module("trio")

log = logging.getLogger(__name__)

CONTROL_SOCKET_NAME = "control.sock"
"""File name of the control socket inside the data directory."""

PROTOCOL_VERSION = 1
"""Version carried in every request; a daemon refuses versions it does not speak."""

MAX_REQUEST_BYTES = 64 * 1024
"""A request is an op name, a file ID and a path or two: 64 KiB is generous and cheap to buffer."""

MAX_REPLY_BYTES = 16 * 1024 * 1024
"""Replies list files or peers of a large node; 16 MiB bounds what a client will buffer."""

MAX_PATH_CHARS = 4096
"""Longest path accepted in a request (Linux PATH_MAX)."""

MAX_ERROR_CODE_CHARS = 64
"""Error codes are short identifiers."""

MAX_ERROR_MESSAGE_CHARS = 2000
"""Error messages are one line meant for a person; longer ones are truncated by the server."""

MAX_NESTING = 16
"""Reply data nests a few levels (status -> transfers -> peers); deeper is malformed."""

MAX_CONNECTIONS = 32
"""Concurrent control connections: a handful of CLIs at once; more is a runaway script."""

LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them (each is then served, or told
``busy`` at once)."""

BUSY_CODE = "busy"
"""Error code of the answer to a connection beyond :data:`MAX_CONNECTIONS`: nothing was done,
retry shortly. :func:`call` retries by itself for up to :data:`BUSY_RETRY_TIMEOUT` seconds."""

BUSY_RETRY_TIMEOUT = 15.0
"""Seconds :func:`call` keeps retrying an operation the daemon answered ``busy``."""

BUSY_RETRY_FIRST = 0.05
BUSY_RETRY_MAX = 1.0
"""First and longest pause between retries after ``busy`` (doubling, with jitter)."""

MAX_UNIX_PATH_BYTES = 107
"""``sun_path`` holds 108 bytes on Linux including the terminating NUL."""

PROGRESS_INTERVAL = 0.1
"""Seconds between progress events: smooth bars without flooding the socket."""

KEEPALIVE_INTERVAL = 2.0
"""Seconds after which a progress event is sent even if nothing changed (proof of life)."""

IDLE_TIMEOUT = 30.0
"""Seconds the server waits for a (next) request before closing a connection."""

SEND_TIMEOUT = 10.0
"""Seconds either side allows one message to be written before giving up on the peer."""

CONNECT_TIMEOUT = 5.0
"""Seconds the client allows to connect to the local socket (it is local: this means "hung")."""

STALL_TIMEOUT = 60.0
"""Seconds a client waits for the next event of a running operation (keepalives come every 2 s)."""

OP_TIMEOUT = 120.0
"""Whole-exchange deadline for every operation except put, get and verify (which may run long)."""

LONG_OPS = frozenset({"put", "get", "verify", "check", "cat"})
"""Operations with no overall deadline (they still stop if the daemon stops answering)."""

RECEIVE_SIZE = 64 * 1024
"""Bytes asked of the socket per read."""

MAX_DATA_BYTES = 256 * 1024
"""Largest ``bytes`` of one data frame (a streamed file is sent in pieces of at most this)."""

DATA_SEND_TIMEOUT = 300.0
"""Seconds a data frame may wait for the client to read (a pager held still, a slow pipe)
before the client is taken as gone and the stream cancelled."""


class DaemonNotRunningError(P2PStoreError):
    """No daemon is listening on the control socket of the data directory."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        super().__init__(f"no p2pstore daemon is running for {socket_path.parent}")


class DaemonAlreadyRunningError(P2PStoreError):
    """Another daemon already serves this data directory's control socket."""


class ControlError(P2PStoreError):
    """The daemon answered an operation with an error; ``code`` says which kind."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


# ----------------------------------------------------------------------------- wire format


@dataclass(frozen=True)
class Request:
    """A validated request: ``op`` is one of :data:`OPS`, ``args`` matches its schema."""

    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A validated server message: ``kind`` is progress, result or error.

    For progress and result, ``data`` is the payload map; for error, ``code`` and ``message``.
    """

    kind: str
    data: dict[str, Any]
    code: str = ""
    message: str = ""


def _file_id(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ProtocolError("expected a 32-byte ID")
    return value


def _abs_path(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATH_CHARS:
        raise ProtocolError(f"expected a path of 1-{MAX_PATH_CHARS} characters")
    if "\0" in value or not os.path.isabs(value):
        raise ProtocolError("expected an absolute path")
    return value


def _opt_abs_path(value: object) -> str | None:
    return None if value is None else _abs_path(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError("expected a boolean")
    return value


_Check = Callable[[object], object]

OPS: dict[str, dict[str, _Check]] = {
    "status": {},
    "peers": {},
    "ls": {},
    "gc": {},
    "verify": {},
    "providers": {"key": _file_id},
    "pin": {"file_id": _file_id},
    "unpin": {"file_id": _file_id},
    "put": {"path": _abs_path, "disperse": _bool},
    "get": {"file_id": _file_id, "dest": _opt_abs_path, "cwd": _abs_path},
    "check": {"file_id": _file_id, "repair": _bool},
}
"""Every operation and the exact argument names and checks it takes."""

OPTIONAL_ARGS: dict[str, frozenset[str]] = {"put": frozenset({"name"})}
"""Arguments of :data:`OPS` a request may leave out (then absent from ``Request.args``)."""


def _opt_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise ProtocolError("expected a file name of 1-255 characters")
    return value


OPS["put"]["name"] = _opt_name


def _opt_peer(value: object) -> tuple[str, int] | None:
    """A share link's peer hint: ``[host, port]``."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ProtocolError("expected [host, port]")
    host, port = value
    if not isinstance(host, str) or not 0 < len(host) <= 255 or "\0" in host:
        raise ProtocolError("expected a host name of 1-255 characters")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
        raise ProtocolError("expected a port 1-65535")
    return host, port


OPS["get"]["peer"] = _opt_peer
OPTIONAL_ARGS["get"] = OPTIONAL_ARGS.get("get", frozenset()) | {"peer"}


def _transfer_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ProtocolError("expected a transfer number (a positive integer)")
    return value


OPS["cat"] = {"file_id": _file_id, "peer": _opt_peer}
OPTIONAL_ARGS["cat"] = OPTIONAL_ARGS.get("cat", frozenset()) | {"peer"}
OPS["cancel"] = {"transfer": _transfer_id}

STREAM_OPS = frozenset({"cat"})
"""Operations whose answer includes ``data`` frames (see the module docstring)."""

CANCELLABLE_OPS = frozenset({"put", "get", "verify", "check", "cat"})
"""Operations run inside ``node.cancellable()``: ``cancel`` of their transfer stops them with
the error code ``cancelled``."""

_REPLY_KINDS = frozenset({"progress", "result", "error", "data"})


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One framed msgpack message (length prefix included), ready to write."""
    return encode_frame(msgpack.packb(message, use_bin_type=True))


def decode_message(frame: bytes | bytearray, *, max_bytes: int) -> dict[str, Any]:
    """Decode one frame's payload into a map with string keys.

    Raises :class:`ProtocolError` if it is larger than ``max_bytes``, not msgpack, not exactly one
    object, or not a map.
    """
    if len(frame) > max_bytes:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"undecodable message: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a map")
    if not all(isinstance(k, str) for k in obj):
        raise ProtocolError("message keys must be strings")
    return obj


def parse_request(message: Mapping[str, Any]) -> Request:
    """Validate a decoded request against :data:`OPS`; raises :class:`ProtocolError`."""
    if set(message) != {"v", "op", "args"}:
        raise ProtocolError("a request has exactly the keys v, op, args")
    if message["v"] != PROTOCOL_VERSION or isinstance(message["v"], bool):
        raise ProtocolError(f"unsupported control protocol version {message['v']!r}")
    op = message["op"]
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown operation {str(op)[:40]!r}")
    args = message["args"]
    if not isinstance(args, dict):
        raise ProtocolError("args must be a map")
    schema = OPS[op]
    optional = OPTIONAL_ARGS.get(op, frozenset())
    if not set(schema) - optional <= set(args) <= set(schema):
        raise ProtocolError(f"{op} takes exactly the arguments {sorted(schema)}")
    checked: dict[str, Any] = {}
    for name, check in schema.items():
        if name not in args:
            continue  # an optional argument left out
        try:
            checked[name] = check(args[name])
        except ProtocolError as exc:
            raise ProtocolError(f"{op}: argument {name}: {exc}") from None
    return Request(op, checked)


def make_request(op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The wire form of a request (validated first: a bad one raises :class:`ProtocolError`)."""
    message = {"v": PROTOCOL_VERSION, "op": op, "args": dict(args or {})}
    parse_request(message)
    return message


def _check_plain(value: object, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise ProtocolError("reply nested too deeply")
    if isinstance(value, dict):
        for v in value.values():
            _check_plain(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, depth + 1)
    elif value is not None and not isinstance(value, (str, int, float, bool, bytes)):
        raise ProtocolError(f"unexpected value of type {type(value).__name__} in reply")


def parse_reply(message: Mapping[str, Any]) -> Reply:
    """Validate a decoded server message; raises :class:`ProtocolError`."""
    kind = message.get("type")
    if kind not in _REPLY_KINDS:
        raise ProtocolError(f"unknown reply type {str(kind)[:40]!r}")
    if kind == "error":
        if set(message) != {"type", "code", "message"}:
            raise ProtocolError("an error has exactly the keys type, code, message")
        code, text = message["code"], message["message"]
        if not isinstance(code, str) or not 0 < len(code) <= MAX_ERROR_CODE_CHARS:
            raise ProtocolError("error code must be a short string")
        if not isinstance(text, str) or len(text) > MAX_ERROR_MESSAGE_CHARS:
            raise ProtocolError("error message must be a string")
        return Reply("error", {}, code, one_line(text))
    if set(message) != {"type", "data"} or not isinstance(message["data"], dict):
        raise ProtocolError(f"a {kind} has exactly the keys type, data (a map)")
    if kind == "data" and (
        set(message["data"]) != {"bytes"} or not isinstance(message["data"]["bytes"], bytes)
    ):
        raise ProtocolError("a data frame's data is exactly {bytes: <binary>}")
    _check_plain(message["data"])
    return Reply(str(kind), message["data"])


_PRINTABLE = frozenset(string.printable) - frozenset("\r\n\t\x0b\x0c")


def one_line(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """``text`` as one printable line: control characters become spaces, then it is truncated."""
    cleaned = "".join(
        c if (c in _PRINTABLE or (c.isprintable() and ord(c) > 127)) else " " for c in text
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def to_plain(obj: object, depth: int = 0) -> Any:
    """Convert a node result (dataclasses, named tuples, bytes, paths...) into msgpack-able data.

    Bytes become lower-case hex (IDs are shown as hex at every user interface), paths strings,
    tuples lists, dataclasses and named tuples maps of their fields (not of a dataclass's
    ``init=False`` fields: caches derived from the others, such as a contact's ID as an integer,
    which msgpack could not even encode).
    """
    if depth > MAX_NESTING:
        raise ValueError("result nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value, depth + 1)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_plain(getattr(obj, f.name), depth + 1)
            for f in dataclasses.fields(obj)
            if f.init
        }
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return {name: to_plain(getattr(obj, name), depth + 1) for name in obj._fields}
    if isinstance(obj, Mapping):
        return {
            (k.hex() if isinstance(k, bytes) else str(k)): to_plain(v, depth + 1)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v, depth + 1) for v in obj]
    public = (
        {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        if hasattr(obj, "__dict__")
        else {}
    )
    if public:
        return {k: to_plain(v, depth + 1) for k, v in public.items()}
    return str(obj)


# ----------------------------------------------------------------------------- server


class ControlledNode(Protocol):
    """What the control server needs from a node (``p2pstore.node.Node`` provides it)."""

    async def put(
        self,
        path: Path,
        *,
        disperse: bool = ...,
        name: str | None = ...,
        progress: Callable[[Any], None] | None = ...,
    ) -> bytes: ...

    async def get(
        self,
        file_id: bytes,
        dest: Path,
        *,
        progress: Callable[[Any], None] | None = ...,
        peer_hint: tuple[str, int] | None = ...,
    ) -> Any: ...

    async def find_providers(self, key: bytes) -> Sequence[Any]: ...

    def list_files(self) -> Sequence[Any]: ...

    def file_info(self, file_id: bytes) -> Any: ...

    def pin(self, file_id: bytes) -> None: ...

    def unpin(self, file_id: bytes) -> None: ...

    async def gc(self) -> int: ...

    async def verify(self, *, progress: Callable[[Any], None] | None = ...) -> Any: ...

    def status(self) -> Any: ...

    def peers(self) -> Sequence[Any]: ...

    async def check(self, file_id: bytes) -> Any: ...

    async def repair(
        self, file_id: bytes, *, progress: Callable[[Any], None] | None = ...
    ) -> Any: ...


Progress = Callable[[Any], None]
_Handler = Callable[[ControlledNode, dict[str, Any], Progress], Awaitable[dict[str, Any]]]


async def _op_status(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    data = to_plain(node.status())
    if not isinstance(data, dict):
        data = {"status": data}
    store = getattr(node, "store", None)
    if store is not None and "quota_bytes" not in data:
        quota = getattr(store, "quota_bytes", None)
        data["quota_bytes"] = quota if isinstance(quota, int) else None
    config = getattr(node, "config", None)
    for key in ("upload_limit", "download_limit"):  # bytes per second; None: unlimited
        if config is not None and key not in data:
            rate = getattr(config, key, None)
            data[key] = rate if isinstance(rate, (int, float)) else None
    return data


async def _op_peers(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    return {"peers": to_plain(list(node.peers()))}


async def _op_ls(node: ControlledNode, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    data: dict[str, Any] = {
        "files": await _marked_directories(node, to_plain(list(node.list_files())))
    }
    partial = getattr(getattr(node, "store", None), "partial_downloads", None)
    if callable(partial):
        data["partial"] = [
            {"file_id": fid.hex(), "chunks": chunks, "bytes": size}
            for fid, chunks, size in partial()
        ]
    return data


async def _op_gc(node: ControlledNode, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return {"freed_bytes": int(await node.gc())}


async def _op_verify(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    data = to_plain(await node.verify(progress=progress))
    return data if isinstance(data, dict) else {"report": data}


async def _op_providers(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    records = await node.find_providers(args["key"])
    return {
        "key": args["key"].hex(),
        "providers": [
            {"node_id": r.node_id.hex(), "host": r.host, "tcp_port": r.tcp_port} for r in records
        ],
    }


async def _op_pin(node: ControlledNode, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    tree = await _tree_pin(node, "pin_directory", args["file_id"])
    if tree is not None:
        return tree
    node.pin(args["file_id"])
    return {"file_id": args["file_id"].hex(), "pinned": True}


async def _op_unpin(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    tree = await _tree_pin(node, "unpin_directory", args["file_id"])
    if tree is not None:
        return tree
    node.unpin(args["file_id"])
    return {"file_id": args["file_id"].hex(), "pinned": False}


async def _op_put(node: ControlledNode, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    path = Path(args["path"])
    not_dispersed: str | None = None
    try:
        if args.get("name") is not None:
            file_id = await node.put(
                path, disperse=args["disperse"], name=args["name"], progress=progress
            )
        else:
            file_id = await node.put(path, disperse=args["disperse"], progress=progress)
    except NotDispersedError as exc:
        # Stored here but nowhere else: a result (the file ID is real), marked so that the CLI
        # fails the command; see NotDispersedError.
        file_id, not_dispersed = exc.file_id, str(exc)
    info = node.file_info(file_id)  # not list_files(): a put must not cost O(files stored)
    size = getattr(info, "size", None)
    return {
        "file_id": file_id.hex(),
        "size": size if isinstance(size, int) else path.stat().st_size,
        "chunks": getattr(info, "chunks_total", None),
        "name": getattr(info, "name", None),
        "dispersed": bool(args["disperse"]) and not_dispersed is None,
        "not_dispersed": not_dispersed,
    }


def safe_file_name(name: object, fallback: str) -> str:
    """A manifest's file name made safe to create in a chosen directory.

    The name comes from whoever stored the file, so only its last path component is kept, and
    empty, dot-only or hidden names (``.bashrc``) fall back to ``fallback``.
    """
    text = one_line(str(name or ""), 255).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not text or text.startswith(".") or "\0" in text:
        return fallback
    return text


def _refuse_existing(path: Path) -> None:
    """The CLI never overwrites: ``FileExistsError`` if ``path`` exists (or is a dangling link)."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(errno.EEXIST, "File exists (choose another path with -o)", str(path))


async def _op_get(node: ControlledNode, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    started_at = time.time()  # wall clock, so a client can place first_chunk_seconds on its own
    data = await _get_into(node, args, progress)
    data["started_at"] = started_at
    return data


async def _get_into(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    dest = Path(args["dest"]) if args["dest"] is not None else Path(args["cwd"])
    try:
        return await _get_into_path(node, args, dest, progress)
    except OSError as exc:
        raise _as_user_path(exc, dest) from None


def _as_user_path(exc: OSError, dest: Path) -> OSError:
    """The error with the user's output path in place of an internal temporary file's name
    (``.NAME.RANDOM.part`` beside it), which means nothing to them."""
    name = os.fspath(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else None
    if name is None and exc.filename is None and exc.errno is not None:
        # A write that names no file (a full disk, say): it was the output's.
        return type(exc)(exc.errno, exc.strerror, os.fspath(dest))
    parent = dest if dest.is_dir() else dest.parent
    if name is None or Path(name).parent != parent or not Path(name).name.startswith("."):
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(dest))


async def _get_into_path(
    node: ControlledNode, args: dict[str, Any], dest: Path, progress: Progress
) -> dict[str, Any]:
    file_id: bytes = args["file_id"]
    hint = {"peer_hint": args["peer"]} if args.get("peer") else {}  # only a hint (peerhint.py)
    if not dest.is_dir():
        _refuse_existing(dest)  # before downloading anything
        data = to_plain(await node.get(file_id, dest, progress=progress, **hint))
        return data if isinstance(data, dict) else {"result": data}
    # A directory: the file gets the manifest's name, known before the download only if the
    # file is already known here; otherwise it is checked again once the download has it.
    known = node.file_info(file_id)
    if known is not None:
        _refuse_existing(dest / safe_file_name(getattr(known, "name", None), file_id.hex()))
    from .directories import private_part  # daemon side only: keeps the client light

    partial = private_part(dest, file_id)
    try:
        data = to_plain(await node.get(file_id, partial, progress=progress, **hint))
        info = node.file_info(file_id)
        final = dest / safe_file_name(getattr(info, "name", None), file_id.hex())
        _refuse_existing(final)
        os.rename(partial, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    if not isinstance(data, dict):
        data = {"result": data}
    data["path"] = os.fspath(final)
    return data


async def _op_check(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The file's health (after the repair, with ``repair``: then ``repair`` says what it did)."""
    tree = await _tree_check(node, args["file_id"], args["repair"])
    if tree is not None:
        return tree
    if not args["repair"]:
        data: dict[str, Any] = (await node.check(args["file_id"])).as_report()
        return data
    report = await node.repair(args["file_id"], progress=progress)
    data = report.after.as_report()
    data["repair"] = report.as_report()
    return data


_HANDLERS: dict[str, _Handler] = {
    "status": _op_status,
    "peers": _op_peers,
    "ls": _op_ls,
    "gc": _op_gc,
    "verify": _op_verify,
    "providers": _op_providers,
    "pin": _op_pin,
    "unpin": _op_unpin,
    "put": _op_put,
    "get": _op_get,
    "check": _op_check,
}


async def _op_cancel(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    cancel = getattr(node, "cancel_transfer", None)
    if cancel is None:
        raise ConfigError("this node cannot cancel transfers")
    transfer = cancel(args["transfer"])
    return {
        "transfer": args["transfer"],
        "kind": getattr(transfer, "kind", None),
        "name": getattr(transfer, "name", None),
        "cancelled": True,
    }


_HANDLERS["cancel"] = _op_cancel

SendData = Callable[[bytes], Awaitable[None]]
_StreamHandler = Callable[
    [ControlledNode, dict[str, Any], Progress, SendData], Awaitable[dict[str, Any]]
]


async def _op_cat(
    node: ControlledNode, args: dict[str, Any], progress: Progress, send_data: SendData
) -> dict[str, Any]:
    """The file's bytes in order as data frames, while it downloads (``Node.stream_file``)."""
    stream_file = getattr(node, "stream_file", None)
    if stream_file is None:
        raise ConfigError("this node cannot stream files")

    async def send(data: bytes) -> None:
        view = memoryview(data)
        for pos in range(0, len(view), MAX_DATA_BYTES):
            await send_data(bytes(view[pos : pos + MAX_DATA_BYTES]))

    hint = {"peer_hint": args["peer"]} if args.get("peer") else {}  # only a hint (peerhint.py)
    data = to_plain(await stream_file(args["file_id"], send, progress=progress, **hint))
    return data if isinstance(data, dict) else {"result": data}


_STREAM_HANDLERS: dict[str, _StreamHandler] = {"cat": _op_cat}
assert set(_HANDLERS) | set(_STREAM_HANDLERS) == set(OPS)
assert set(_STREAM_HANDLERS) == STREAM_OPS


# ----------------------------------------------------------------------------- directories


class DirectoryNode(Protocol):
    """What the directory operations need beyond :class:`ControlledNode`."""

    async def put_directory(
        self,
        path: Path,
        *,
        disperse: bool = ...,
        name: str | None = ...,
        progress: Callable[[Any], None] | None = ...,
    ) -> Any: ...

    async def fetch_listing(
        self,
        dir_id: bytes,
        *,
        peer_hint: tuple[str, int] | None = ...,
        progress: Callable[[Any], None] | None = ...,
        label: str | None = ...,
    ) -> Any: ...

    async def get_directory(
        self,
        dir_id: bytes,
        dest: Path,
        *,
        listing: Any = ...,
        progress: Callable[[Any], None] | None = ...,
        peer_hint: tuple[str, int] | None = ...,
    ) -> Any: ...


def _directory_node(node: ControlledNode) -> DirectoryNode:
    if not all(hasattr(node, m) for m in ("put_directory", "fetch_listing", "get_directory")):
        raise ProtocolError("this node does not handle directories")
    return node  # type: ignore[return-value]


async def _op_put_dir(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """``put`` of a directory: its files, then its directory manifest, whose ID is returned."""
    path = Path(args["path"])
    result = await _directory_node(node).put_directory(
        path, disperse=args["disperse"], name=args.get("name"), progress=progress
    )
    return {
        "directory": True,
        "file_id": result.file_id.hex(),
        "name": result.name,
        "size": result.size,
        "files": result.files,
        "directories": result.directories,
        "symlinks": result.symlinks,
        "chunks": None,
        "skipped": [{"path": p, "reason": why} for p, why in result.skipped],
        "dispersed": bool(args["disperse"]) and result.not_dispersed is None,
        "not_dispersed": result.not_dispersed,
    }


async def _op_get_dir(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """``get`` of an ID that may be a directory or a file, downloaded once
    (``Node.get_file_or_directory``): a tree is saved to ``dest`` (or under its name in
    ``dest`` if that is an existing directory, or in ``cwd``), ``directory`` true; a file as
    ``get`` saves it, with ``get``'s result and ``directory`` false. An existing target is
    refused before anything is fetched (once the manifest names it, if ``dest`` does not).
    ``{"directory": false}`` alone: this node has no directories (then ``get`` the file)."""
    get_any = getattr(node, "get_file_or_directory", None)
    if get_any is None:
        return {"directory": False}  # a node without directories: every ID is a file
    started_at = time.time()
    dest = Path(args["dest"]) if args["dest"] is not None else None
    if dest is not None and not dest.is_dir():
        _refuse_existing(dest)  # a tree or a file: never over it, before fetching
    hint = {"peer_hint": args["peer"]} if args.get("peer") else {}  # only a hint (peerhint.py)
    label = dest.name if dest is not None and not dest.is_dir() else None
    try:
        result = await get_any(
            args["file_id"],
            lambda name: directory_target(args, name),
            progress=progress,
            label=label,
            **hint,
        )
    except OSError as exc:
        # Name the user's destination, not a hidden file or tree being built beside it.
        target = directory_target(args, args["file_id"].hex())
        raise _as_user_path(_as_user_tree_path(exc, target), target) from None
    data: dict[str, Any] = to_plain(result)
    data["directory"] = not hasattr(result, "resumed_chunks")  # a GetResult is a file's
    if not data["directory"]:
        data["started_at"] = started_at
    return data


def directory_target(args: dict[str, Any], name: str) -> Path:
    """Where ``get_dir`` saves something whose manifest names it ``name``: ``dest`` itself, or
    ``dest/NAME`` if ``dest`` is an existing directory, or ``cwd/NAME`` without ``dest``
    (``NAME`` made safe: :func:`safe_file_name`)."""
    dest = args["dest"]
    if dest is not None and not Path(dest).is_dir():
        return Path(dest)
    parent = Path(dest) if dest is not None else Path(args["cwd"])
    return parent / safe_file_name(name, args["file_id"].hex())


def _as_user_tree_path(exc: OSError, target: Path) -> OSError:
    name = os.fspath(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else ""
    if name.startswith(os.fspath(target.parent / f".{target.name}.")):
        return type(exc)(exc.errno, exc.strerror, os.fspath(target))
    return exc


def listing_as_plain(listing: Any) -> dict[str, Any]:
    """A :class:`~p2pstore.directory.DirectoryListing` as reply data (IDs in hex)."""
    kinds = {0: "file", 1: "dir", 2: "symlink"}
    entries = []
    for e in listing.entries:
        entry: dict[str, Any] = {"path": e.path, "kind": kinds[int(e.kind)]}
        if int(e.kind) == 0:
            entry.update(mode=e.mode, size=e.size, file_id=e.file_id.hex())
        elif int(e.kind) == 1:
            entry.update(mode=e.mode)
        else:
            entry.update(target=e.target)
        entries.append(entry)
    return {
        "name": listing.name,
        "mode": listing.mode,
        "files": len(listing.files()),
        "size": listing.total_size,
        "entries": entries,
    }


async def _op_ls_dir(
    node: ControlledNode, args: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The directory manifest of ``file_id`` (fetched alone: none of the tree's files);
    ``peer``, a link's peer hint, is tried as for ``get``."""
    hint = {"peer_hint": args["peer"]} if args.get("peer") else {}  # only a hint (peerhint.py)
    listing = await _directory_node(node).fetch_listing(args["file_id"], **hint)
    return {"file_id": args["file_id"].hex(), **listing_as_plain(listing)}


async def _marked_directories(node: ControlledNode, files: Any) -> Any:
    """``ls``'s file entries, each with ``directory``: whether it is a directory's listing."""
    directory_ids = getattr(node, "directory_ids", None)
    if directory_ids is None or not isinstance(files, list):
        return files
    ids = {fid.hex() for fid in await directory_ids()}
    for entry in files:
        if isinstance(entry, dict):
            entry["directory"] = entry.get("file_id") in ids
    return files


async def _tree_pin(node: ControlledNode, method: str, file_id: bytes) -> dict[str, Any] | None:
    """``pin``/``unpin`` of a directory stored here: the whole tree (``Node.pin_directory``,
    ``Node.unpin_directory``), with what it did; ``None`` for any other file."""
    act = getattr(node, method, None)
    action = await act(file_id) if act is not None else None
    if action is None:
        return None
    data: dict[str, Any] = to_plain(action)
    data["directory"] = True
    return data


async def _tree_check(node: ControlledNode, file_id: bytes, repair: bool) -> dict[str, Any] | None:
    """``check`` of a directory stored here: its listing and every file of the tree."""
    check = getattr(node, "check_directory", None)
    health = await check(file_id, repair=repair) if check is not None else None
    if health is None:
        return None
    data: dict[str, Any] = to_plain(health)
    data["directory"] = True
    return data


OPS["put_dir"] = {"path": _abs_path, "disperse": _bool, "name": _opt_name}
OPTIONAL_ARGS["put_dir"] = frozenset({"name"})
OPS["get_dir"] = {
    "file_id": _file_id,
    "dest": _opt_abs_path,
    "cwd": _abs_path,
    "peer": _opt_peer,
}
OPTIONAL_ARGS["get_dir"] = frozenset({"peer"})
OPS["ls_dir"] = {"file_id": _file_id, "peer": _opt_peer}
OPTIONAL_ARGS["ls_dir"] = frozenset({"peer"})
_HANDLERS.update(put_dir=_op_put_dir, get_dir=_op_get_dir, ls_dir=_op_ls_dir)


async def _op_config(
    node: ControlledNode,
    args: dict[str, Any],
    progress: Progress,
    *,
    report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings report the daemon was started with (``serve_control(settings_report=)``):
    ``{"settings": [{key, value, source}], "file": path, "pid": int}``."""
    if report is None:
        raise ConfigError("this daemon does not report its settings")
    return dict(report)


OPS["config"] = {}  # the settings the daemon runs with, and where each came from
_HANDLERS["config"] = _op_config  # the server binds its report (ControlServer.settings_report)
assert set(_HANDLERS) | set(_STREAM_HANDLERS) == set(OPS)
LONG_OPS = LONG_OPS | {"put_dir", "get_dir", "ls_dir"}
CANCELLABLE_OPS = CANCELLABLE_OPS | {"put_dir", "get_dir"}
assert set(_HANDLERS) | set(_STREAM_HANDLERS) == set(OPS)


async def perform(
    node: ControlledNode,
    op: str,
    args: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one operation exactly as the control server does (same checks, same result data), for
    other local faces of the daemon (the HTTP JSON API). Raises :class:`ProtocolError` for bad
    arguments and whatever the operation raises (map it with :func:`error_code`)."""
    request = parse_request(make_request(op, args))
    if op in STREAM_OPS:
        raise ProtocolError(f"{op} streams data frames: only the control socket serves it")
    with _cancellable(node, op):
        return await _HANDLERS[op](node, request.args, progress or (lambda _update: None))


def _cancellable(node: ControlledNode, op: str) -> contextlib.AbstractContextManager[None]:
    """``node.cancellable()`` for the operations in :data:`CANCELLABLE_OPS` (a node without
    it, such as a test double, runs them as they are)."""
    cancellable = getattr(node, "cancellable", None)
    if op in CANCELLABLE_OPS and cancellable is not None:
        scope: contextlib.AbstractContextManager[None] = cancellable()
        return scope
    return contextlib.nullcontext()


def error_code(exc: BaseException) -> str:
    """The control-protocol error code for an exception an operation raised."""
    if isinstance(exc, (ChunkNotFoundError, FileNotFoundError)):
        return "not_found"
    if isinstance(exc, (FileUnavailableError, NotEnoughSharesError)):
        return "unavailable"
    if isinstance(exc, ManifestError):
        return "bad_manifest"
    if isinstance(exc, QuotaExceededError):
        return "quota"
    if isinstance(exc, TransferCancelledError):
        return "cancelled"
    if isinstance(exc, NoSuchTransferError):
        return "not_found"
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, OSError):
        return "os"
    if isinstance(exc, P2PStoreError):
        return "failed"
    return "internal"


def error_message(exc: BaseException) -> str:
    """A one-line human message for an exception an operation raised."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    text = str(exc) or type(exc).__name__
    return one_line(text)


class _ClientGone(Exception):
    """The client disconnected or misbehaved during an operation."""


class _Connection:
    """One accepted stream plus its frame decoder; reads and writes whole messages."""

    def __init__(self, stream: trio.abc.Stream, max_incoming: int) -> None:
        self.stream = stream
        self.max_incoming = max_incoming
        self.decoder = FrameDecoder(max_incoming)
        self.eof = False
        self.error: ProtocolError | None = None

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or ``None`` on a clean EOF between messages.

        Raises :class:`ProtocolError` on malformed or oversized input or EOF mid-frame.
        """
        while True:
            if self.error is not None:
                raise self.error
            frame = self.decoder.next_frame()
            if frame is not None:
                return decode_message(frame, max_bytes=self.max_incoming)
            if self.eof:
                if self.decoder.in_frame:
                    raise ProtocolError("connection closed in the middle of a message")
                return None
            await self.read_more()

    async def read_more(self) -> None:
        """Read once from the stream into the decoder; records EOF and framing errors."""
        data = await self.stream.receive_some(RECEIVE_SIZE)
        if not data:
            self.eof = True
            return
        try:
            self.decoder.receive_data(bytes(data))
        except ProtocolError as exc:
            self.error = exc

    async def read_ahead(self, eof_seen: Callable[[], None]) -> None:
        """Buffer what the client sends while an operation runs (pipelined requests), up to one
        request's worth, then stop reading (backpressure). Calls ``eof_seen`` on EOF."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while (
                not self.eof and self.error is None and self.decoder.buffered <= self.max_incoming
            ):
                await self.read_more()
        if self.eof or self.error is not None:
            eof_seen()

    async def send(self, message: Mapping[str, Any], within: float = SEND_TIMEOUT) -> None:
        """Write one message within ``within`` seconds (raises ``trio.TooSlowError`` after)."""
        with trio.fail_after(within):
            await self.stream.send_all(encode_message(message))


class ControlServer:
    """Serves control connections for one node; :meth:`handle` is the per-connection task.

    ``protocol_errors`` counts connections closed for malformed input, ``busy_refusals`` those
    answered ``busy`` because ``max_connections`` were open.
    """

    def __init__(
        self,
        node: ControlledNode,
        *,
        max_connections: int = MAX_CONNECTIONS,
        settings_report: Mapping[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.settings_report = settings_report
        """What the ``config`` operation answers (the daemon's settings and their sources)."""
        self.max_connections = max_connections
        self.active = 0
        self.protocol_errors = 0
        self.busy_refusals = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve requests on ``stream`` until EOF, idleness, a protocol error or cancellation.

        Never raises for anything the client does; the stream is closed on return.
        """
        async with stream:
            if self.active >= self.max_connections:
                # Say so rather than just closing: the client can tell "busy, retry" from a
                # daemon that died, and nothing was started, so retrying is safe.
                self.busy_refusals += 1
                log.info("control: busy (%d connections open), a client must retry", self.active)
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
                ):
                    await _Connection(stream, MAX_REQUEST_BYTES).send(
                        {
                            "type": "error",
                            "code": BUSY_CODE,
                            "message": f"the daemon is serving {self.active} control connections"
                            " already; retry shortly",
                        }
                    )
                return
            self.active += 1
            try:
                await self._serve(_Connection(stream, MAX_REQUEST_BYTES))
            finally:
                self.active -= 1

    async def _serve(self, conn: _Connection) -> None:
        try:
            while True:
                message = None
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    message = await conn.receive()
                if idle.cancelled_caught:
                    log.debug("control: closing an idle connection")
                    return
                if message is None:
                    return
                request = parse_request(message)
                log.debug("control: %s", request.op)
                await self._run(conn, request)
        except ProtocolError as exc:
            self.protocol_errors += 1
            log.warning("control: bad request, closing the connection: %s", exc)
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
            ):
                await conn.send(
                    {"type": "error", "code": "bad_request", "message": one_line(str(exc))}
                )
        except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            log.debug("control: client went away")

    async def _run(self, conn: _Connection, request: Request) -> None:
        handler = _HANDLERS.get(request.op)
        if request.op == "config":
            handler = functools.partial(_op_config, report=self.settings_report)
        latest: list[Any] = []
        dirty = False
        outcome: dict[str, Any] = {}
        done = trio.Event()
        gone = False
        send_lock = trio.Lock()  # data frames (write_data) and progress (below) interleave
        op_scope = trio.CancelScope()
        # Data frames are written by their own task, outside the operation's cancel scope: a
        # cancelled operation never leaves half a frame on the wire. The unbuffered channel is
        # the back-pressure (the operation waits until the writer takes each piece).
        data_out, data_in = trio.open_memory_channel[bytes](0)
        writer_done = trio.Event()

        async def send_data(piece: bytes) -> None:
            await data_out.send(piece)

        async def write_data() -> None:
            nonlocal gone
            try:
                async for piece in data_in:
                    async with send_lock:
                        try:
                            await conn.send(
                                {"type": "data", "data": {"bytes": piece}}, DATA_SEND_TIMEOUT
                            )
                        except (
                            trio.BrokenResourceError,
                            trio.ClosedResourceError,
                            trio.TooSlowError,
                        ):
                            gone = True  # the client went away: the operation is cancelled
                            op_scope.cancel()
                            return
            finally:
                data_in.close()
                writer_done.set()

        def progress(update: Any) -> None:
            nonlocal dirty
            latest[:] = [update]
            dirty = True

        async def run_op() -> None:
            try:
                with op_scope, _cancellable(self.node, request.op):
                    if handler is not None:
                        data = await handler(self.node, request.args, progress)
                    else:
                        stream = _STREAM_HANDLERS[request.op]
                        data = await stream(self.node, request.args, progress, send_data)
                if op_scope.cancelled_caught:
                    return  # the client went away while data was sent: nobody to answer
                outcome.update(type="result", data=data)
            except Exception as exc:
                if isinstance(exc, (P2PStoreError, OSError)):
                    log.info("control: %s failed: %s", request.op, exc)
                else:
                    log.exception("control: %s failed unexpectedly", request.op)
                outcome.update(type="error", code=error_code(exc), message=error_message(exc))
            finally:
                data_out.close()
                done.set()

        probe = False

        def eof_seen() -> None:
            # Half-closed or gone? A write tells: it fails at once if the client has closed.
            nonlocal probe
            probe = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_op)
            nursery.start_soon(conn.read_ahead, eof_seen)
            if handler is None:
                nursery.start_soon(write_data)
            else:
                writer_done.set()
            last_sent = trio.current_time()
            while True:
                with trio.move_on_after(PROGRESS_INTERVAL):
                    await done.wait()
                if done.is_set():
                    break
                if dirty or probe or trio.current_time() - last_sent >= KEEPALIVE_INTERVAL:
                    dirty = probe = False
                    try:
                        data = to_plain(latest[0]) if latest else {}
                    except ValueError:
                        data = {}
                    try:
                        async with send_lock:
                            await conn.send(
                                {"type": "progress", "data": data if isinstance(data, dict) else {}}
                            )
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                        gone = True
                        break
                    last_sent = trio.current_time()
            if not gone:
                await writer_done.wait()  # the last data frames go out whole, before the answer
            if not gone and dirty and outcome.get("type") == "result":
                # The final state (a put's "30/30 chunks") reaches the bar before the result.
                try:
                    final = to_plain(latest[0]) if latest else {}
                except ValueError:
                    final = {}
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
                ):
                    async with send_lock:
                        await conn.send(
                            {"type": "progress", "data": final if isinstance(final, dict) else {}}
                        )
            nursery.cancel_scope.cancel()
        if gone:
            raise _ClientGone
        try:
            encode_message(outcome)
        except (TypeError, ValueError, OverflowError):
            log.exception("control: cannot encode the result of %s", request.op)
            outcome = {"type": "error", "code": "internal", "message": "unencodable result"}
        await conn.send(outcome)


def control_socket_path(data_dir: Path) -> Path:
    """Where the control socket of ``data_dir`` lives."""
    return data_dir / CONTROL_SOCKET_NAME


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise ConfigError(
            f"control socket path {path} is longer than {MAX_UNIX_PATH_BYTES} bytes;"
            " use a shorter --data-dir"
        )


async def _socket_is_live(path: Path) -> bool:
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_unix_socket(os.fspath(path))
    except (OSError, trio.TooSlowError):
        return False
    await stream.aclose()
    return True


async def bind_control_socket(path: Path) -> trio.socket.SocketType:
    """Create, bind (mode 0600) and listen on the control socket at ``path``.

    A stale socket file left by a crashed daemon is replaced. Raises
    :class:`DaemonAlreadyRunningError` if a live daemon answers there, :class:`ConfigError` if the
    path is too long for a Unix socket, ``OSError`` if it cannot be bound.
    """
    _check_socket_path(path)
    if path.exists() or path.is_symlink():
        if await _socket_is_live(path):
            raise DaemonAlreadyRunningError(
                f"a p2pstore daemon is already running for {path.parent}"
            )
        path.unlink()
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # born 0600: no window in which others may connect
        try:
            await sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_control(
    node: ControlledNode,
    data_dir: Path,
    *,
    task_status: trio.TaskStatus[Path] | None = None,
    settings_report: Mapping[str, Any] | None = None,
) -> None:
    """Serve ``node`` on ``data_dir``'s control socket until cancelled; one task per connection.
    ``settings_report`` is what the ``config`` operation answers (None: it is refused).

    ``task_status.started(socket_path)`` is called once the socket accepts connections. On exit
    (cancellation included) every connection task is cancelled and the socket file removed.
    Raises what :func:`bind_control_socket` raises before starting.
    """
    path = control_socket_path(data_dir)
    sock = await bind_control_socket(path)
    server = ControlServer(node, settings_report=settings_report)
    identity = os.stat(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, server.handle, [trio.SocketListener(sock)])
            log.info("control socket listening at %s", path)
            if task_status is not None:
                task_status.started(path)
    finally:
        with contextlib.suppress(OSError):
            current = os.stat(path)
            if (current.st_ino, current.st_dev) == (identity.st_ino, identity.st_dev):
                path.unlink()


# ----------------------------------------------------------------------------- client


async def _connect(path: Path) -> trio.SocketStream:
    _check_socket_path(path)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            return await trio.open_unix_socket(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        raise DaemonNotRunningError(path) from None
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.ENOENT):
            raise DaemonNotRunningError(path) from None
        raise ControlError("connect", f"cannot connect to {path}: {exc.strerror or exc}") from None
    except trio.TooSlowError:
        raise ControlError(
            "timeout", f"the daemon at {path} did not accept the connection"
        ) from None


async def call(
    data_dir: Path,
    op: str,
    args: Mapping[str, Any] | None = None,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """Run one operation on the daemon of ``data_dir`` and return its result data.

    ``on_data`` receives the bytes of each data frame of a streaming operation (:data:`STREAM_OPS`;
    required for them, and a data frame without it is a protocol error).

    ``on_progress`` is called with each progress event's data (keepalives carry ``{}``). Raises
    :class:`DaemonNotRunningError` when nothing listens, :class:`ControlError` for an error reply
    (``code`` from the daemon), a timeout (``code="timeout"``) or a daemon that went away or
    answered nonsense (``code="disconnected"``/``"protocol"``). Operations not in :data:`LONG_OPS`
    must finish within :data:`OP_TIMEOUT`; long ones only need an event every :data:`STALL_TIMEOUT`.
    Cancelling the call closes the connection, which cancels the operation in the daemon.
    A ``busy`` answer (the daemon has :data:`MAX_CONNECTIONS` open; nothing was done) is retried
    with backoff for up to :data:`BUSY_RETRY_TIMEOUT` seconds before it is raised
    (``code="busy"``).
    """
    message = make_request(op, args)
    give_up = trio.current_time() + BUSY_RETRY_TIMEOUT
    pause = BUSY_RETRY_FIRST
    while True:
        try:
            return await _call_once(data_dir, op, message, on_progress, on_data)
        except ControlError as exc:
            if exc.code != BUSY_CODE or trio.current_time() + pause > give_up:
                raise
        await trio.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, BUSY_RETRY_MAX)


async def _call_once(
    data_dir: Path,
    op: str,
    message: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], None] | None,
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    path = control_socket_path(data_dir)
    stream = await _connect(path)
    deadline = trio.current_time() + OP_TIMEOUT if op not in LONG_OPS else float("inf")
    async with stream:
        conn = _Connection(stream, MAX_REPLY_BYTES)
        try:
            # A busy daemon may answer and close before reading: its answer is still readable.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await conn.send(message)
            while True:
                with trio.move_on_at(min(deadline, trio.current_time() + STALL_TIMEOUT)):
                    incoming = await conn.receive()
                    if incoming is None:
                        raise ControlError("disconnected", "the daemon closed the connection")
                    reply = parse_reply(incoming)
                    if reply.kind == "result":
                        return reply.data
                    if reply.kind == "error":
                        raise ControlError(reply.code, reply.message)
                    if reply.kind == "data":
                        _deliver(reply, on_data)
                    elif on_progress is not None and reply.data:
                        on_progress(reply.data)
                    continue
                raise ControlError("timeout", f"the daemon did not answer {op} in time")
        except ProtocolError as exc:
            raise ControlError("protocol", f"unexpected answer from the daemon: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ControlError("disconnected", "the daemon closed the connection") from None
        except trio.TooSlowError:
            raise ControlError("timeout", "the daemon stopped reading requests") from None


def _deliver(reply: Reply, on_data: Callable[[bytes], None] | None) -> None:
    """Hand a data frame's bytes to ``on_data`` (the caller writes them out: a slow writer is
    the back-pressure on the daemon)."""
    if on_data is None:
        raise ProtocolError("a data frame answered an operation that streams nothing")
    on_data(reply.data["bytes"])


def call_blocking(
    data_dir: Path,
    op: str,
    args: Mapping[str, Any] | None = None,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_data: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """:func:`call` for synchronous programs such as the CLI: a plain blocking socket, no event
    loop, so a command that only talks to the daemon never imports trio.

    Same request, replies, errors and deadlines as :func:`call`. Interrupting it (Ctrl-C) closes
    the connection, which cancels the operation in the daemon.
    """
    message = make_request(op, args)
    path = control_socket_path(data_dir)
    _check_socket_path(path)
    with _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise DaemonNotRunningError(path) from None
        except TimeoutError:
            raise ControlError(
                "timeout", f"the daemon at {path} did not accept the connection"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.ENOENT):
                raise DaemonNotRunningError(path) from None
            raise ControlError(
                "connect", f"cannot connect to {path}: {exc.strerror or exc}"
            ) from None
        deadline = time.monotonic() + OP_TIMEOUT if op not in LONG_OPS else float("inf")
        decoder = FrameDecoder(MAX_REPLY_BYTES)
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(encode_message(message))
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    wait = min(deadline - time.monotonic(), STALL_TIMEOUT)
                    if wait <= 0:
                        raise TimeoutError
                    sock.settimeout(wait)
                    data = sock.recv(RECEIVE_SIZE)
                    if not data:
                        if decoder.in_frame:
                            raise ProtocolError("connection closed in the middle of a message")
                        raise ControlError("disconnected", "the daemon closed the connection")
                    decoder.receive_data(data)
                    continue
                reply = parse_reply(decode_message(frame, max_bytes=MAX_REPLY_BYTES))
                if reply.kind == "result":
                    return reply.data
                if reply.kind == "error":
                    raise ControlError(reply.code, reply.message)
                if reply.kind == "data":
                    _deliver(reply, on_data)
                elif on_progress is not None and reply.data:
                    on_progress(reply.data)
        except ProtocolError as exc:
            raise ControlError("protocol", f"unexpected answer from the daemon: {exc}") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError("disconnected", "the daemon closed the connection") from None
        except TimeoutError:
            raise ControlError("timeout", f"the daemon did not answer {op} in time") from None
