"""``p2pstore check`` end to end through the control socket (a scripted node), and the
repair settings of ``p2pstore.toml``."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cli.fakes import FakeNode, daemon_in_thread, short_tmp_dir
from typer.testing import CliRunner

from p2pstore.cli import EXIT_DEGRADED, EXIT_LOST, app
from p2pstore.config import parse_duration, settings_from_mapping
from p2pstore.errors import ConfigError, FileUnavailableError
from p2pstore.manifest import Manifest
from p2pstore.node import NodeConfig, PhaseProgress
from p2pstore.repair import FileHealth, assess
from p2pstore.transfer.repairer import RepairReport

runner = CliRunner()
MANIFEST = Manifest.from_table("f", 3 * 4 * 65536, 65536, 4, 2, random.Random(7).randbytes(18 * 32))
FID = MANIFEST.file_id
NODE = b"\x44" * 32


def _health(positions: set[int]) -> FileHealth:
    return assess(MANIFEST, {NODE: positions})


HEALTHY = _health(set(range(18)))
DEGRADED = _health(set(range(18)) - {3, 7, 8})
LOST = _health(set(range(12)))


@dataclass
class HealthNode(FakeNode):
    """A scripted node that also answers check and repair."""

    health: FileHealth = HEALTHY
    repaired: list[bytes] = field(default_factory=list)

    async def check(self, file_id: bytes) -> FileHealth:
        if file_id != FID:
            raise FileUnavailableError(f"no reachable node has the manifest of {file_id.hex()}")
        return self.health

    async def repair(self, file_id: bytes, *, progress: Any = None) -> RepairReport:
        self.repaired.append(file_id)
        if progress is not None:
            progress(PhaseProgress("rebuilding", 2, 2, "stripes"))
        return RepairReport(
            file_id, self.health, HEALTHY, [0, 1], rebuilt=3, placed={"127.0.0.1:9": 3},
            bytes_fetched=600_000, bytes_sent=200_000,
        )  # fmt: skip


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HealthNode, Path]]:
    monkeypatch.setattr(logging.getLogger("p2pstore.control"), "propagate", False)
    with short_tmp_dir() as d, daemon_in_thread(HealthNode(), d) as served:
        assert isinstance(served, HealthNode)
        yield served, d


@pytest.mark.parametrize(
    ("health", "code"), [(HEALTHY, 0), (DEGRADED, EXIT_DEGRADED), (LOST, EXIT_LOST)]
)
def test_check_prints_the_verdict_and_exits_by_it(
    node: tuple[HealthNode, Path], health: FileHealth, code: int
) -> None:
    served, data_dir = node
    served.health = health
    result = runner.invoke(app, ["check", FID.hex(), "--data-dir", str(data_dir)])
    assert result.exit_code == code, result.output
    assert result.stdout.startswith(f"{FID.hex()}: {health.verdict.value}")
    if health is DEGRADED:
        assert "degraded:     stripe(s) 0-1" in result.stdout
    if health is LOST:
        assert "lost:         stripe(s) 2" in result.stdout
    as_json = runner.invoke(app, ["check", FID.hex(), "--json", "--data-dir", str(data_dir)])
    assert as_json.exit_code == code
    data = json.loads(as_json.stdout)
    assert data["verdict"] == health.verdict.value
    assert data["reachable"] == [s.reachable for s in health.stripes]


def test_check_repair_reports_the_repair_and_the_state_after(
    node: tuple[HealthNode, Path],
) -> None:
    served, data_dir = node
    served.health = DEGRADED
    result = runner.invoke(app, ["check", FID.hex(), "--repair", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert served.repaired == [FID]
    assert "repair:       3 share(s) rebuilt in 2 stripe(s), placed on 1 node(s)" in result.stdout
    data = json.loads(
        runner.invoke(
            app, ["check", FID.hex(), "--repair", "--json", "--data-dir", str(data_dir)]
        ).stdout
    )
    assert data["verdict"] == "healthy"
    assert data["repair"]["before"]["verdict"] == "degraded"
    assert data["repair"]["shares_rebuilt"] == 3


def test_check_of_an_unknown_file_fails_with_one_line(node: tuple[HealthNode, Path]) -> None:
    _, data_dir = node
    result = runner.invoke(app, ["check", "ab" * 32, "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no reachable node has the manifest")
    assert len(result.stderr.strip().splitlines()) == 1


def test_repair_settings() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("30m") == 1800.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("off") is None
    assert parse_duration("0") is None
    with pytest.raises(ConfigError):
        parse_duration("soon")
    settings = settings_from_mapping({"repair_interval": "10m", "repair_threshold": 0})
    assert settings.node_overrides()["repair_interval"] == 600.0
    assert settings.node_overrides()["repair_threshold"] == 0
    assert (
        settings_from_mapping({"repair_interval": "off"}).node_overrides()["repair_interval"]
        is None
    )
    assert "repair_interval" not in settings_from_mapping({}).node_overrides()
    for bad in ({"repair_interval": -1}, {"repair_threshold": -1}, {"repair_threshold": "1"}):
        with pytest.raises(ConfigError):
            settings_from_mapping(bad)
    assert NodeConfig().repair_interval == 3600.0
    with pytest.raises(ConfigError):
        NodeConfig(repair_interval=0)
