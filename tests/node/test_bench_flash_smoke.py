"""``benchmarks/bench_flash.py --smoke`` runs in seconds and ends with its JSON figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_flash.py"


def test_bench_flash_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) >= {"per_M", "failed", "holder_upload_ratio"}
    assert figures["failed"] == 0
    assert figures["per_M"]["2"] is not None
    assert figures["per_M"]["2"] > 0
    assert figures["holder_upload_ratio"]["2"] > 0
