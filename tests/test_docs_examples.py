"""The runnable examples of ``docs/migration.md``: each script must exit 0 on its own.

Each example starts its own small network on 127.0.0.1 (free ports) in temporary directories,
does what it documents, checks the outcome with assertions and prints ``OK`` last.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
MIGRATION_DOC = ROOT / "docs" / "migration.md"
#: Generous for a shared 2-core machine; each example normally takes 1-8 seconds.
EXAMPLE_TIMEOUT = 90.0

SCRIPTS = sorted(EXAMPLES.glob("migrate_*.py"))


def test_there_is_an_example_per_migrated_api() -> None:
    names = {p.name for p in SCRIPTS}
    assert names == {
        "migrate_p2pnode.py",
        "migrate_register_chunks.py",
        "migrate_find_peers.py",
        "migrate_publish_metadata.py",
        "migrate_p2pclient.py",
        "migrate_chunk_downloader.py",
    }


def test_migration_guide_links_every_example() -> None:
    text = MIGRATION_DOC.read_text(encoding="utf-8")
    linked = set(re.findall(r"\(examples/(migrate_\w+\.py)\)", text))
    assert linked == {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.rstrip().splitlines()[-1] == "OK", proc.stdout
    assert list(tmp_path.iterdir()) == [], "the example left files behind"
