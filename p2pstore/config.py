"""Operator-facing configuration: the data directory, ``p2pstore.toml`` and size/rate strings.

The data directory is ``--data-dir``, else ``$P2PSTORE_DATA_DIR``, else the platform's user data
directory (``platformdirs.user_data_dir("p2pstore")``). Settings may come from a ``p2pstore.toml``
in that directory; command-line flags win over the file, and the file wins over the built-in
defaults. Everything here is pure (no sockets) and raises :class:`~p2pstore.errors.ConfigError`
with a one-line message on bad input.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module
from .errors import ConfigError

if TYPE_CHECKING:
    import tomllib

    import platformdirs
else:
    # Loaded on first use: the CLI's fast path (p2pstore.fastcli) needs neither for a
    # --data-dir command, and they cost it ~8 ms of a ~90 ms start.
    tomllib = lazy_module("tomllib")
    platformdirs = lazy_module("platformdirs")

DATA_DIR_ENV = "P2PSTORE_DATA_DIR"
"""Environment variable naming the data directory when ``--data-dir`` is not given."""

CONFIG_FILE_NAME = "p2pstore.toml"
"""Settings file looked up inside the data directory."""

MAX_CONFIG_FILE_BYTES = 1 << 20
"""A settings file is a handful of keys; anything larger is a mistake, not a config."""

MAX_SIZE_BYTES = 1 << 60
"""Upper bound for any size or rate string (1 EiB): catches typos like ``32EiB`` early."""

DEFAULT_DAEMON_HOST = "0.0.0.0"
"""The daemon listens on every interface unless told otherwise (a library node: loopback)."""

DEFAULT_UDP_PORT = 8468
"""Default DHT (UDP) port of the daemon."""

DEFAULT_TCP_PORT = 9000
"""Default chunk-server (TCP) port of the daemon."""

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([a-zA-Z]{0,3})\s*$")
_UNLIMITED = frozenset({"unlimited", "none", "off"})


def resolve_data_dir(flag: Path | str | None = None) -> Path:
    """Return the data directory: ``flag``, else ``$P2PSTORE_DATA_DIR``, else the user data dir.

    The result is absolute (``~`` expanded) but not created; an empty flag or variable counts as
    not given.
    """
    if flag is not None and str(flag) != "":
        chosen = Path(flag)
    elif os.environ.get(DATA_DIR_ENV):
        chosen = Path(os.environ[DATA_DIR_ENV])
    else:
        chosen = Path(platformdirs.user_data_dir("p2pstore", appauthor=False))
    return chosen.expanduser().absolute()


def parse_size(text: str) -> int:
    """Parse a byte count such as ``32MiB``, ``5MB``, ``1.5GiB``, ``4096`` (case-insensitive).

    Decimal units (kB, MB, GB, TB, or just k/M/G/T) are powers of 1000, binary units (KiB, MiB,
    GiB, TiB) powers of 1024; a bare number is bytes. Raises ``ConfigError`` on anything else,
    on a fractional byte count, or on more than :data:`MAX_SIZE_BYTES`.
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise ConfigError(f"invalid size {text!r} (expected e.g. 4096, 512KiB, 32MiB, 1GB)")
    number, unit = match.groups()
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise ConfigError(
            f"invalid size unit {unit!r} in {text!r} (use B, kB, MB, GB, KiB, MiB...)"
        )
    if "." in number:
        whole, frac = number.split(".")
        numerator = int(whole + frac) * multiplier
        denominator = int(10 ** len(frac))
        if numerator % denominator:
            raise ConfigError(f"size {text!r} is not a whole number of bytes")
        value = numerator // denominator
    else:
        value = int(number) * multiplier
    if value > MAX_SIZE_BYTES:
        raise ConfigError(f"size {text!r} is too large")
    return value


def parse_rate(text: str) -> int | None:
    """Parse a transfer rate such as ``5MB/s``, ``512KiB/s`` or ``5MB`` into bytes per second.

    ``unlimited``, ``none``, ``off`` and ``0`` mean no limit and return ``None``. Raises
    ``ConfigError`` on anything else that :func:`parse_size` rejects.
    """
    stripped = text.strip()
    if stripped.lower() in _UNLIMITED:
        return None
    if stripped.lower().endswith("/s"):
        stripped = stripped[:-2]
    try:
        value = parse_size(stripped)
    except ConfigError:
        raise ConfigError(
            f"invalid rate {text!r} (expected e.g. 5MB/s, 512KiB/s, unlimited)"
        ) from None
    return value if value > 0 else None


def format_size(n: float) -> str:
    """Human-readable binary size (``1.5 MiB``); the inverse direction of :func:`parse_size`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) into ``(host, port)``.

    The port must be 1-65535 and the host non-empty (a name, IPv4 or bracketed IPv6 address).
    Raises ``ConfigError`` otherwise.
    """
    value = text.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise ConfigError(f"invalid address {text!r} (expected HOST:PORT or [IPv6]:PORT)")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"invalid IPv6 address in {text!r}") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(f"invalid address {text!r} (expected HOST:PORT or [IPv6]:PORT)")
        if any(c.isspace() for c in host):
            raise ConfigError(f"invalid host in {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"invalid port in {text!r} (expected 1-65535)")
    return host, int(port_text)


def parse_listen_address(text: str) -> tuple[str, int]:
    """Like :func:`parse_host_port`, but port 0 (pick a free port) is allowed."""
    value = text.strip()
    if value.endswith(":0"):
        host, _ = parse_host_port(value[:-2] + ":1")
        return host, 0
    return parse_host_port(value)


def format_host_port(host: str, port: int) -> str:
    """Inverse of :func:`parse_host_port`: brackets IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


UNLIMITED_QUOTA = MAX_SIZE_BYTES
"""``quota = "unlimited"`` in the settings file: no quota at all (the default is automatic)."""

AUTO_QUOTA_FRACTION = 0.5
"""Without a ``quota`` setting, pushed shares may fill this fraction of the free space."""


def auto_quota(stored_bytes: int, free_bytes: int) -> int:
    """The default quota: what the store holds now plus half the free space on its disk, so
    other nodes' shares can never fill the disk (the user's own files are never refused)."""
    return stored_bytes + int(max(free_bytes, 0) * AUTO_QUOTA_FRACTION)


_DURATION_RE = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*([a-zA-Z]{0,1})\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """Parse a duration such as ``90``, ``90s``, ``30m``, ``1h`` or ``1.5d`` into seconds.

    ``off``, ``none``, ``unlimited`` and ``0`` return ``None`` (the thing timed is turned off).
    Raises ``ConfigError`` on anything else.
    """
    if text.strip().lower() in _UNLIMITED:
        return None
    match = _DURATION_RE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ConfigError(f"invalid duration {text!r} (expected e.g. 90s, 30m, 1h, off)")
    value = float(match.group(1)) * _DURATION_UNITS[unit]
    return value if value > 0 else None


@dataclass(frozen=True)
class DaemonSettings:
    """What a daemon is started with, after merging defaults, ``p2pstore.toml`` and flags.

    ``None`` for ``quota``, ``chunk_size``, ``k``, ``m``, ``repair_interval`` and
    ``repair_threshold`` means "the node's own default"; ``upload_limit=None`` means unlimited
    and ``repair_interval=0`` automatic repair off.
    """

    host: str = DEFAULT_DAEMON_HOST
    udp_port: int = DEFAULT_UDP_PORT
    tcp_port: int = DEFAULT_TCP_PORT
    bootstrap: tuple[tuple[str, int], ...] = ()
    upload_limit: int | None = None
    quota: int | None = None
    chunk_size: int | None = None
    k: int | None = None
    m: int | None = None
    repair_interval: float | None = None
    repair_threshold: int | None = None
    http: tuple[str, int] | None = None
    """Where the HTTP face listens (``docs/http.md``); ``None``: off. Port 0 picks a free one."""
    log_level: str | None = None
    """The daemon's log level (debug, info, warning, error) when no ``-v``/``-q`` is given."""
    download_limit: int | None = None
    """Bytes per second all this node's downloads share (``None``: unlimited)."""

    def merged(self, **flags: Any) -> DaemonSettings:
        """Return a copy with every flag that is not ``None`` applied (flags win)."""
        return replace(self, **{name: v for name, v in flags.items() if v is not None})

    def node_overrides(self) -> dict[str, Any]:
        """Keyword overrides for ``open_node``: only what was set, in ``NodeConfig`` field names."""
        out: dict[str, Any] = {
            "host": self.host,
            "udp_port": self.udp_port,
            "tcp_port": self.tcp_port,
            "bootstrap": self.bootstrap,
            "upload_limit": self.upload_limit,
        }
        if self.quota is not None:  # None: the daemon computes one (auto_quota)
            out["quota_bytes"] = None if self.quota == UNLIMITED_QUOTA else self.quota
        for name in ("chunk_size", "k", "m", "repair_threshold"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.repair_interval is not None:
            out["repair_interval"] = self.repair_interval or None  # 0: off
        if self.download_limit is not None:
            out["download_limit"] = self.download_limit
        return out


_SETTING_NAMES = frozenset(f.name for f in fields(DaemonSettings))
_LOG_LEVEL_NAMES = ("debug", "info", "warning", "error")


def _port(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key} must be an integer port 0-65535, not {value!r}")
    return value


def _positive(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, not {value!r}")
    return value


def _size(key: str, value: object) -> int:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return _positive(key, value)


def _duration(key: str, value: object) -> float:
    """Seconds (0.0 for off) from a duration string or a number of seconds."""
    if isinstance(value, str):
        try:
            return parse_duration(value) or 0.0
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key} must be a duration (e.g. 1h, 30m, off) or seconds, not {value!r}")
    return float(value)


def settings_from_mapping(
    data: dict[str, Any], *, source: str = CONFIG_FILE_NAME
) -> DaemonSettings:
    """Validate a parsed settings table (the keys documented in ``docs/cli.md``).

    Unknown keys and wrong types raise ``ConfigError`` naming ``source`` and the key.
    """
    unknown = sorted(set(data) - _SETTING_NAMES)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    try:
        for key, value in data.items():
            if key == "host":
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"host must be a non-empty string, not {value!r}")
                values[key] = value.strip()
            elif key in ("udp_port", "tcp_port"):
                values[key] = _port(key, value)
            elif key == "bootstrap":
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError('bootstrap must be a list of "HOST:PORT" strings')
                values[key] = tuple(parse_host_port(v) for v in value)
            elif key in ("upload_limit", "download_limit"):
                if isinstance(value, str):
                    try:
                        values[key] = parse_rate(value)
                    except ConfigError as exc:
                        raise ConfigError(f"{key}: {exc}") from None
                else:
                    values[key] = _positive(key, value)
            elif key == "http":
                if not isinstance(value, str):
                    raise ConfigError('http must be a "HOST:PORT" string')
                values[key] = parse_listen_address(value)
            elif key == "quota" and isinstance(value, str) and value.strip().lower() in _UNLIMITED:
                values[key] = UNLIMITED_QUOTA
            elif key in ("quota", "chunk_size"):
                values[key] = _size(key, value)
            elif key == "repair_interval":
                values[key] = _duration(key, value)
            elif key == "log_level":
                if not isinstance(value, str) or value.strip().lower() not in _LOG_LEVEL_NAMES:
                    raise ConfigError(
                        f"log_level must be one of {', '.join(_LOG_LEVEL_NAMES)}, not {value!r}"
                    )
                values[key] = value.strip().lower()
            elif key == "repair_threshold":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"{key} must be an integer >= 0, not {value!r}")
                values[key] = value
            else:  # k, m
                values[key] = _positive(key, value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_layout(values, source)
    return DaemonSettings(**values)


def _check_layout(values: dict[str, Any], source: str) -> None:
    """``chunk_size``, ``k`` and ``m`` together must make a valid layout: checked at start-up,
    so that a daemon never starts whose every ``put`` would fail."""
    from .chunking import DEFAULT_CHUNK_SIZE, DEFAULT_K, DEFAULT_M, Layout

    given = [key for key in ("chunk_size", "k", "m") if key in values]
    if not given:
        return
    try:
        Layout(
            values.get("chunk_size", DEFAULT_CHUNK_SIZE),
            values.get("k", DEFAULT_K),
            values.get("m", DEFAULT_M),
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {', '.join(given)}: {exc}") from None


def load_settings(data_dir: Path) -> DaemonSettings:
    """Read ``p2pstore.toml`` from ``data_dir`` (defaults when absent).

    Raises ``ConfigError`` (one line, naming the file) if it is unreadable, too large, not valid
    TOML, or has unknown keys or wrong types.
    """
    path = data_dir / CONFIG_FILE_NAME
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_FILE_BYTES + 1)
    except FileNotFoundError:
        return DaemonSettings()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settings_from_mapping(data, source=str(path))


# ----------------------------------------------------------------------------- display


def setting_text(key: str, value: Any) -> str:
    """A setting as a user would write it (sizes and rates with units, None as its meaning)."""
    if key == "quota" and value == UNLIMITED_QUOTA:
        return "unlimited"
    if value is None and key in ("chunk_size", "k", "m"):
        from .chunking import DEFAULT_CHUNK_SIZE, DEFAULT_K, DEFAULT_M

        value = {"chunk_size": DEFAULT_CHUNK_SIZE, "k": DEFAULT_K, "m": DEFAULT_M}[key]
    if value is None and key == "repair_interval":
        from .repair import DEFAULT_REPAIR_INTERVAL

        value = DEFAULT_REPAIR_INTERVAL
    if value is None:
        return {
            "upload_limit": "unlimited",
            "download_limit": "unlimited",
            "quota": "auto (what is stored + half the free space, at start)",
            "http": "off",
            "log_level": "warning",
            "repair_threshold": "ceil(m / 2) of each file (repair at k + that many shares)",
        }.get(key, "node default")
    if key in ("quota", "chunk_size"):
        return format_size(value)
    if key in ("upload_limit", "download_limit"):
        return f"{format_size(value)}/s"
    if key == "bootstrap":
        return ", ".join(format_host_port(h, p) for h, p in value) or "none"
    if key == "http":
        return format_host_port(*value)
    if key == "repair_interval":
        return "off" if not value else f"{value:g} s"
    return str(value)


def show_bound_ports(report: Mapping[str, Any], bound: Mapping[str, int]) -> None:
    """In a daemon's settings report (:func:`settings_rows`' rows under ``"settings"``), show
    the port each ``*_port`` set to 0 ("any free port") was given, once the daemon listens."""
    for row in report.get("settings") or []:
        key = row.get("key")
        if key in bound and row.get("value") == "0":
            row["value"] = f"{bound[key]} (0 = any free port)"


def settings_rows(
    data_dir: Path, data_dir_source: str, settings: DaemonSettings, sources: Mapping[str, str]
) -> list[dict[str, str]]:
    """What ``p2pstore config`` prints: one ``{key, value, source}`` per setting, the data
    directory first; ``sources`` names where each key not at its default came from (a flag such
    as ``--host``, or the settings file's path)."""
    rows = [{"key": "data_dir", "value": str(data_dir), "source": data_dir_source}]
    for f in fields(DaemonSettings):
        value = getattr(settings, f.name)
        rows.append(
            {
                "key": f.name,
                "value": setting_text(f.name, value),
                "source": sources.get(f.name, "default"),
            }
        )
    return rows
