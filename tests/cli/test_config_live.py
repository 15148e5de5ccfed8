"""Issue 15: ``p2pstore config`` shows what the *running* daemon uses, with where each setting
came from (its own flags, p2pstore.toml, the defaults), and says so; with no daemon running it
falls back to the file and the defaults, and says that instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.config import CONFIG_FILE_NAME

from .fakes import invoke, short_tmp_dir
from .test_end_to_end import Daemon

pytest.importorskip("p2pstore.node")


@pytest.fixture
def base() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d


def _rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if not line.startswith("#")}


def test_config_shows_the_running_daemons_flags(base: Path) -> None:
    settings = 'download_limit = "3MiB/s"\nk = 3\nm = 2\nupload_limit = "9MiB/s"\n'
    daemon = Daemon(
        base / "d", settings=settings, extra=("--download-limit", "1MiB/s", "--http", "127.0.0.1:0")
    )
    path = str(daemon.data_dir / CONFIG_FILE_NAME)
    try:
        result = daemon.cli("config")
        assert result.returncode == 0, result.stderr
        header = result.stdout.splitlines()[0]
        assert header.startswith("# the running daemon's settings (pid ")
        rows = _rows(result.stdout)
        assert rows["download_limit"].split()[1] == "1.0"  # the flag, not the file's 3 MiB/s
        assert rows["download_limit"].endswith("(--download-limit)")
        assert rows["host"].split()[1] == "127.0.0.1"
        assert rows["host"].endswith("(--host)")
        bound = rows["udp_port"].split()[1]  # --udp-port 0: the port it was given, not 0
        assert bound.isdigit(), rows["udp_port"]
        assert bound != "0", rows["udp_port"]
        assert "(0 = any free port)" in rows["udp_port"]
        assert rows["udp_port"].endswith("(--udp-port)")
        assert rows["chunk_size"].split()[1:3] == ["1.0", "MiB"], rows["chunk_size"]  # a value
        assert "node default" not in result.stdout
        assert rows["http"].endswith("(--http)")
        assert rows["k"].split()[1] == "3"
        assert rows["k"].endswith(f"({path})")
        assert rows["upload_limit"].endswith(f"({path})")
        assert rows["quota"].endswith("(default)")
        assert rows["data_dir"].endswith("(--data-dir)")
        as_json = daemon.json("config")
        assert as_json["daemon"] is True
        assert as_json["pid"] == daemon.proc.pid
        by_key = {r["key"]: r for r in as_json["settings"]}
        assert by_key["download_limit"]["source"] == "--download-limit"
        status = daemon.cli("status")
        assert "download limit: 1.0 MiB/s" in status.stdout  # what config said
    finally:
        daemon.kill()
    after = invoke("config", "--data-dir", str(daemon.data_dir))
    assert after.exit_code == 0, after.output
    assert after.stdout.splitlines()[0].startswith(f"# no daemon is running for {daemon.data_dir}:")
    rows = _rows(after.stdout)
    assert rows["download_limit"].endswith(f"({path})")  # the file's, the flag is gone
    assert rows["host"].endswith("(default)")
    as_json = invoke("config", "--json", "--data-dir", str(daemon.data_dir)).stdout
    assert '"daemon": false' in as_json
