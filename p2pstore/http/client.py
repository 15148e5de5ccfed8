"""A minimal HTTP/1.1 client on Trio and ``h11``, for the tests and ``bench_gateway.py``.

One request per connection; the body can be streamed to a callback (to time the first byte, or
to discard a large download like ``curl -o /dev/null``). Not a general-purpose client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import trio

RECEIVE_SIZE = 256 * 1024


@dataclass
class Reply:
    """Status, headers (lower-case names; repeated ones joined by ``, ``) and body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    complete: bool = True
    """False if the server closed the connection before the end of the body."""
    first_byte_at: float | None = None
    """``trio.current_time()`` when the first body byte arrived."""
    body_bytes: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def json(self) -> object:
        import json

        return json.loads(self.body)


async def request(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    on_data: Callable[[bytes], None] | None = None,
    time_limit: float = 60.0,
) -> Reply:
    """Send one request and read the whole reply within ``time_limit`` seconds.

    ``Host`` defaults to ``host:port``. With ``on_data`` the body is passed to it piece by piece
    and not kept. Raises ``trio.TooSlowError`` on timeout.
    """
    all_headers = {"host": f"{host}:{port}", "connection": "close"}
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    if body is not None:
        all_headers["content-length"] = str(len(body))
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(time_limit):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            out = conn.send(
                h11.Request(
                    method=method,
                    target=target,
                    headers=[(k.encode(), v.encode("latin-1")) for k, v in all_headers.items()],
                )
            )
            assert out is not None
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            reply: Reply | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive_some(RECEIVE_SIZE)
                    except trio.BrokenResourceError:
                        data = b""
                    if not data and reply is not None:
                        reply.complete = False
                        break
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    hdrs: dict[str, str] = {}
                    for k, v in event.headers:
                        name = k.decode().lower()
                        value = v.decode("latin-1")
                        hdrs[name] = f"{hdrs[name]}, {value}" if name in hdrs else value
                    reply = Reply(event.status_code, hdrs)
                elif isinstance(event, h11.Data):
                    assert reply is not None
                    if reply.first_byte_at is None:
                        reply.first_byte_at = trio.current_time()
                    reply.body_bytes += len(event.data)
                    if on_data is not None:
                        on_data(bytes(event.data))
                    else:
                        chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            assert reply is not None, "no response"
            reply.body = b"".join(chunks)
            if (
                "content-length" in reply.headers
                and method != "HEAD"
                and reply.status
                not in (
                    204,
                    304,
                )
            ):
                reply.complete = reply.complete and reply.body_bytes == int(
                    reply.headers["content-length"]
                )
            return reply
