"""Issue 15: ``status`` labels contacts and connections and lists transfers like ``transfers``;
``rm``; ``config``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from p2pstore.cli import _transfer_rows
from p2pstore.config import CONFIG_FILE_NAME, DATA_DIR_ENV
from p2pstore.node import Transfer

from .fakes import FILE_ID, FakeNode, invoke

HEX = FILE_ID.hex()


def running_get(**fields: object) -> Transfer:
    transfer = Transfer("get", FILE_ID, "movie.mkv", started=time.time() - 10)
    transfer.bytes_done, transfer.bytes_total, transfer.peers = 10 << 20, 30 << 20, 3
    for key, value in fields.items():
        setattr(transfer, key, value)
    return transfer


def test_status_labels_contacts_and_connections(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("status", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "contacts:       3 in the DHT routing table" in result.stdout
    assert "connections:    2 open to other nodes" in result.stdout
    assert "peers:" not in result.stdout
    assert "transfers:      0" in result.stdout


def test_status_and_transfers_print_transfers_as_a_table(daemon: FakeNode, data_dir: Path) -> None:
    daemon.transfers = [
        running_get(),
        Transfer("get", FILE_ID, f".{HEX}.p2pstore-part", started=time.time() - 1),
    ]
    status = invoke("status", "--data-dir", str(data_dir))
    listing = invoke("transfers", "--data-dir", str(data_dir))
    for result in (status, listing):
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "movie.mkv" in out
        assert "10.0 MiB / 30.0 MiB" in out
        assert "iB/s" in out, out
        assert "p2pstore-part" not in out, "never the internal temporary name"
        assert f"{HEX[:16]}…" in out
        assert "{" not in out, "no raw dicts"
        assert "2 transfers" in out
    assert "transfers:      2" in status.stdout
    as_json = json.loads(invoke("transfers", "--json", "--data-dir", str(data_dir)).stdout)
    assert [t["name"] for t in as_json["transfers"]] == ["movie.mkv", f".{HEX}.p2pstore-part"]


def test_no_transfers(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("transfers", "--data-dir", str(data_dir))
    assert result.stdout.strip() == "no transfers"


def test_transfer_rows_rate_and_eta() -> None:
    now = 1000.0
    rows = _transfer_rows(
        [
            {"kind": "get", "name": "a", "bytes_done": 100, "bytes_total": 300, "peers": 2,
             "started": now - 10},
            {"kind": "put", "name": "b", "bytes_done": 0, "bytes_total": 0, "started": now},
            {"id": 7, "kind": "verify", "phase": "hashing", "name": "c", "bytes_done": 0,
             "bytes_total": 0, "started": now},
        ],
        now,
    )  # fmt: skip
    assert rows[0] == ["-", "get", "a", "100 B / 300 B", "10 B/s", "2", "20s"]
    assert rows[1] == ["-", "put", "b", "0 B", "-", "0", "-"]
    assert rows[2] == ["7", "verify (hashing)", "c", "0 B", "-", "0", "-"]


def test_rm_unpins_and_collects(daemon: FakeNode, data_dir: Path) -> None:
    result = invoke("rm", HEX, "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"removed {HEX} (freed 4.0 KiB)"
    assert ("unpin", FILE_ID) in daemon.calls
    assert daemon.calls[-1] == ("gc", None)
    as_json = json.loads(invoke("rm", HEX, "--json", "--data-dir", str(data_dir)).stdout)
    assert as_json == {"file_id": HEX, "removed": True, "freed_bytes": 4096}
    bad = invoke("rm", "nope", "--data-dir", str(data_dir))
    assert bad.exit_code == 2


def test_config_shows_values_and_sources(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    (data_dir / CONFIG_FILE_NAME).write_text('upload_limit = "5MB/s"\nk = 6\nlog_level = "info"\n')
    result = invoke("config", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    path = str(data_dir / CONFIG_FILE_NAME)
    assert lines["data_dir"].endswith("(--data-dir)")
    assert "4.8 MiB/s" in lines["upload_limit"]
    assert lines["upload_limit"].endswith(f"({path})")
    assert lines["k"].split()[1] == "6"
    assert lines["log_level"].split()[1] == "info"
    assert lines["udp_port"] == "udp_port          8468  (default)"
    assert "auto" in lines["quota"]
    assert lines["quota"].endswith("(default)")
    as_json = json.loads(invoke("config", "--json", "--data-dir", str(data_dir)).stdout)
    by_key = {row["key"]: row for row in as_json["settings"]}
    assert by_key["k"] == {"key": "k", "value": "6", "source": path}
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    from_env = invoke("config")
    assert f"{data_dir}  (${DATA_DIR_ENV})" in from_env.stdout


def test_config_reports_a_bad_file(data_dir: Path) -> None:
    (data_dir / CONFIG_FILE_NAME).write_text("k = 200\nm = 100\n")
    result = invoke("config", "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "k, m" in result.stderr


def test_status_shows_the_quota(daemon: FakeNode, data_dir: Path) -> None:
    from types import SimpleNamespace

    assert "quota:" not in invoke("status", "--data-dir", str(data_dir)).stdout
    daemon.store = SimpleNamespace(quota_bytes=5 << 30)
    result = invoke("status", "--data-dir", str(data_dir))
    assert "quota:          5.0 GiB (beyond it, shares pushed by other nodes are refused)" in (
        result.stdout
    )
    assert (
        json.loads(invoke("status", "--json", "--data-dir", str(data_dir)).stdout)["quota_bytes"]
        == 5 << 30
    )
    daemon.store = SimpleNamespace(quota_bytes=None)
    assert "quota:          unlimited" in invoke("status", "--data-dir", str(data_dir)).stdout


def test_default_quota_is_half_the_free_space(tmp_path: Path) -> None:
    import shutil
    from types import SimpleNamespace

    from p2pstore.config import UNLIMITED_QUOTA, auto_quota, settings_from_mapping
    from p2pstore.daemon import _set_auto_quota
    from p2pstore.store import ChunkStore

    assert auto_quota(100, 1000) == 600
    assert auto_quota(100, -5) == 100
    assert "quota_bytes" not in settings_from_mapping({}).node_overrides()
    unlimited = settings_from_mapping({"quota": "unlimited"})
    assert unlimited.quota == UNLIMITED_QUOTA
    assert unlimited.node_overrides()["quota_bytes"] is None
    assert settings_from_mapping({"quota": "2GiB"}).node_overrides()["quota_bytes"] == 2 << 30
    with ChunkStore.open(tmp_path / "store") as store:
        assert store.quota_bytes is None
        free = shutil.disk_usage(tmp_path).free
        _set_auto_quota(SimpleNamespace(store=store), tmp_path)
        quota = store.quota_bytes
        assert quota is not None
        assert abs(quota - free // 2) < max(free // 100, 64 << 20)
