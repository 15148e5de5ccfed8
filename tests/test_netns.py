"""benchmarks/_netns.py builds isolated namespace labs and always removes them; bench_netns runs.

The lab tests need root, ``ip netns``, ``tc`` and ``nft`` (``.ci/run`` installs iproute2 and
nftables); elsewhere they are skipped with the reason. They send traffic only between hosts
inside the namespaces they create.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _netns  # noqa: E402
from _netns import Lab  # noqa: E402

MISSING = _netns.missing_requirements()
needs_lab = pytest.mark.skipif(
    bool(MISSING), reason="network namespace lab needs " + "; ".join(MISSING)
)


def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(link["ifname"] for link in json.loads(out.stdout))


def _ours(prefix: str) -> list[str]:
    return [n for n in _netns.list_namespaces() if n.startswith(prefix)]


# ----------------------------------------------------------------------------- no root needed


def test_pick_subnet_skips_every_used_network() -> None:
    all_24 = list(_netns.BENCHMARK_RANGE.subnets(new_prefix=24))
    free = all_24[137]
    used = [n for n in all_24 if n != free] + [ipaddress.IPv4Network("10.0.0.0/8")]
    assert _netns.pick_subnet(used) == free


def test_pick_subnet_refuses_when_the_range_is_taken() -> None:
    with pytest.raises(_netns.NetnsUnavailable):
        _netns.pick_subnet([ipaddress.IPv4Network("198.16.0.0/12")])


def test_subnet_is_a_benchmarking_range_never_routed() -> None:
    assert _netns.BENCHMARK_RANGE.is_private  # RFC 2544: not reachable on the Internet
    assert not _netns.BENCHMARK_RANGE.is_global


def test_missing_requirements_names_root_and_each_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_netns.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = " ".join(_netns.missing_requirements())
    for needle in ("root", "ip (Debian package iproute2)", "tc", "nft (Debian package nftables)"):
        assert needle in missing


def test_smoke_without_root_says_why_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_netns

    monkeypatch.setattr(_netns, "missing_requirements", lambda: ["root (test)"])
    assert bench_netns.main(["--smoke"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"skipped": "bench_netns needs root (test)"}
    assert bench_netns.main([]) == 2  # a real run must not pretend


# ----------------------------------------------------------------------------- labs


@needs_lab
def test_lab_builds_isolated_hosts_and_removes_everything() -> None:
    links_before = _root_links()
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.shape(a, rate="40mbit", burst="64kb", latency="200ms")
        lab.set_loss(a, 5)
        assert sorted(_ours(lab.prefix)) == sorted(
            [f"{lab.prefix}bridge", f"{lab.prefix}a", f"{lab.prefix}b"]
        )
        assert _root_links() == links_before, "a lab must not add anything to the root namespace"
        assert lab.subnet is not None
        for host in (a, b):
            assert ipaddress.IPv4Address(host.address) in lab.subnet
            routes = subprocess.run(
                ["ip", "-n", host.netns, "-j", "route", "show"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert [r["dst"] for r in json.loads(routes.stdout)] == [str(lab.subnet)]
        qdisc = subprocess.run(
            ["tc", "-n", a.netns, "qdisc", "show", "dev", _netns.HOST_IF],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "tbf" in qdisc.stdout
        # The hosts reach each other over the bridge.
        server = lab.popen(
            a,
            [
                sys.executable,
                "-c",
                "import socket\n"
                f"s = socket.create_server(({a.address!r}, 5555))\n"
                "c, _ = s.accept(); c.sendall(b'hello'); c.close()",
            ],
        )
        deadline = time.monotonic() + 10
        client = None
        while time.monotonic() < deadline:
            client = subprocess.run(
                b.command(
                    [
                        sys.executable,
                        "-c",
                        "import socket\n"
                        f"s = socket.create_connection(({a.address!r}, 5555), timeout=5)\n"
                        "print(s.recv(5).decode())",
                    ]
                ),
                capture_output=True,
                text=True,
                timeout=20,
            )
            if client.returncode == 0:
                break
            time.sleep(0.1)
        assert client is not None
        assert client.stdout.strip() == "hello", client.stderr
        server.wait(10)
        prefix = lab.prefix
    assert _ours(prefix) == []
    assert _root_links() == links_before


@needs_lab
def test_lab_is_removed_after_an_exception_with_its_processes() -> None:
    started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def build_then_fail() -> None:
        with Lab() as lab:
            started.append((lab.prefix, lab.popen(lab.add_host("x"), ["sleep", "60"])))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_then_fail()
    ((prefix, proc),) = started
    assert _ours(prefix) == []
    assert proc.poll() is not None, "the process started in the lab must be stopped"


@needs_lab
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_lab_is_removed_when_the_run_is_signalled(signum: int) -> None:
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import _netns\n"
        "with _netns.signals_raise(), _netns.Lab() as lab:\n"
        "    lab.add_host('h0')\n"
        "    print(lab.prefix, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    prefix = proc.stdout.readline().strip()
    assert prefix.startswith(_netns.NAME_PREFIX), proc.stderr.read() if proc.stderr else ""
    assert len(_ours(prefix)) == 2
    proc.send_signal(signum)
    proc.wait(30)
    assert _ours(prefix) == []


@needs_lab
def test_cleanup_leftovers_removes_only_dead_runs() -> None:
    dead = f"{_netns.NAME_PREFIX}999999999-abcdef-x"  # a pid that cannot exist
    subprocess.run(["ip", "netns", "add", dead], check=True)
    try:
        with Lab() as lab:
            lab.add_host("alive")
            removed = _netns.cleanup_leftovers()
            assert dead in removed
            assert len(_ours(lab.prefix)) == 2, "a running lab must be left alone"
    finally:
        subprocess.run(["ip", "netns", "delete", dead], capture_output=True)


@needs_lab
def test_bench_netns_smoke_runs_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_netns.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["share"]["1"] < 1.5
    assert result["first_byte_s"] is not None
    assert result["cells"][0]["bytes_per_holder"] == [2 << 20]
    assert "lab namespaces left: 0" in done.stdout
