"""The benchmarks added for issue 13 run in --smoke mode and end with one JSON object.

(main's tests/test_benchmarks_smoke.py runs every benchmark this way; this covers the new ones
on this branch until then.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script", ["bench_small_puts.py", "bench_sybil.py"])
def test_smoke(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(last, dict)
    if script == "bench_small_puts.py":
        assert last["files"] == 150
        assert last["stored_ratio"] > 1
    else:
        assert set(last) >= {"failed", "worst_s", "scenarios"}
        assert set(last["scenarios"]) == {"none", "mixed"}
