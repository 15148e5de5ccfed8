"""Every benchmark script runs in its ``--smoke`` mode, so none can rot unnoticed.

Each script in ``benchmarks/`` named ``bench_*.py`` or ``sim_*.py`` is run as a user would run it
(``python benchmarks/NAME.py --smoke``, in its own process) and must exit 0 within
``SMOKE_TIMEOUT`` seconds with one JSON object as the last line of its output. The figures of a
smoke run mean nothing; that the script still works end to end does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted([*BENCHMARKS.glob("bench_*.py"), *BENCHMARKS.glob("sim_*.py")])
#: Seconds one smoke run may take on a loaded 2-core machine before it counts as broken.
SMOKE_TIMEOUT = 180.0


def test_every_benchmark_is_found() -> None:
    assert len(SCRIPTS) >= 5, f"benchmark scripts not found under {BENCHMARKS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_smoke_mode_runs_and_ends_with_json(script: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    output = completed.stdout.strip().splitlines()
    assert completed.returncode == 0, (
        f"{script.name} --smoke exited {completed.returncode}\n"
        f"--- stdout (tail)\n{completed.stdout[-3000:]}\n"
        f"--- stderr (tail)\n{completed.stderr[-3000:]}"
    )
    assert output, f"{script.name} --smoke printed nothing"
    last = json.loads(output[-1])
    assert isinstance(last, dict), f"the last line of {script.name} is not a JSON object"
    assert last, f"the last line of {script.name} is an empty JSON object"
