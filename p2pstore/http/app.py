"""The daemon's HTTP face: routes, the security rules in front of them, and the serving task.

Routes (``docs/http.md`` is the reference):

* ``GET /`` the status page, ``GET /static/...`` its assets (shipped in the package);
* ``GET /api/status|files|peers|transfers``, ``GET /api/providers/{key}``: JSON, produced by the
  control socket's own operations (:func:`p2pstore.control.perform`), errors as
  ``{"error": {"code", "message"}}`` with the control protocol's codes;
* ``GET|HEAD /files/{file_id}`` the gateway, ``POST /files`` uploads (:mod:`.gateway`);
* ``GET /metrics`` Prometheus text (:mod:`.metrics`).
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..control import error_code, error_message, perform
from ..errors import ConfigError, P2PStoreError
from . import metrics, security
from .budget import DEFAULT_READ_BUDGET_BYTES, ReadBudget
from .gateway import (
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_WINDOW_BYTES,
    DEFAULT_WINDOW_STRIPES,
    LOCAL_CHECK_THREADS,
    STATUS_FOR_CODE,
    parse_file_id,
    receive_upload,
    serve_file,
)
from .server import HttpError, HttpServer, Request, Response, serve_http

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger(__name__)

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The status page loads nothing from anywhere else (nodes may be offline; no CDN)."""

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class HttpSettings:
    """How the HTTP face serves: window of a streamed read, upload bound, token."""

    window_stripes: int = DEFAULT_WINDOW_STRIPES
    """At most this many stripes ahead of a streamed read..."""
    window_bytes: int = DEFAULT_WINDOW_BYTES
    """... and at most this many bytes (but at least one stripe)."""
    read_budget_bytes: int = DEFAULT_READ_BUDGET_BYTES
    """Bytes all gateway reads together may buffer (:class:`~.budget.ReadBudget`)."""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    token: str | None = None
    """Required (bearer or cookie) except for file reads and metrics; ``None`` on loopback."""


def _static(name: str) -> bytes:
    return importlib.resources.files("p2pstore.http").joinpath("static", name).read_bytes()


class NodeApp:
    """The request handler for one node (see the module docstring)."""

    def __init__(self, node: Node, settings: HttpSettings, port: int) -> None:
        self.node = node
        self.settings = settings
        self.port = port
        self.registry = metrics.make_registry(node)
        self.read_budget = ReadBudget(settings.read_budget_bytes)
        self.check_limiter = trio.CapacityLimiter(LOCAL_CHECK_THREADS)

    def set_port(self, port: int) -> None:
        """The bound port (known only after binding port 0), for the Host rule."""
        self.port = port

    async def __call__(self, request: Request, response: Response) -> None:
        if not security.host_allowed(request.header("host"), self.port):
            raise HttpError(403, "forbidden", "Host not allowed (use localhost or an IP address)")
        token = self.settings.token
        authorized = token is None or security.token_matches(
            token, request.header("authorization"), request.header("cookie")
        )
        if token is not None and not security.token_exempt(request.method, request.path):
            if request.path == "/" and security.token_matches(
                token, f"Bearer {request.query.get('token', '')}", None
            ):
                await self._set_token_cookie(response, token)
                return
            if not authorized:
                await _unauthorized(response)
                return
        if not security.origin_allowed(
            request.method,
            request.header("origin"),
            request.header("sec-fetch-site"),
            request.header("host"),
        ):
            raise HttpError(403, "forbidden", "cross-origin request refused")
        await self._route(request, response, authorized)

    async def _set_token_cookie(self, response: Response, token: str) -> None:
        cookie = f"{security.TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        await response.start(
            303, [("location", "/"), ("set-cookie", cookie), ("content-length", "0")]
        )

    async def _route(self, request: Request, response: Response, authorized: bool) -> None:
        method, path = request.method, request.path
        if path.startswith("/files/") and method in ("GET", "HEAD"):
            file_id = parse_file_id(path.removeprefix("/files/"))
            # Fetching a file that is not complete here costs disk, bandwidth and DHT traffic:
            # only for the token holder and for requests no other site's page made.
            refusal: Callable[[Response], Awaitable[None]] | None = None
            if not authorized:
                refusal = _unauthorized
            elif security.foreign_request(
                request.header("origin"),
                request.header("referer"),
                request.header("sec-fetch-site"),
                request.header("host"),
            ):
                refusal = _foreign_read
            await serve_file(
                self.node,
                request,
                response,
                file_id,
                window=self.settings.window_stripes,
                window_bytes=self.settings.window_bytes,
                budget=self.read_budget,
                check_limiter=self.check_limiter,
                refuse_remote=refusal,
            )
            return
        if path in ("/files", "/files/"):
            self._only(method, "POST")
            await receive_upload(
                self.node, request, response, max_bytes=self.settings.max_upload_bytes
            )
            return
        if path.startswith("/api/"):
            self._only(method, "GET", "HEAD")
            await response.json(await self._api(path.removeprefix("/api/")))
            return
        if path == "/metrics":
            self._only(method, "GET", "HEAD")
            body = await trio.to_thread.run_sync(metrics.render, self.registry)
            await response.bytes(body, metrics.CONTENT_TYPE)
            return
        if path in ("/", "/index.html") or path.startswith("/static/"):
            self._only(method, "GET", "HEAD")
            await self._asset(path, response)
            return
        raise HttpError(404, "not_found", f"no such endpoint: {path[:100]}")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, "bad_request", f"method {method} not allowed here")

    async def _asset(self, path: str, response: Response) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        suffix = Path(name).suffix
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise HttpError(404, "not_found", "no such asset")
        try:
            body = _static(name)
        except (FileNotFoundError, IsADirectoryError):
            raise HttpError(404, "not_found", "no such asset") from None
        await response.bytes(
            body,
            STATIC_TYPES[suffix],
            headers=[
                ("content-security-policy", PAGE_CSP),
                ("x-frame-options", "DENY"),
                ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer"),
            ],
        )

    async def _api(self, rest: str) -> dict[str, Any]:
        try:
            if rest == "status":
                data = await perform(self.node, "status")
                data.update(self._extra_status())
                return data
            if rest == "files":
                return await perform(self.node, "ls")
            if rest == "peers":
                data = await perform(self.node, "peers")
                data["transfer_peers"] = self._transfer_peers()
                return data
            if rest == "transfers":
                status = await perform(self.node, "status")
                return {"transfers": [_with_fraction(t) for t in status["transfers"]]}
            if rest.startswith("providers/"):
                key = parse_file_id(rest.removeprefix("providers/"))
                return await perform(self.node, "providers", {"key": key})
        except HttpError:
            raise
        except (P2PStoreError, OSError) as exc:
            code = "bad_request" if error_code(exc) == "protocol" else error_code(exc)
            raise HttpError(STATUS_FOR_CODE.get(code, 500), code, error_message(exc)) from None
        raise HttpError(404, "not_found", f"no such endpoint: /api/{rest[:100]}")

    def _extra_status(self) -> dict[str, Any]:
        """What the page needs beyond ``status``: DHT health and the byte counters."""
        node, t = self.node, self.node.telemetry
        stats = node.dht.stats
        contacts = node.dht.contacts()
        return {
            "dht": {
                "contacts": len(contacts),
                "buckets": metrics.bucket_count(node.node_id, [c.node_id for c in contacts]),
                "datagrams_sent": stats.sent,
                "datagrams_received": stats.received,
                "dropped": sum(stats.dropped.values()),
                "lookups": stats.lookups,
            },
            "counters": {
                "chunk_bytes_fetched": t.chunk_bytes_fetched,
                "chunk_bytes_served": t.chunk_bytes_served,
                "http_bytes_sent": t.http_bytes_sent,
                "http_bytes_received": t.http_bytes_received,
            },
            "quota_bytes": node.store.quota_bytes,
        }

    def _transfer_peers(self) -> dict[str, float]:
        rates: dict[str, float] = {}
        for transfer in self.node.status().transfers:
            for label, rate in getattr(transfer, "peer_rates", {}).items():
                rates[label] = rates.get(label, 0.0) + rate
        return rates


async def _unauthorized(response: Response) -> None:
    await response.start(
        401,
        [
            ("www-authenticate", 'Bearer realm="p2pstore"'),
            ("content-type", "application/json"),
            ("content-length", "0"),
        ],
    )


async def _foreign_read(response: Response) -> None:
    raise HttpError(403, "forbidden", "another site may only read files already stored here")


def _with_fraction(transfer: dict[str, Any]) -> dict[str, Any]:
    total = transfer.get("bytes_total") or 0
    done = transfer.get("bytes_done") or 0
    return {**transfer, "fraction": (done / total) if total else None}


def _counting_server(node: Node, app: NodeApp) -> HttpServer:
    t = node.telemetry

    def on_request(method: str, status: int) -> None:
        t.http_requests[(method, status)] += 1

    def on_bytes(sent: int, received: int) -> None:
        t.http_bytes_sent += sent
        t.http_bytes_received += received

    return HttpServer(app, on_request=on_request, on_bytes=on_bytes)


def settings_for_bind(host: str, data_dir: Path, settings: HttpSettings) -> HttpSettings:
    """``settings`` with the data directory's token when ``host`` is not a loopback address."""
    if settings.token is not None or security.is_loopback(host):
        return settings
    return replace(settings, token=security.load_or_create_token(data_dir))


async def serve_node_http(
    node: Node,
    host: str,
    port: int,
    *,
    settings: HttpSettings | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``node``'s HTTP face on ``host:port`` until cancelled (run it in the node's nursery).

    A non-loopback ``host`` gets a bearer token from ``<data dir>/http.token`` (made if missing)
    unless ``settings`` carries one. ``task_status.started((host, port))`` gives the bound
    address. Raises :class:`ConfigError` if the address cannot be bound.
    """
    settings = settings_for_bind(host, node.data_dir, settings or HttpSettings())
    app = NodeApp(node, settings, port)
    server = _counting_server(node, app)
    try:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve_http, server, host, port)
            app.set_port(bound[1])
            log.info("HTTP listening on %s:%d", *bound)
            task_status.started(bound)
    except OSError as exc:
        raise ConfigError(f"cannot listen on HTTP {host}:{port}: {exc.strerror or exc}") from exc


__all__ = ["HttpSettings", "NodeApp", "serve_node_http"]
