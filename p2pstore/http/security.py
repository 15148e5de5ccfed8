"""Who may talk to the HTTP face: Host, Origin and bearer-token rules (pure functions + token file).

* **Host** (DNS rebinding): a browser tricked into sending a page's requests to us carries the
  attacker's host name in ``Host``. Only ``localhost`` (and ``*.localhost``) or an IP literal, with
  the bound port, is accepted; any other name is refused with ``403``.
* **Origin** (cross-site requests): a state-changing request (anything but GET/HEAD/OPTIONS)
  whose ``Origin`` is not this server's own origin, or that a browser marks
  ``Sec-Fetch-Site: cross-site``, is refused with ``403``. Clients that send no ``Origin``
  (curl, scripts) are not browsers acting for a web page and are allowed.
* **Gateway reads from other sites**: a ``GET``/``HEAD /files/...`` that a browser marks as
  coming from another site (:func:`foreign_request`: ``Sec-Fetch-Site`` ``cross-site`` or
  ``same-site``, or a foreign ``Origin``/``Referer``) may read only files already complete in the
  local store; fetching any other file from the network is refused with ``403``, so a web page
  cannot make the node download content (``<img src=...>``).
* **Token**: when bound to a non-loopback address, every request except ``GET``/``HEAD`` of
  ``/files/...`` and ``/metrics`` needs ``Authorization: Bearer <token>`` (or the
  ``p2pstore_token`` cookie that ``/?token=...`` sets for the browser page); a file read without
  the token is served only if the file is complete locally (``401`` otherwise). The token is
  made once into ``<data dir>/http.token``, mode 0600.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from ..errors import ConfigError
from .server import parse_decimal

TOKEN_FILE_NAME = "http.token"
"""The bearer token's file in the data directory (mode 0600)."""

TOKEN_COOKIE = "p2pstore_token"
"""Cookie carrying the token for the status page (HttpOnly, SameSite=Strict)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_header(value: str) -> tuple[str, int | None] | None:
    """``Host`` header -> ``(host, port)`` (port ``None`` if absent), or ``None`` if malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, port_text = value.partition(":")
        rest = sep + port_text
    if not host:
        return None
    if not rest:
        return host.lower(), None
    port = parse_decimal(rest[1:]) if rest.startswith(":") else None
    if port is None or not 0 < port < 65536:
        return None
    return host.lower(), port


def host_allowed(value: str | None, port: int) -> bool:
    """The DNS-rebinding rule: ``Host`` is localhost or an IP literal, with our port."""
    if value is None:
        return False
    parsed = split_host_header(value)
    if parsed is None:
        return False
    host, host_port = parsed
    if (host_port if host_port is not None else 80) != port:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origin_allowed(
    method: str, origin: str | None, fetch_site: str | None, host_header: str | None
) -> bool:
    """The cross-site rule for state-changing requests (see the module docstring)."""
    if method in SAFE_METHODS:
        return True
    if fetch_site is not None and fetch_site.lower() == "cross-site":
        return False
    if origin is None:
        return True
    return host_header is not None and origin.lower() == f"http://{host_header.lower()}"


def foreign_request(
    origin: str | None, referer: str | None, fetch_site: str | None, host_header: str | None
) -> bool:
    """Whether a browser sent this request on behalf of another site's page.

    ``Sec-Fetch-Site`` ``cross-site``/``same-site`` (``same-site`` is another port or subdomain
    of the same site, e.g. another local web app), an ``Origin`` other than ours (``null``
    included) or a ``Referer`` from another origin. No such header (curl, scripts, a typed URL):
    not foreign.
    """
    if fetch_site is not None and fetch_site.strip().lower() in ("cross-site", "same-site"):
        return True
    own = f"http://{host_header.strip().lower()}" if host_header is not None else None
    if origin is not None and origin.strip().lower() != own:
        return True
    if referer is not None:
        ref = referer.strip().lower()
        if own is None or not (ref == own or ref.startswith(own + "/")):
            return True
    return False


def token_matches(expected: str, authorization: str | None, cookie: str | None) -> bool:
    """Whether the request carries ``expected`` as a bearer token or in the token cookie."""
    candidates = []
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(value.strip())
    if cookie is not None:
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                candidates.append(value.strip())
    return any(hmac.compare_digest(c.encode(), expected.encode()) for c in candidates)


def token_exempt(method: str, path: str) -> bool:
    """Requests a non-loopback bind serves without the token: file reads and metrics."""
    return method in ("GET", "HEAD") and (path.startswith("/files/") or path == "/metrics")


def load_or_create_token(data_dir: Path) -> str:
    """The token in ``data_dir/http.token``, created (random, mode 0600) if missing.

    Raises :class:`ConfigError` if the file cannot be made or read, or is readable by others.
    """
    path = data_dir / TOKEN_FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    try:
        mode = path.stat().st_mode & 0o777
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    if len(token) < 16:
        raise ConfigError(f"{path} holds no usable token (delete it to make a new one)")
    return token
