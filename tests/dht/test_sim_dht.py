"""The discrete-event simulator of ``benchmarks/sim_dht.py``: deterministic, and it simulates
the production node class (not a model of it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from p2pstore.dht.protocol import DhtNode

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_dht.py"
TIMING_KEYS = {"wall_s", "cpu_s", "build_s", "peak_rss_MiB"}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sim_dht", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim_dht"] = module
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_figures_and_the_node_is_the_production_class() -> None:
    sim_dht = _load()
    argv = ["--nodes", "2000", "--minutes", "5", "--lookups", "60", "--seed", "7"]

    def once() -> tuple[Any, dict[str, Any]]:
        sim, result = sim_dht.simulate(sim_dht.parse_args(argv))
        return sim, result

    sim, first = once()
    _, second = once()
    figures = {k: v for k, v in first.items() if k not in TIMING_KEYS}
    assert figures == {k: v for k, v in second.items() if k not in TIMING_KEYS}
    # The simulated nodes are the class DhtService drives, not a stand-in.
    assert {type(s.node) for s in sim.live} == {DhtNode}
    assert first["lookups"] == 60
    assert first["joins"] > 0, "churn ran: nodes joined with the real bootstrap"
    assert first["success_rate"] >= 0.95
    assert 80.0 <= first["rtt_median_ms"] <= 120.0
    assert first["rtt_p90_ms"] >= 250.0


def test_smoke_mode_prints_a_json_last_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 300
    assert result["lookups"] > 0
