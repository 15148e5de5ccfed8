"""Real-link benchmark: real ``p2pstore daemon``s in network namespaces, holders' uplinks shaped.

Definitions (``/work/shared/MEASURING.md``, bench_netns.py). Run as root. For every cell of the
matrix N holders x loss x delay a fresh lab is built (``benchmarks/_netns.py``): a bridge in a
namespace of its own, N holder namespaces and one downloader namespace on it, addresses from an
unused /24 of 198.18.0.0/15, nothing connected to the root namespace or a real interface. Every
holder's uplink gets tbf (``--rate`` 40mbit, ``--burst`` 64kb, ``--latency`` 200ms); loss drops
a random share of the packets every host puts on the wire (nftables ``numgen random mod 1000 < 5
drop`` for 0.5 %); delay delays every packet towards every host with netem (RTT = 2 x delay), only
where the kernel has netem (this one may not: the benchmark says so and skips those cells).

In each namespace a real ``p2pstore daemon`` runs (the console script of this environment). The
file is ``put`` (``--no-disperse``) on every holder: each computes the same content-derived file
ID, so all hold every share, before the timed download. The downloader waits until ``p2pstore
providers`` lists all N holders, then runs ``p2pstore get FILE_ID -o OUT --json`` in its namespace
as a user would; its process wall time is the figure:

* ``share[N]`` = F x 8 / wall / (N x R): F the file's bytes, R the shaped rate; CLI start-up,
  discovery, manifest, transfer and the final write and rename all count;
* ``first_byte_s``: from the command's start to the first verified chunk (the daemon reports its
  ``started_at`` and ``first_chunk_seconds``);
* bytes per holder: verified bytes the downloader got from each holder.

Note that tbf counts whole Ethernet frames, so even a perfect download reaches at most about
1448/1514 = 0.956 of R in payload (TCP/IP headers with timestamps).

Everything created is removed at the end, also after a failure, Ctrl-C or SIGTERM; leftovers of a
run killed with SIGKILL: ``python benchmarks/_netns.py --cleanup``.

Usage: ``sudo python benchmarks/bench_netns.py [--size 64MiB] [--holders 1,2,4,8] [--loss 0,0.5]
[--delay 25] [--repeat 1] [--smoke]``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _netns
from _netns import Host, Lab
from _swarm_util import file_sha256, parse_size, write_random_file

UDP_PORT = 8468
TCP_PORT = 9000
#: Seconds a daemon may take to print its ready line (imports + bind + bootstrap, on a busy box).
READY_TIMEOUT = 60.0
#: Seconds for every holder to become findable through the downloader's DHT after the puts.
PROVIDERS_TIMEOUT = 60.0
#: Seconds a ``put`` may take.
PUT_TIMEOUT = 300.0
#: A get may take this long beyond 5x its ideal time before the benchmark gives up on it.
GET_SLACK = 60.0
#: Lines of a failed daemon's log shown in the error.
LOG_TAIL_LINES = 20
#: The downloader's daemon under ``--trace`` (records the download's timeline).
TRACED = Path(__file__).with_name("_traced_p2pstore.py")
#: Seconds between samples of holder 0's TCP state (``ss``) under ``--trace``.
SS_INTERVAL = 0.05
#: tbf counts Ethernet frames: payload per frame with TCP timestamps (1448 of 1514 bytes).
WIRE_EFFICIENCY = 1448 / 1514


def p2pstore_command() -> str:
    """The ``p2pstore`` console script of the running environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("p2pstore")
    if beside.exists():
        return str(beside)
    found = shutil.which("p2pstore")
    if found is None:
        raise SystemExit("error: no p2pstore command found (pip install -e . first)")
    return found


def parse_rate_bits(text: str) -> float:
    """``"40mbit"`` -> 40e6 bits per second (tc's decimal units: kbit, mbit, gbit)."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return float(lowered[: -len(unit)]) * factor
    raise argparse.ArgumentTypeError(f"rate {text!r}: use e.g. 40mbit")


@dataclass
class Cell:
    """One measured download."""

    holders: int
    loss_pct: float
    delay_ms: float
    wall: float
    ideal: float
    share: float
    first_byte: float | None
    daemon_seconds: float | None
    bytes_per_holder: list[int]
    dropped: int
    setup: float
    cpu_downloader: float | None = None
    cpu_holders: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Daemon:
    """A ``p2pstore daemon`` process in a lab host, with its data directory and log."""

    def __init__(self, lab: Lab, host: Host, data_dir: Path, log_path: Path) -> None:
        self.lab, self.host, self.data_dir, self.log_path = lab, host, data_dir, log_path
        self.proc: subprocess.Popen[str] | None = None
        self.in_flight: int | None = None

    def start(self, exe: str, bootstrap: str | None, *, trace_to: Path | None = None) -> None:
        """Start the daemon; with ``trace_to``, the traced wrapper writing its timeline there."""
        command = [exe] if trace_to is None else [sys.executable, str(TRACED)]
        argv = [*command, "daemon", "--data-dir", str(self.data_dir), "--host", self.host.address]
        argv += ["--udp-port", str(UDP_PORT), "--tcp-port", str(TCP_PORT), "--json"]
        if bootstrap is not None:
            argv += ["--bootstrap", f"{bootstrap}:{UDP_PORT}"]
        env = None
        if trace_to is not None:
            env = {**os.environ, "P2PSTORE_TRACE": str(trace_to)}
            if self.in_flight is not None:
                env["P2PSTORE_EXPERIMENT_IN_FLIGHT"] = str(self.in_flight)
        log = self.log_path.open("w")
        try:
            self.proc = self.lab.popen(
                self.host, argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"daemon on {self.host.name} not ready after {timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(
                f"daemon on {self.host.name} exited ({self.proc.returncode}):\n{self.log_tail()}"
            )
        info: dict[str, Any] = json.loads(line)
        return info

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-LOG_TAIL_LINES:])
        return ""


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all its threads), from
    ``/proc/PID/stat``; ``None`` if it is gone. (``ip netns exec`` execs, so the pid of the
    ``Popen`` is the daemon's own.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemons_cpu_seconds(daemons: Sequence[Daemon]) -> float | None:
    """Total CPU seconds used so far by ``daemons`` (``None`` if any is gone)."""
    total = 0.0
    for d in daemons:
        used = process_cpu_seconds(d.proc.pid) if d.proc is not None else None
        if used is None:
            return None
        total += used
    return total


def cli(lab: Lab, host: Host, exe: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``p2pstore ARGS --json`` in ``host``'s namespace; its JSON output."""
    proc = lab.popen(host, [exe, *args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        lab.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"p2pstore {' '.join(args)} on {host.name}: {err.decode().strip()}")
    result: dict[str, Any] = json.loads(out)
    return result


def wait_providers(
    lab: Lab, host: Host, exe: str, data_dir: Path, file_id: str, want: int
) -> float:
    """Poll ``p2pstore providers`` from ``host`` until ``want`` providers are listed."""
    started = time.perf_counter()
    deadline = started + PROVIDERS_TIMEOUT
    while True:
        found = cli(lab, host, exe, ["providers", file_id, "--data-dir", str(data_dir)], 60)
        if len(found.get("providers") or []) >= want:
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"only {len(found.get('providers') or [])} of {want} providers findable "
                f"after {PROVIDERS_TIMEOUT:g} s"
            )
        time.sleep(0.2)


def run_cell(
    args: argparse.Namespace,
    exe: str,
    src: Path,
    digest: bytes,
    workdir: Path,
    n: int,
    loss_pct: float,
    delay_ms: float,
) -> Cell:
    """Build a lab for one cell, run the daemons, put, time one ``get``, tear everything down."""
    size = src.stat().st_size
    setup_started = time.perf_counter()
    cell_dir = Path(tempfile.mkdtemp(prefix="cell-", dir=workdir))
    try:
        with Lab() as lab:
            holders = [lab.add_host(f"h{i}") for i in range(n)]
            downloader = lab.add_host("dl")
            for h in holders:
                lab.shape(h, rate=args.rate, burst=args.burst, latency=args.latency)
            per_mille = round(loss_pct * 10)
            if per_mille:
                for h in lab.hosts:
                    lab.set_loss(h, per_mille)
            if delay_ms:
                for h in lab.hosts:
                    lab.set_delay(h, delay_ms)
            daemons = {
                h.name: Daemon(lab, h, cell_dir / h.name, cell_dir / f"{h.name}.log")
                for h in lab.hosts
            }
            first = daemons[holders[0].name]
            first.start(exe, None)
            first.wait_ready()
            trace_path = cell_dir / "trace.json" if args.trace else None
            daemons[downloader.name].in_flight = args.in_flight
            for h in lab.hosts[1:]:
                daemons[h.name].start(
                    exe, holders[0].address, trace_to=trace_path if h is downloader else None
                )
            for h in lab.hosts[1:]:
                daemons[h.name].wait_ready()
            puts = [
                lab.popen(
                    h,
                    [
                        exe,
                        "put",
                        str(src),
                        "--no-disperse",
                        "--json",
                        "--data-dir",
                        str(daemons[h.name].data_dir),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for h in holders
            ]
            ids = set()
            for h, proc in zip(holders, puts, strict=True):
                out, err = proc.communicate(timeout=PUT_TIMEOUT)
                if proc.returncode != 0:
                    raise RuntimeError(f"put on {h.name} failed: {err.decode().strip()}")
                ids.add(json.loads(out)["file_id"])
            if len(ids) != 1:
                raise RuntimeError(f"holders computed different file IDs: {sorted(ids)}")
            (file_id,) = ids
            dl_dir = daemons[downloader.name].data_dir
            wait_providers(lab, downloader, exe, dl_dir, file_id, n)
            setup = time.perf_counter() - setup_started

            out_path = cell_dir / "downloaded.bin"
            ideal = size * 8 / (n * parse_rate_bits(args.rate))
            argv = [exe, "get", file_id, "-o", str(out_path), "--json", "--data-dir", str(dl_dir)]
            sampler = TcpSampler(holders[0]) if args.trace else None
            holder_daemons = [daemons[h.name] for h in holders]
            cpu_dl_before = daemons_cpu_seconds([daemons[downloader.name]])
            cpu_holders_before = daemons_cpu_seconds(holder_daemons)
            started_unix = time.time()
            started = time.perf_counter()
            env = None
            if args.trace:  # the same command through a wrapper that notes the reply's arrival
                argv = [sys.executable, str(TRACED), *argv[1:]]
                env = {**os.environ, "P2PSTORE_TRACE_CLIENT": str(cell_dir / "client.json")}
            proc = lab.popen(
                downloader, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            try:
                if sampler is not None:
                    sampler.start()
                out, err = proc.communicate(timeout=GET_SLACK + 5 * ideal + delay_ms)
            finally:
                wall = time.perf_counter() - started
                cpu_dl = daemons_cpu_seconds([daemons[downloader.name]])
                cpu_holders = daemons_cpu_seconds(holder_daemons)
                lab.stop(proc)
                if sampler is not None:
                    sampler.stop()
            if proc.returncode != 0:
                raise RuntimeError(f"get failed ({proc.returncode}): {err.decode().strip()}")
            result = json.loads(out)
            if file_sha256(out_path) != digest:
                raise RuntimeError("the downloaded file differs from the source")
            first_chunk = result.get("first_chunk_seconds")
            first_byte = None
            if isinstance(first_chunk, (int, float)) and "started_at" in result:
                first_byte = float(result["started_at"]) + first_chunk - started_unix
            by_addr = {h.address: i for i, h in enumerate(holders)}
            per_holder = [0] * n
            for label, nbytes in (result.get("bytes_from_peers") or {}).items():
                per_holder[by_addr[label.rsplit(":", 1)[0]]] += int(nbytes)
            dropped = sum(lab.dropped_packets(h) for h in lab.hosts)
            daemon_seconds = result.get("seconds")
            extra: dict[str, Any] = {}
            if trace_path is not None and sampler is not None:
                extra = summarize_trace(
                    json.loads(trace_path.read_text()),
                    started_unix,
                    wall,
                    float(result["started_at"]),
                    n * parse_rate_bits(args.rate) / 8,
                )
                client = json.loads((cell_dir / "client.json").read_text())
                extra["phases_s"]["reply_at_cli"] = round(client["reply"] - started_unix, 4)
                extra["phases_s"]["cli_atexit"] = round(client["atexit"] - started_unix, 4)
                extra["tcp_holder0"] = sampler.summary(started_unix)
                extra["tbf"] = [tbf_stats(h) for h in holders]
            return Cell(
                holders=n,
                loss_pct=loss_pct,
                delay_ms=delay_ms,
                wall=wall,
                ideal=ideal,
                share=ideal / wall,
                first_byte=first_byte,
                daemon_seconds=float(daemon_seconds) if daemon_seconds is not None else None,
                bytes_per_holder=per_holder,
                dropped=dropped,
                setup=setup,
                cpu_downloader=_delta(cpu_dl_before, cpu_dl),
                cpu_holders=_delta(cpu_holders_before, cpu_holders),
                extra=extra,
            )
    finally:
        shutil.rmtree(cell_dir, ignore_errors=True)


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


class TcpSampler:
    """Samples the TCP state of ``host``'s chunk-server sockets (``ss -tin``) in a thread."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        argv = self.host.command(["ss", "-tinH", "state", "established", f"sport = :{TCP_PORT}"])
        while not self._stop.is_set():
            at = time.time()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            best: dict[str, float] = {}
            for line in done.stdout.splitlines():
                if "rtt:" not in line:
                    continue
                info = {
                    key: float(m.group(1)) if (m := pattern.search(line)) else 0.0
                    for key, pattern in _SS_FIELDS.items()
                }
                if info["acked"] > best.get("acked", -1):
                    best = info
            if best:
                self.samples.append((at, best))
            self._stop.wait(SS_INTERVAL)

    def summary(self, origin: float) -> dict[str, Any]:
        """Max and median RTT and cwnd of the busiest connection, and the cwnd ramp."""
        if not self.samples:
            return {}
        rtts = [s["rtt_ms"] for _, s in self.samples]
        cwnds = [s["cwnd"] for _, s in self.samples]
        ramp = [(round(t - origin, 3), s["cwnd"], s["rtt_ms"]) for t, s in self.samples[:12]]
        notsent = [s["notsent"] for _, s in self.samples]
        return {
            "samples": len(self.samples),
            "rtt_ms_median": statistics.median(rtts),
            "rtt_ms_max": max(rtts),
            "cwnd_median": statistics.median(cwnds),
            "cwnd_max": max(cwnds),
            "notsent_bytes_median": statistics.median(notsent),
            "notsent_bytes_max": max(notsent),
            "first_samples_t_cwnd_rtt": ramp,
        }


_SS_FIELDS = {
    "cwnd": re.compile(r"\bcwnd:(\d+)"),
    "rtt_ms": re.compile(r"\brtt:([\d.]+)/"),
    "acked": re.compile(r"\bbytes_acked:(\d+)"),
    "notsent": re.compile(r"\bnotsent:(\d+)"),
}


def tbf_stats(host: Host) -> dict[str, int]:
    """Packets sent, dropped and over the limit in ``host``'s tbf (``tc -s qdisc``)."""
    done = subprocess.run(
        ["tc", "-n", host.netns, "-s", "-j", "qdisc", "show", "dev", _netns.HOST_IF],
        capture_output=True,
        text=True,
        timeout=10,
    )
    for q in json.loads(done.stdout or "[]"):
        if q.get("kind") == "tbf":
            return {k: int(q.get(k, 0)) for k in ("packets", "drops", "overlimits")}
    return {}


def summarize_trace(
    trace: dict[str, Any], origin: float, wall: float, received_at: float, ceiling_bps: float
) -> dict[str, Any]:
    """Seconds from the command's start to each phase of the download, and per-peer figures.

    ``ceiling_bps``: N x R in bytes/s; the transfer phase is compared with it (and with the
    wire's payload ceiling, :data:`WIRE_EFFICIENCY` of it).
    """
    events = trace["events"]

    def first(name: str, **match: Any) -> float | None:
        for e in events:
            if e["e"] == name and all(e.get(k) == v for k, v in match.items()):
                return round(e["t"] - origin, 4)
        return None

    def last(name: str) -> float | None:
        times = [e["t"] for e in events if e["e"] == name]
        return round(max(times) - origin, 4) if times else None

    phases = {
        "request_at_daemon": round(received_at - origin, 4),
        "run_start": first("run_start"),
        "quick_discovery": first("discovered", quick=True),
        "full_discovery": first("discovered", quick=False),
        "manifest": first("manifest"),
        "prepared": first("prepared"),
        "first_arrival": first("arrived"),
        "first_chunk": first("chunk"),
        "complete": first("complete"),
        "workers_end": last("worker_end"),
        "last_batch_stored": last("batch_stored"),
        "last_stripe_written": last("stripe_written"),
        "writer_end": first("writer_end"),
        "finish_start": first("finish_start"),
        "finish_end": first("finish_end"),
        "run_end": first("run_end"),
        "op_end": first("op_end"),
        "command_exit": round(wall, 4),
    }
    quick = next((e for e in events if e["e"] == "discovered" and e.get("quick")), None)
    added = [e["t"] - origin for e in events if e["e"] == "peer_added"]
    peers: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["e"] not in ("request", "chunk", "connect_start", "connected", "peer_added"):
            continue
        p = peers.setdefault(e["peer"], {"bytes": 0, "chunks": 0, "dups": 0})
        t = round(e["t"] - origin, 4)
        if e["e"] == "request":
            p.setdefault("first_request", t)
            p["dups"] += 1 if e.get("dup") else 0
        elif e["e"] == "chunk":
            p.setdefault("first_chunk", t)
            p["last_chunk"] = t
            p["bytes"] += e["bytes"]
            p["chunks"] += 1
        else:
            p.setdefault(e["e"], t)
    complete = phases["complete"]
    total = sum(p["bytes"] for p in peers.values())
    transfer = None
    if complete is not None and phases["first_chunk"] is not None:
        span = complete - phases["first_chunk"]
        transfer = {
            "seconds": round(span, 4),
            "share_of_NxR": round(total / span / ceiling_bps, 4) if span > 0 else None,
            "share_of_wire_ceiling": (
                round(total / span / (ceiling_bps * WIRE_EFFICIENCY), 4) if span > 0 else None
            ),
        }
    arrivals = sorted(e["t"] for e in events if e["e"] == "arrived")
    stored = sorted(e["t"] for e in events if e["e"] == "chunk")
    lag = [b - a for a, b in zip(arrivals, stored, strict=False)]
    tails = [
        round(complete - p["last_chunk"], 4)
        for p in peers.values()
        if complete is not None and "last_chunk" in p
    ]
    return {
        "phases_s": phases,
        "quick_discovery_found": quick["new"] if quick else None,
        "peers_added_s": [round(t, 4) for t in sorted(added)],
        "transfer": transfer,
        "peer_idle_before_complete_s": sorted(tails),
        "duplicates": sum(p["dups"] for p in peers.values()),
        "arrived_chunks": len(arrivals),
        "arrival_to_stored_s_median": round(statistics.median(lag), 4) if lag else None,
        "arrival_to_stored_s_max": round(max(lag), 4) if lag else None,
        "bytes_received": total,
        "per_peer": {trace["providers"].get(k, k): v for k, v in peers.items()},
    }


def format_trace(extra: dict[str, Any]) -> str:
    """A few lines for people: where the command's time went."""
    ph = extra["phases_s"]
    order = [k for k, v in ph.items() if v is not None]
    lines = ["    phases (s from the command's start): " + ", ".join(f"{k} {ph[k]}" for k in order)]
    lines.append(
        f"    quick look-up found {extra['quick_discovery_found']}; peers added at "
        f"{extra['peers_added_s']}; transfer {extra['transfer']}; "
        f"duplicates {extra['duplicates']}; chunks arrived {extra['arrived_chunks']}, "
        f"arrival -> stored median {extra['arrival_to_stored_s_median']} s, "
        f"max {extra['arrival_to_stored_s_max']} s"
    )
    lines.append(f"    peers idle before the last stripe: {extra['peer_idle_before_complete_s']}")
    tcp = extra.get("tcp_holder0") or {}
    if tcp:
        lines.append(
            f"    holder 0 TCP: rtt median {tcp['rtt_ms_median']} ms, max {tcp['rtt_ms_max']} ms;"
            f" cwnd median {tcp['cwnd_median']}, max {tcp['cwnd_max']}; unsent in the socket"
            f" buffer median {tcp['notsent_bytes_median']:.0f} B,"
            f" max {tcp['notsent_bytes_max']:.0f} B; tbf {extra.get('tbf')}"
        )
    return "\n".join(lines)


def _row(c: Cell) -> str:
    first = f"{c.first_byte:7.3f}" if c.first_byte is not None else "      -"
    daemon = f"{c.daemon_seconds:7.3f}" if c.daemon_seconds is not None else "      -"
    holders = " ".join(f"{b / 1e6:5.1f}" for b in c.bytes_per_holder)
    cpu = f"{c.cpu_downloader:6.2f}" if c.cpu_downloader is not None else "     -"
    cpu_h = f"{c.cpu_holders:6.2f}" if c.cpu_holders is not None else "     -"
    return (
        f"{c.holders:>2} {c.loss_pct:5.2g}% {c.delay_ms:5.0f} {c.wall:7.3f} {c.ideal:7.3f} "
        f"{c.share:6.3f} {first} {daemon} {c.wall - (c.daemon_seconds or 0):6.3f} "
        f"{cpu} {cpu_h} {c.dropped:>6} {c.setup:6.1f}  [{holders}]"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=64 * 1024 * 1024, help="default 64MiB")
    parser.add_argument("--holders", default="1,2,4,8", help="holder counts N; default 1,2,4,8")
    parser.add_argument("--loss", default="0,0.5", help="loss percentages; default 0,0.5")
    parser.add_argument(
        "--delay",
        type=float,
        default=25.0,
        help="one-way delay in ms for the delay cells (netem; RTT = 2x); 0 runs none; default 25",
    )
    parser.add_argument("--rate", default="40mbit", help="tbf rate of each holder's uplink")
    parser.add_argument("--burst", default="64kb", help="tbf burst; default 64kb")
    parser.add_argument("--latency", default="200ms", help="tbf latency; default 200ms")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median); default 1")
    parser.add_argument("--workdir", type=Path, default=None, help="for data dirs (default: tmp)")
    parser.add_argument(
        "--smoke", action="store_true", help="one tiny cell (N=1, 2 MiB, no loss): seconds"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also time the download's phases (traced downloader daemon, ss samples, tbf stats)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="experiment (with --trace): the downloader's per-peer in-flight chunk bound",
    )
    args = parser.parse_args(argv)
    if args.in_flight is not None and not args.trace:
        parser.error("--in-flight needs --trace (it is applied by the traced daemon)")
    if args.smoke:
        args.size, args.holders, args.loss, args.delay, args.repeat = 2 << 20, "1", "0", 0.0, 1
    args.holder_counts = [int(x) for x in args.holders.split(",") if x.strip()]
    args.losses = [float(x) for x in args.loss.split(",") if x.strip()]
    if not args.holder_counts or min(args.holder_counts) < 1 or args.repeat < 1:
        parser.error("--holders needs positive integers, --repeat >= 1")
    parse_rate_bits(args.rate)
    return args


def _congestion_control(lab_host_cmd: list[str]) -> str:
    done = subprocess.run(lab_host_cmd, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    missing = _netns.missing_requirements()
    if missing:
        reason = "bench_netns needs " + "; ".join(missing)
        print(f"skipped: {reason}")
        if args.smoke:  # the default suite's smoke run must not fail on a machine without root
            print(json.dumps({"skipped": reason}))
            return 0
        return 2
    exe = p2pstore_command()
    netem = _netns.netem_available()
    delays = [0.0]
    delay_note = "no delay cells requested (--delay 0)"
    if args.delay > 0:
        if netem:
            delays.append(args.delay)
            delay_note = f"delay cells: {args.delay:g} ms each way (RTT {2 * args.delay:g} ms)"
        else:
            delay_note = (
                "this kernel has no netem qdisc ('Specified qdisc kind is unknown'): "
                "the delay cells were NOT run"
            )
    print(f"bench_netns: {args.size} bytes ({args.size / 2**20:.1f} MiB), R = {args.rate} per")
    print(f"holder (tbf burst {args.burst}, latency {args.latency}); {delay_note}")
    print(f"python {platform.python_version()}, kernel {platform.release()}, p2pstore: {exe}")
    cells: list[Cell] = []
    started = time.perf_counter()
    with (
        _netns.signals_raise(),
        tempfile.TemporaryDirectory(prefix="p2pnb-", dir=args.workdir) as tmp_name,
    ):
        tmp = Path(tmp_name)
        src = tmp / "file.bin"
        write_random_file(src, args.size)
        digest = file_sha256(src)
        with Lab() as probe:
            host = probe.add_host("probe")
            cc = _congestion_control(
                host.command(["cat", "/proc/sys/net/ipv4/tcp_congestion_control"])
            )
        print(f"TCP congestion control in the namespaces: {cc}")
        print(
            f"{'N':>2} {'loss':>6} {'delay':>5} {'wall s':>7} {'ideal':>7} {'share':>6} "
            f"{'1st B s':>7} {'daemon':>7} {'cli+':>6} {'cpu dl':>6} {'cpu h':>6} {'drops':>6} "
            f"{'setup':>6}  "
            "[MB from each holder]"
        )
        for delay in delays:
            for loss in args.losses:
                for n in args.holder_counts:
                    for _ in range(args.repeat):
                        cell = run_cell(args, exe, src, digest, tmp, n, loss, delay)
                        cells.append(cell)
                        print(_row(cell), flush=True)
                        if cell.extra:
                            print(format_trace(cell.extra), flush=True)
    mine = f"{_netns.NAME_PREFIX}{os.getpid()}-"
    leftovers = [n for n in _netns.list_namespaces() if n.startswith(mine)]
    print(f"total {time.perf_counter() - started:.1f} s; lab namespaces left: {len(leftovers)}")

    def shares(loss: float, delay: float) -> dict[str, float] | None:
        group: dict[int, list[float]] = {}
        for c in cells:
            if c.loss_pct == loss and c.delay_ms == delay:
                group.setdefault(c.holders, []).append(c.share)
        if not group:
            return None
        return {str(k): round(statistics.median(v), 4) for k, v in sorted(group.items())}

    loss_values = [x for x in args.losses if x > 0]
    firsts = [c.first_byte for c in cells if c.first_byte is not None and c.delay_ms == 0]
    result = {
        "share": shares(0.0, 0.0),
        "share_loss": shares(loss_values[0], 0.0) if loss_values else None,
        "share_rtt50": shares(0.0, delays[1]) if len(delays) > 1 else None,
        "first_byte_s": round(statistics.median(firsts), 4) if firsts else None,
        "first_byte_s_max": round(max(firsts), 4) if firsts else None,
        "netem": netem,
        "cells": [
            {
                "N": c.holders,
                "loss_pct": c.loss_pct,
                "delay_ms": c.delay_ms,
                "wall_s": round(c.wall, 4),
                "share": round(c.share, 4),
                "first_byte_s": round(c.first_byte, 4) if c.first_byte is not None else None,
                "daemon_s": c.daemon_seconds,
                "cpu_downloader_s": c.cpu_downloader,
                "cpu_holders_s": c.cpu_holders,
                "bytes_per_holder": c.bytes_per_holder,
                "dropped_packets": c.dropped,
                **({"trace": c.extra} if c.extra else {}),
            }
            for c in cells
        ],
        "size_bytes": args.size,
        "rate": args.rate,
        "congestion_control": cc,
    }
    print(json.dumps(result))
    return 0 if not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
