"""Data directory resolution, p2pstore.toml, and size/rate/address parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.config import (
    CONFIG_FILE_NAME,
    DATA_DIR_ENV,
    MAX_CONFIG_FILE_BYTES,
    MAX_SIZE_BYTES,
    DaemonSettings,
    format_host_port,
    load_settings,
    parse_host_port,
    parse_rate,
    parse_size,
    resolve_data_dir,
    settings_from_mapping,
)
from p2pstore.errors import ConfigError

UNITS = {
    "": 1,
    "B": 1,
    "k": 1000,
    "kB": 1000,
    "KB": 1000,
    "MB": 10**6,
    "M": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 1024,
    "MiB": 1 << 20,
    "mib": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("32MiB", 32 << 20),
        ("4096", 4096),
        (" 5 MB ", 5_000_000),
        ("1.5GiB", 3 << 29),
        ("0.5KiB", 512),
        ("0", 0),
    ],
)
def test_parse_size_examples(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text", ["", "MiB", "-1", "12QQ", "1.0001KiB", "1e6", "32 Mibibytes", "9" * 40, "2000000EiB"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


@given(st.integers(0, 2**30), st.sampled_from(sorted(UNITS)))
def test_parse_size_property(n: int, unit: str) -> None:
    if n * UNITS[unit] <= MAX_SIZE_BYTES:
        assert parse_size(f"{n}{unit}") == n * UNITS[unit]
    else:
        with pytest.raises(ConfigError, match="too large"):
            parse_size(f"{n}{unit}")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5MB/s", 5_000_000),
        ("512KiB/s", 512 * 1024),
        ("1MiB", 1 << 20),
        ("unlimited", None),
        ("None", None),
        ("0", None),
        ("0/s", None),
    ],
)
def test_parse_rate(text: str, value: int | None) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["fast", "5MB/h", "/s", "-3MB/s", "5 XB/s"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("127.0.0.1:8468", ("127.0.0.1", 8468)),
        ("example.org:1", ("example.org", 1)),
        ("[::1]:9000", ("::1", 9000)),
        (" host:65535 ", ("host", 65535)),
    ],
)
def test_parse_host_port(text: str, value: tuple[str, int]) -> None:
    assert parse_host_port(text) == value


@pytest.mark.parametrize(
    "text",
    ["host", "host:", ":80", "host:0", "host:65536", "host:http", "::1:80", "[::1]80", "[zz]:80",
     "a b:80", "[::1:80"],
)  # fmt: skip
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_host_port(text)


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9.-]{0,30}", fullmatch=True),
)


@given(hosts, st.integers(1, 65535))
def test_host_port_round_trip(host: str, port: int) -> None:
    assert parse_host_port(format_host_port(host, port)) == (host, port)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    default = resolve_data_dir(None)
    assert default.is_absolute()
    assert "p2pstore" in default.parts[-1]
    monkeypatch.setenv(DATA_DIR_ENV, "")
    assert resolve_data_dir(None) == default
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/x") == tmp_path / "x"


def test_load_settings_full(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE_NAME).write_text(
        'host = "127.0.0.1"\nudp_port = 0\ntcp_port = 9100\n'
        'bootstrap = ["10.0.0.1:8468", "[::1]:1"]\n'
        'upload_limit = "5MB/s"\nquota = "10GiB"\nchunk_size = "512KiB"\nk = 6\nm = 3\n'
    )
    settings = load_settings(tmp_path)
    assert settings == DaemonSettings(
        host="127.0.0.1",
        udp_port=0,
        tcp_port=9100,
        bootstrap=(("10.0.0.1", 8468), ("::1", 1)),
        upload_limit=5_000_000,
        quota=10 << 30,
        chunk_size=512 << 10,
        k=6,
        m=3,
    )
    assert settings.node_overrides() == {
        "host": "127.0.0.1",
        "udp_port": 0,
        "tcp_port": 9100,
        "bootstrap": (("10.0.0.1", 8468), ("::1", 1)),
        "upload_limit": 5_000_000,
        "quota_bytes": 10 << 30,
        "chunk_size": 512 << 10,
        "k": 6,
        "m": 3,
    }


def test_missing_settings_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == DaemonSettings()
    assert settings.host == "0.0.0.0"
    assert settings.node_overrides() == {
        "host": "0.0.0.0",
        "udp_port": 8468,
        "tcp_port": 9000,
        "bootstrap": (),
        "upload_limit": None,
    }


def test_flags_win_over_the_file() -> None:
    from_file = settings_from_mapping({"host": "10.0.0.1", "udp_port": 1000, "k": 3})
    merged = from_file.merged(host="127.0.0.1", udp_port=None, tcp_port=0, bootstrap=None)
    assert (merged.host, merged.udp_port, merged.tcp_port, merged.k) == ("127.0.0.1", 1000, 0, 3)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("colour = 1", "unknown setting"),
        ("udp_port = 70000", "udp_port"),
        ("udp_port = true", "udp_port"),
        ('tcp_port = "9000"', "tcp_port"),
        ("bootstrap = [1]", "bootstrap"),
        ('bootstrap = ["nohost"]', "invalid address"),
        ('upload_limit = "fast"', "upload_limit: invalid rate"),
        ("k = 0", "k must"),
        ('quota = "lots"', "quota: invalid size"),
        ('repair_interval = "soon"', "repair_interval"),
        ('host = ""', "host"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_settings_files(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / CONFIG_FILE_NAME).write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(tmp_path)
    assert CONFIG_FILE_NAME in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML" in str(info.value)


def test_oversized_settings_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE_NAME).write_bytes(b"#" * (MAX_CONFIG_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(tmp_path)


def test_single_bootstrap_string_is_accepted() -> None:
    assert settings_from_mapping({"bootstrap": "h:1"}).bootstrap == (("h", 1),)
