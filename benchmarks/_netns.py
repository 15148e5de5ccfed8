"""A throw-away network of Linux network namespaces for benchmarks: hosts on one bridge.

:class:`Lab` builds, and always removes, a small network that is cut off from everything else:

* one namespace holding only a bridge (``br0``), so the bridge is never in the root namespace;
* one namespace per host, joined to the bridge by a veth pair created *directly* inside the two
  namespaces (no end of it ever exists in the root namespace), with one IPv4 address from a /24
  of the RFC 2544 benchmarking range ``198.18.0.0/15`` that is checked to be unused on this
  machine's interfaces and routes (:func:`pick_subnet`);
* nothing connects a lab to the root namespace or to a real interface, and no host has a default
  route, so no packet can leave it.

Shaping, per host: :meth:`Lab.shape` puts a tbf qdisc on the host's uplink (its veth egress);
:meth:`Lab.set_loss` drops a random share of the packets the host puts on the wire with an
nftables ``numgen random mod 1000 < N drop`` rule; :meth:`Lab.set_delay` delays every packet
towards a host with netem where the kernel has it (:func:`netem_available`; many minimal kernels
ship only tbf/htb: then it raises :class:`NetnsUnavailable` saying so).

Why the loss rule sits where it does: a rule in the host's own output path (an ``output`` or
``egress`` hook) does not emulate loss. The sender's TCP is told at once that its packet was
dropped locally and sends it again without treating it as congestion, and with segmentation
offload one "packet" there is a 64 KiB super-packet. Measured on this machine at 0.5 %: an output
hook rule produced 0 TCP retransmissions over 20 MB. So the rule runs in the bridge namespace on
the ingress of the host's bridge port (the packet has left the host: real loss), and each host's
veth has GSO limited to one segment (``gso_max_segs 1``), so a dropped packet is one TCP segment,
as on a real wire. (Measured: 0.55 % of segments dropped, each one retransmitted.)

Every name a lab creates starts with ``p2pnb-<pid>-<random>-`` so leftovers of a run killed hard
(SIGKILL, power loss) can be found: :func:`cleanup_leftovers` removes the namespaces of runs whose
process is gone (``python benchmarks/_netns.py --cleanup``). A lab's own ``close`` stops the
processes it started, then deletes its namespaces (which removes the veths, the bridge, the
qdiscs and the nftables rules with them); the ``with`` form runs it on any exception, including
``KeyboardInterrupt``; :func:`signals_raise` turns SIGTERM/SIGHUP into an exception too.

Needs root, ``ip`` and ``tc`` (iproute2) and ``nft`` (nftables); :func:`missing_requirements`
says what is missing, for a clear skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

NAME_PREFIX = "p2pnb-"
"""Every namespace a lab creates is named ``p2pnb-<pid>-<hex>-<role>``."""

BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
"""RFC 2544: reserved for benchmarking network devices; never routed on the Internet."""

BRIDGE = "br0"
"""Name of the bridge inside the bridge namespace."""

HOST_IF = "eth0"
"""Name of each host's interface inside its own namespace."""

COMMAND_TIMEOUT = 20.0
"""Seconds any one ``ip``/``tc``/``nft`` command may take before the lab gives up."""

STOP_TIMEOUT = 10.0
"""Seconds a started process gets to exit after SIGTERM before it is killed."""

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns`` keeps its named namespaces."""

_NAME_RE = re.compile(rf"^{re.escape(NAME_PREFIX)}(\d+)-([0-9a-f]+)-")


class NetnsUnavailable(RuntimeError):
    """The machine cannot do what was asked (not root, a tool or a kernel feature is missing)."""


class NetnsError(RuntimeError):
    """A command that builds or shapes the lab failed; the message has its stderr."""


def missing_requirements() -> list[str]:
    """What this machine lacks to build a lab (empty when everything is there).

    Checks: root, ``ip`` with ``netns`` support, ``tc``, ``nft``.
    """
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not missing:
        probe = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if probe.returncode != 0:
            missing.append(f"ip netns ({probe.stderr.strip() or 'not supported'})")
    return missing


def _run(argv: Sequence[str], *, input_text: str | None = None) -> str:
    """Run one command; raise :class:`NetnsError` with its stderr if it fails."""
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{' '.join(argv)}: no answer in {COMMAND_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def root_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on this machine's own (root namespace) interfaces and routes."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for info in entry.get("addr_info", []):
            local, plen = info.get("local"), info.get("prefixlen")
            if local is not None and plen is not None:
                nets.append(ipaddress.IPv4Network(f"{local}/{plen}", strict=False))
    for table in ("main", "local"):
        routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", table]) or "[]")
        for route in routes:
            dst = route.get("dst")
            if dst and dst != "default":
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def pick_subnet(used: Sequence[ipaddress.IPv4Network] | None = None) -> ipaddress.IPv4Network:
    """A /24 of :data:`BENCHMARK_RANGE` that overlaps nothing in ``used`` (default: this machine's
    addresses and routes). Raises :class:`NetnsUnavailable` if every one is taken."""
    taken = root_networks() if used is None else list(used)
    candidates = list(BENCHMARK_RANGE.subnets(new_prefix=24))
    # Start at a random /24 so two concurrent labs rarely pick the same one (they could share
    # it anyway: their hosts live in separate, unconnected namespaces).
    start = secrets.randbelow(len(candidates))
    for net in candidates[start:] + candidates[:start]:
        if not any(net.overlaps(other) for other in taken):
            return net
    raise NetnsUnavailable(f"every /24 of {BENCHMARK_RANGE} is in use on this machine")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of every named network namespace (``ip netns list``)."""
    out = _run(["ip", "-j", "netns", "list"]).strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def cleanup_leftovers(*, only_dead: bool = True) -> list[str]:
    """Delete the namespaces of labs whose process is gone (all labs' with ``only_dead=False``).

    Processes still running inside a namespace are killed first. Returns the names removed.
    """
    removed: list[str] = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if match is None:
            continue
        if only_dead and _pid_alive(int(match.group(1))):
            continue
        _kill_namespace_processes(name)
        with contextlib.suppress(NetnsError):
            _run(["ip", "netns", "delete", name])
            removed.append(name)
    return removed


def _kill_namespace_processes(netns: str) -> None:
    with contextlib.suppress(NetnsError, ValueError):
        pids = [int(p) for p in _run(["ip", "netns", "pids", netns]).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried on ``lo`` of a scratch namespace)."""
    probe = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    _run(["ip", "netns", "add", probe])
    try:
        done = subprocess.run(
            ["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        return done.returncode == 0
    finally:
        _run(["ip", "netns", "delete", probe])


@contextlib.contextmanager
def signals_raise(*signums: int) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (or ``signums``) raise ``KeyboardInterrupt``, so
    ``finally`` clauses (a lab's clean-up) run as they do for Ctrl-C."""
    chosen = signums or (signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in chosen}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@dataclass
class Host:
    """One host of a lab: its namespace, its address and the bridge port it is plugged into."""

    name: str
    netns: str
    address: str
    port: str
    index: int

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class Lab:
    """A bridge in a namespace of its own and hosts on it; see the module docstring.

    Use as a context manager (``with Lab() as lab:``); everything is removed on exit.
    """

    subnet: ipaddress.IPv4Network | None = None
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(3)}")
    hosts: list[Host] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    bridge_netns: str = ""
    _loss_table: bool = False

    @property
    def prefix(self) -> str:
        """The name prefix of everything this lab creates."""
        return f"{NAME_PREFIX}{self.tag}-"

    def __enter__(self) -> Lab:
        missing = missing_requirements()
        if missing:
            raise NetnsUnavailable("missing: " + "; ".join(missing))
        if self.subnet is None:
            self.subnet = pick_subnet()
        else:
            clash = [n for n in root_networks() if n.overlaps(self.subnet)]
            if clash:
                raise NetnsUnavailable(f"{self.subnet} overlaps this machine's {clash[0]}")
        try:
            self.bridge_netns = self._add_namespace("bridge")
            _run(["ip", "-n", self.bridge_netns, "link", "add", BRIDGE, "type", "bridge"])
            _run(["ip", "-n", self.bridge_netns, "link", "set", BRIDGE, "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, role: str) -> str:
        name = f"{self.prefix}{role}"
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def add_host(self, name: str) -> Host:
        """A new host namespace on the bridge with the next address of the subnet."""
        if self.subnet is None or not self.bridge_netns:
            raise RuntimeError("use the lab as a context manager")
        index = len(self.hosts)
        address = str(self.subnet.network_address + 10 + index)
        netns = self._add_namespace(name)
        port = f"p{index}"
        # Both ends are created inside their namespaces: nothing appears in the root namespace.
        _run(
            [
                "ip",
                "link",
                "add",
                HOST_IF,
                "netns",
                netns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.bridge_netns,
            ]
        )
        _run(["ip", "-n", self.bridge_netns, "link", "set", port, "master", BRIDGE])
        _run(["ip", "-n", self.bridge_netns, "link", "set", port, "up"])
        # One TCP segment per packet on the wire, so a dropped packet is one lost segment.
        _run(["ip", "-n", netns, "link", "set", HOST_IF, "gso_max_segs", "1"])
        _run(
            ["ip", "-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", HOST_IF]
        )
        _run(["ip", "-n", netns, "link", "set", HOST_IF, "up"])
        host = Host(name, netns, address, port, index)
        self.hosts.append(host)
        return host

    def shape(self, host: Host, *, rate: str, burst: str, latency: str) -> None:
        """tbf on ``host``'s uplink, e.g. ``rate="40mbit", burst="64kb", latency="200ms"``."""
        _run(
            [
                "tc",
                "-n",
                host.netns,
                "qdisc",
                "replace",
                "dev",
                HOST_IF,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ]
        )

    def set_loss(self, host: Host, per_mille: int) -> None:
        """Drop ``per_mille``/1000 of the packets ``host`` puts on the wire (0 removes the rule)."""
        if not 0 <= per_mille <= 1000:
            raise ValueError("per_mille must be in [0, 1000]")
        chain = f"from_{host.port}"
        script = ""
        if not self._loss_table:
            script += "add table netdev p2pnb_loss\n"
            self._loss_table = True
        script += (
            f"add chain netdev p2pnb_loss {chain} "
            f'{{ type filter hook ingress device "{host.port}" priority 0; policy accept; }}\n'
            f"flush chain netdev p2pnb_loss {chain}\n"
        )
        if per_mille:
            script += (
                f"add rule netdev p2pnb_loss {chain} numgen random mod 1000 < {per_mille}"
                " counter drop\n"
            )
        _run(["ip", "netns", "exec", self.bridge_netns, "nft", "-f", "-"], input_text=script)

    def dropped_packets(self, host: Host) -> int:
        """Packets the loss rule of ``host`` has dropped so far (0 without a rule)."""
        if not self._loss_table:
            return 0
        try:
            out = _run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.bridge_netns,
                    "nft",
                    "-j",
                    "list",
                    "chain",
                    "netdev",
                    "p2pnb_loss",
                    f"from_{host.port}",
                ]
            )
        except NetnsError:
            return 0
        total = 0
        for item in json.loads(out).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    def set_delay(self, host: Host, delay_ms: float) -> None:
        """Delay every packet towards ``host`` by ``delay_ms`` (netem on its bridge port).

        Applied to every host, a round trip between two of them takes ``2 x delay_ms``. Raises
        :class:`NetnsUnavailable` if the kernel has no netem.
        """
        argv = ["tc", "-n", self.bridge_netns, "qdisc", "replace", "dev", host.port, "root"]
        argv += ["netem", "delay", f"{delay_ms:g}ms", "limit", "100000"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            if "unknown" in done.stderr.lower():
                raise NetnsUnavailable("this kernel has no netem qdisc: delay cannot be emulated")
            raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")

    def popen(self, host: Host, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``'s namespace (its own session: Ctrl-C reaches only us, and
        :meth:`close` stops it)."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            host.command(argv), start_new_session=True, **kwargs
        )
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM ``proc``, SIGKILL it after ``timeout`` s; reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            self.processes.remove(proc)

    def close(self) -> None:
        """Stop every process started here, then delete every namespace; safe to call twice.

        Keeps going past errors (a clean-up that stops half-way leaves debris) and raises the
        first one at the end. Runs with SIGINT ignored so a second Ctrl-C cannot interrupt it.
        """
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        errors: list[BaseException] = []
        try:
            for proc in list(self.processes):
                try:
                    self.stop(proc)
                except Exception as exc:
                    errors.append(exc)
            for name in reversed(self.namespaces):
                _kill_namespace_processes(name)  # anything started behind our back
                try:
                    if (NETNS_DIR / name).exists():
                        _run(["ip", "netns", "delete", name])
                except Exception as exc:
                    errors.append(exc)
            self.namespaces.clear()
            self.hosts.clear()
            self._loss_table = False
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        if errors:
            raise errors[0]


def tx_bytes(host: Host) -> int:
    """Bytes ``host`` has put on its uplink so far (its interface's transmit counter: whole
    frames, so TCP/IP headers and every protocol's traffic count)."""
    out = _run(["ip", "-n", host.netns, "-s", "-j", "link", "show", "dev", HOST_IF])
    for entry in json.loads(out or "[]"):
        stats = entry.get("stats64") or entry.get("stats") or {}
        tx = stats.get("tx") or {}
        if "bytes" in tx:
            return int(tx["bytes"])
    raise NetnsError(f"no transmit counter for {HOST_IF} in {host.netns}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:g} s")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/_netns.py --cleanup [--all]``: remove leftover lab namespaces."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cleanup", action="store_true", help="remove leftovers of dead runs")
    parser.add_argument("--all", action="store_true", help="also of runs still alive")
    args = parser.parse_args(argv)
    if not args.cleanup:
        print("\n".join(n for n in list_namespaces() if n.startswith(NAME_PREFIX)) or "none")
        return 0
    removed = cleanup_leftovers(only_dead=not args.all)
    print(f"removed {len(removed)} namespace(s): {' '.join(removed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
