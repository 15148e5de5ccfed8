"""``benchmarks/bench_repair.py --smoke`` runs, repairs, and ends with one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_repair.py"


def test_bench_repair_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shares_rebuilt"] > 0
    assert result["new_holders"] >= 1
    # bytes moved per byte lost: about k, and never less than k - 1 (the repairer's own share)
    assert result["k"] - 1 <= result["ratio"] <= result["k"] + 0.5
