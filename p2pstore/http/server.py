"""A small HTTP/1.1 server on Trio and ``h11``: one task per connection, every wait bounded.

``h11`` is the sans-IO HTTP/1.1 state machine (parsing, framing, keep-alive rules); this module
is the thin Trio layer around it, in the project's usual split. Per connection:

* the request head must arrive within :data:`IDLE_TIMEOUT` and fit :data:`MAX_HEAD_BYTES`
  (else ``408``/``431`` and the connection closes); an idle keep-alive connection closes then;
* each read of a request body and each :data:`SEND_PIECE` of a response must go within
  :data:`IO_TIMEOUT`; bodies are bounded by the handler (:meth:`Request.body` ``limit``);
* at most :data:`MAX_CONNECTIONS` connections at once: more are answered ``503`` and closed.

So a slow or hostile client costs one task, one socket and at most a request head's worth of
memory, and never blocks another connection. A handler that fails before it started its response
gets a JSON ``500``; after that the connection is closed mid-response (the client sees a short
body, never a wrong one).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
"""Largest request line + headers accepted (``431`` beyond)."""

MAX_CONNECTIONS = 64
"""Concurrent HTTP connections; a browser opens about six, a scraper one."""

IDLE_TIMEOUT = 30.0
"""Seconds for a whole request head to arrive, from the connection's start or the end of the
previous response (so a slowloris head is cut off too); an idle keep-alive connection closes."""

DRAIN_TIMEOUT = 10.0
"""Seconds spent reading (and dropping) a small body a handler did not read, to keep the
connection usable."""

IO_TIMEOUT = 30.0
"""Seconds one body read or one response write may take before the connection is dropped."""

RECEIVE_SIZE = 64 * 1024
"""Bytes asked of the socket per read."""

SEND_PIECE = 256 * 1024
"""Largest body write given one :data:`IO_TIMEOUT`: a client reading 9 KB/s still keeps up."""

SERVER_NAME = "p2pstore"


DECIMAL_CAP = 1 << 64
"""What :func:`parse_decimal` answers for a number of more than 19 significant digits."""


def parse_decimal(text: str) -> int | None:
    """A header's unsigned decimal number, or ``None`` if ``text`` is not one.

    Only ASCII digits count (``str.isdigit`` also accepts ``"²"``, which ``int`` rejects: h11 lets
    such latin-1 bytes through). A number above 19 significant digits is :data:`DECIMAL_CAP`, which
    is larger than any size or port it is compared with (and keeps ``int`` off huge strings).
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    significant = text.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else DECIMAL_CAP


class HttpError(Exception):
    """Raised by handlers: answered as JSON ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _ConnectionDone(Exception):
    """The connection cannot carry another request (closed, broken or protocol error)."""


@dataclass
class Request:
    """One parsed request; read its body with :meth:`body`."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    _conn: _Connection

    def header(self, name: str) -> str | None:
        """A header's value (the last one if repeated), or ``None``."""
        return self.headers.get(name.lower())

    async def body(self, limit: int) -> AsyncIterator[bytes]:
        """The request body in pieces; ``413`` once it exceeds ``limit`` bytes."""
        declared = self.header("content-length")
        length = parse_decimal(declared) if declared is not None else None
        if length is not None and length > limit:
            raise HttpError(413, "too_large", f"request body over {limit} bytes")
        total = 0
        while True:
            event = await self._conn.next_event(IO_TIMEOUT)
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limit:
                    raise HttpError(413, "too_large", f"request body over {limit} bytes")
                self._conn.counted(0, len(event.data))
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise _ConnectionDone


class Response:
    """Writes one response: :meth:`start` (status and headers), then :meth:`send` the body.

    For ``HEAD`` requests :meth:`send` sends nothing. :meth:`json` and :meth:`error` are the
    one-call forms.
    """

    def __init__(self, conn: _Connection, request: Request) -> None:
        self._conn = conn
        self._method = request.method
        self._head_only = request.method == "HEAD"
        self.status: int | None = None

    @property
    def started(self) -> bool:
        """Whether the status line and headers were sent."""
        return self.status is not None

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status line and headers (a ``Server`` and ``Date`` are added by h11)."""
        self.status = status
        if self._conn.on_request is not None:  # counted as the answer starts, not at its end
            self._conn.on_request(self._method, status)
        base = [("server", SERVER_NAME), *headers]
        await self._conn.send(
            h11.Response(
                status_code=status,
                headers=[(k.encode(), v.encode()) for k, v in base],
                reason=_reason(status),
            )
        )

    async def send(self, data: bytes | memoryview) -> None:
        """Send part of the body; waits while the client is slow, but each
        :data:`SEND_PIECE` bytes must go within :data:`IO_TIMEOUT` (so a slow but steady
        client is served, a stalled one dropped)."""
        if not data or self._head_only:
            return
        view = memoryview(data)
        for start in range(0, len(view), SEND_PIECE):
            piece = bytes(view[start : start + SEND_PIECE])
            await self._conn.send(h11.Data(data=piece))
            self._conn.counted(len(piece), 0)

    async def json(
        self, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """A complete JSON response."""
        body = json.dumps(data, sort_keys=True).encode()
        await self.bytes(body, "application/json", status, headers)

    async def bytes(
        self,
        body: bytes,
        content_type: str,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A complete response with ``body``."""
        await self.start(
            status,
            [
                ("content-type", content_type),
                ("content-length", str(len(body))),
                ("cache-control", "no-store"),
                *(headers or []),
            ],
        )
        await self.send(body)

    async def error(self, status: int, code: str, message: str) -> None:
        """A JSON error: ``{"error": {"code": ..., "message": ...}}``."""
        await self.json({"error": {"code": code, "message": message}}, status)


Handler = Callable[[Request, Response], Awaitable[None]]


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.on_bytes: Callable[[int, int], None] | None = None
        self.on_request: Callable[[str, int], None] | None = None

    def counted(self, sent: int, received: int) -> None:
        """Body bytes just sent / received, reported as they move (not at the request's end,
        so a long download shows in the metrics while it runs)."""
        if self.on_bytes is not None:
            self.on_bytes(sent, received)

    async def next_event(self, within: float) -> Any:
        """The next h11 event, reading from the socket as needed, within ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            while True:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _BadRequest(exc.error_status_hint, str(exc)) from None
                if event is h11.NEED_DATA:
                    try:
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise _ConnectionDone from None
                    self.h11.receive_data(data)
                    continue
                return event
        assert scope.cancelled_caught
        raise _Timeout

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            with trio.fail_after(IO_TIMEOUT):
                await self.stream.send_all(data)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Timeout(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_target(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    return unquote(parts.path) or "/", dict(parse_qsl(parts.query, keep_blank_values=True))


class HttpServer:
    """Serves ``handler`` on accepted streams; :meth:`handle` is the per-connection task.

    ``on_request(method, status)`` is called as each response starts and ``on_bytes(sent,
    received)`` whenever body bytes move (for metrics).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = MAX_CONNECTIONS,
        on_request: Callable[[str, int], None] | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.active = 0
        self.on_request = on_request
        self.on_bytes = on_bytes

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve requests on ``stream`` until close, idleness, timeouts or a protocol error."""
        async with stream:
            conn = _Connection(stream)
            conn.on_bytes, conn.on_request = self.on_bytes, self.on_request
            if self.active >= self.max_connections:
                with contextlib.suppress(Exception):
                    await self._refuse(conn, 503, "busy", "too many HTTP connections")
                return
            self.active += 1
            try:
                await self._serve(conn)
            except (_ConnectionDone, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except trio.TooSlowError:
                log.debug("http: client too slow to read, closing")
            finally:
                self.active -= 1

    async def _refuse(self, conn: _Connection, status: int, code: str, message: str) -> None:
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        await conn.send(
            h11.Response(
                status_code=status,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            )
        )
        await conn.send(h11.Data(data=body))
        await conn.send(h11.EndOfMessage())

    async def _serve(self, conn: _Connection) -> None:
        while True:
            try:
                event = await conn.next_event(IDLE_TIMEOUT)
            except _Timeout:
                if conn.h11.their_state is h11.IDLE and not conn.h11.trailing_data[0]:
                    return  # an idle keep-alive connection: just close
                await self._refuse(conn, 408, "timeout", "request head not received in time")
                return
            except _BadRequest as exc:
                await self._refuse(conn, exc.status, "bad_request", str(exc)[:200])
                return
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            head = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if head > MAX_HEAD_BYTES:  # h11 bounds only heads that arrive in several reads
                await self._refuse(conn, 431, "bad_request", "request head too large")
                return
            await self._one(conn, event)
            if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the handler did not read the whole body: cannot reuse the connection

    async def _one(self, conn: _Connection, event: h11.Request) -> None:
        method = event.method.decode("ascii", "replace").upper()
        target = event.target.decode("ascii", "replace")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        path, query = _parse_target(target)
        request = Request(method, target, path, query, headers, conn)
        response = Response(conn, request)
        try:
            await self.handler(request, response)
        except HttpError as exc:
            if response.started:
                raise _ConnectionDone from None
            await response.error(exc.status, exc.code, str(exc))
        except (_ConnectionDone, _Timeout, trio.TooSlowError, trio.BrokenResourceError):
            raise _ConnectionDone from None
        except trio.Cancelled:
            raise
        except Exception:
            if response.started:
                log.warning("http: %s %s failed mid-response", method, path, exc_info=True)
                raise _ConnectionDone from None
            log.exception("http: %s %s failed", method, path)
            await response.error(500, "internal", "internal error")
        if not response.started:
            await response.error(500, "internal", "no response")
        await conn.send(h11.EndOfMessage())
        # Drain a body the handler did not read (bounded), so keep-alive can go on.
        if conn.h11.their_state is h11.SEND_BODY:
            with contextlib.suppress(_Timeout, _BadRequest):
                drained = 0
                while drained <= MAX_HEAD_BYTES:
                    ev = await conn.next_event(DRAIN_TIMEOUT)
                    if isinstance(ev, h11.Data):
                        drained += len(ev.data)
                    else:
                        break


async def serve_http(
    server: HttpServer,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0 = a free port) and serve until cancelled.

    ``task_status.started((host, port))`` reports the bound address. Raises ``OSError`` if the
    address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, server.handle, listeners)
        task_status.started((str(sockname[0]), int(sockname[1])))
