"""The CLI starts fast: its entry point and its client commands import only what the control
client needs (no numpy, cryptography, trio or node stack), checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

from .fakes import FakeNode, daemon_in_thread, short_tmp_dir

#: Modules a client command must not execute: the erasure code, the crypto, the event loop, the
#: node stack. (``trio`` may be registered lazily by ``p2pstore.control``; ``trio._core`` is
#: what executing it imports.)
HEAVY = (
    "numpy",
    "cryptography",
    "trio._core",
    "p2pstore.node",
    "p2pstore.dht",
    "p2pstore.store",
    "p2pstore.erasure",
    "p2pstore.transfer",
    "p2pstore.wire.channel",
    "p2pstore.wire.client",
)

_REPORT = "import json, sys; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"


def _loaded_after(code: str, *args: str) -> list[str]:
    script = code + "\n" + _REPORT.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_entry_point_loads_no_heavy_module() -> None:
    assert _loaded_after("import p2pstore.cli") == []


def test_a_status_command_runs_without_loading_them() -> None:
    # The whole command, argument parsing to printed result, against a real control socket.
    code = (
        "import sys\n"
        "from p2pstore.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='p2pstore')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    with short_tmp_dir() as data_dir, daemon_in_thread(FakeNode(), data_dir):
        loaded = _loaded_after(code, "status", "--data-dir", str(data_dir))
    assert loaded == []


def test_the_library_still_exports_everything_lazily() -> None:
    code = (
        "import p2pstore\n"
        "import p2pstore.wire as wire\n"
        "missing = [n for n in p2pstore.__all__ if not hasattr(p2pstore, n)]\n"
        "missing += [n for n in wire.__all__ if not hasattr(wire, n)]\n"
        "assert not missing, missing\n"
        "assert p2pstore.open_node.__module__ == 'p2pstore.node'\n"
    )
    # Using the names imports the node stack, as it should.
    assert "p2pstore.node" in _loaded_after(code)
