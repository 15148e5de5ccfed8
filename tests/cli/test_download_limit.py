"""Issue 15: a download rate limit beside the upload one: ``--download-limit`` and
``download_limit`` in p2pstore.toml, validated when the daemon starts, shown by ``config`` and
``status`` (the limit itself is measured in tests/node/test_transfer_control.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.config import CONFIG_FILE_NAME

from .fakes import invoke, short_tmp_dir
from .test_end_to_end import CLI, COMMAND_TIMEOUT, Daemon

pytest.importorskip("p2pstore.node")


@pytest.fixture
def base() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d


def test_status_and_config_show_the_limits(base: Path) -> None:
    daemon = Daemon(base / "d", settings='download_limit = "3MiB/s"\n')
    try:
        status = daemon.cli("status")
        assert status.returncode == 0, status.stderr
        assert "download limit: 3.0 MiB/s" in status.stdout
        assert "upload limit:   unlimited" in status.stdout
        as_json = daemon.json("status")
        assert as_json["download_limit"] == 3 << 20
        assert as_json["upload_limit"] is None
    finally:
        daemon.kill()
    config = invoke("config", "--data-dir", str(daemon.data_dir))
    line = next(x for x in config.stdout.splitlines() if x.startswith("download_limit"))
    assert "3.0 MiB/s" in line
    assert line.endswith(f"({daemon.data_dir / CONFIG_FILE_NAME})")


def test_the_flag_wins_over_the_file(base: Path) -> None:
    daemon = Daemon(
        base / "d", settings='download_limit = "3MiB/s"\n', extra=("--download-limit", "1MiB/s")
    )
    try:
        assert daemon.json("status")["download_limit"] == 1 << 20
    finally:
        daemon.kill()


@pytest.mark.parametrize(
    ("setting", "flag"),
    [
        ('download_limit = "fast"\n', ()),
        ("download_limit = -3\n", ()),
        ("", ("--download-limit", "x")),
    ],
)
def test_a_bad_download_limit_stops_the_daemon_at_start(
    base: Path, setting: str, flag: tuple[str, ...]
) -> None:
    data_dir = base / "d"
    data_dir.mkdir(mode=0o700)
    if setting:
        (data_dir / CONFIG_FILE_NAME).write_text(setting)
    started = subprocess.run(
        [*CLI, "daemon", "--udp-port", "0", "--tcp-port", "0", "--data-dir", str(data_dir), *flag],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert started.returncode == 2
    assert "download" in started.stderr
    if setting:
        assert CONFIG_FILE_NAME in started.stderr
        assert "download_limit" in started.stderr
    assert "Traceback" not in started.stderr
