"""Flash crowd: one holder, M downloaders starting at the same moment, every uplink limited to R.

Definitions (``/work/shared/MEASURING.md``, bench_flash.py; issue 12): one process, nodes on
127.0.0.1 with free ports, each in a fresh data directory, every downloader bootstrapped from the
holder. For each M in ``--crowds`` (default 4,8,16) a fresh network of one holder and M
downloaders is started; the holder stores a seeded random file (``put(path, disperse=False)``:
it alone has every chunk); every node's upload is capped at R (``--rate``, default 5 MB/s,
1 MB = 10^6 bytes) by its own ``NodeConfig(upload_limit=R)``. Then every downloader's ``get``
starts at the same moment (one ``trio.Event``).

* ``T* = max(F/R, M*F/((M+1)*R))`` with F the file's data bytes: the minimum distribution time of
  one holder and M downloaders with equal uplinks (Kumar and Ross, 2006).
* ``per_M[M]`` = slowest completion (from the common start to the last ``get``'s return) / T*.
  Target: <= 1.3 for every M.
* ``failed`` = downloads that raised, over all M. Target: 0.
* ``holder_upload_ratio[M]`` = chunk bytes the holder uploaded / F. Target: <= 1.5 at M = 16.
* ``holder_sends[M]``: the holder's sends of the file's chunks (told to its super-seeder, which
  hears of every chunk its server sends): ``sends``, ``distinct`` chunks, ``repeats`` (sends
  beyond a chunk's first), ``beyond_k`` (distinct shares beyond ``k`` in their stripe) and
  ``ideal`` (the sum of every stripe's ``k``: all the swarm needs from the holder).

Nothing is tuned: nodes run with the default ``NodeConfig`` except host, free ports and the
upload limit. Once the nodes are up, the process is tuned as a ``p2pstore daemon`` tunes itself
once it is ready (``p2pstore.proctune.tune_process``: the same function). Every output is
checked (SHA-256) against the source, outside the timed region.

``--netns`` (root only): the same crowd with real ``p2pstore daemon``s on real links, one per
Linux network namespace (``benchmarks/_netns.py``'s :class:`Lab`: hosts on a bridge in a namespace
of its own, addresses from an unused /24 of 198.18.0.0/15, nothing connected to the root
namespace). Every host's uplink (holder and downloaders) is shaped by tbf to R (``--burst``,
``--latency``); each daemon also gets ``upload_limit`` = what the shaped link carries in payload
(R x 1448/1514, tbf counts whole frames) unless ``--netns-limit none``. The file is ``put
--no-disperse`` on the holder; once every downloader finds the holder as a provider, ``p2pstore
get ID -o OUT --json`` starts in all M namespaces at the same moment. Figures: slowest command
(process start to exit: CLI start-up, discovery and the final write count) / T*, failed gets, the
holder's upload / F counted two ways: chunk bytes the downloaders report from the holder, and the
bytes on the holder's wire (its interface's transmit counter: headers and DHT traffic included).
Also: all daemons' CPU time during the gets per MB received, and their CPU use while idle (2 s
just before the gets), since 1 + M daemons share this machine's cores.
Everything the run creates is removed, also on failure, Ctrl-C or SIGTERM.

Usage: ``python benchmarks/bench_flash.py [--size 64MiB] [--rate 5] [--crowds 4,8,16]
[--seed 1] [--smoke] [--netns]``. ``--smoke``: a 2 MiB file (256 KiB chunks), M = 2, a few
seconds (with ``--netns``: 2 MiB, M = 2, the nodes' own chunk size). The last line of output is
one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.lowlevel
from _swarm_util import package_versions

from p2pstore.manifest import Manifest
from p2pstore.node import Node, NodeConfig, open_node
from p2pstore.proctune import tune_process
from p2pstore.transfer.superseed import SuperSeeder

MB = 1_000_000
MiB = 1024 * 1024
#: Bytes written per call while creating the random input file.
WRITE_BLOCK = 4 * MiB
#: Seconds a crowd may take beyond 4 x T* before the run is abandoned (it must stop by itself).
RUN_SLACK = 120.0
#: Seconds for the nodes' start-up announcements to settle before the common start.
SETTLE_SECONDS = 0.5
PEER_PACKAGES = ("trio", "cryptography", "msgpack", "numpy")
#: --netns: payload share of a tbf-shaped link (tbf counts whole 1514-byte frames, 1448 payload).
NETNS_WIRE_EFFICIENCY = 1448 / 1514
#: --netns: seconds over which the idle daemons' CPU use is sampled before the gets.
NETNS_IDLE_SAMPLE = 2.0
#: --netns: seconds the holder's ``put`` may take.
NETNS_PUT_TIMEOUT = 300.0


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864; plain bytes, or a k/M/G unit (SI) or KiB/MiB/GiB."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
    units["gib"] = 2**30
    text = text.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :].strip()
    if unit not in units or not digits:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(digits) * units[unit])


def write_seeded_file(path: Path, size: int, seed: int) -> bytes:
    """``size`` bytes from ``random.Random(seed)`` into ``path``; returns their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(left, WRITE_BLOCK))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.digest()


def file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(WRITE_BLOCK):
            digest.update(block)
    return digest.digest()


@dataclass
class CrowdRun:
    """One crowd: per-downloader completion times (None = failed), holder upload, errors."""

    crowd: int
    t_star: float
    completions: list[float | None]
    holder_uploaded: int
    from_holder: int
    from_peers: int
    errors: list[str] = field(default_factory=list)
    holder_queued: float = 0.0
    """Fraction of 0.1 s samples during the crowd in which the holder had requests queued."""
    uplink_use: float = 0.0
    """Chunk bytes uploaded by every node / ((M + 1) x R x slowest completion)."""
    crowd_queued: float = 0.0
    """The same for the downloaders' uplinks, over all of them."""
    sources: float = 0.0
    """Median over the downloads of the peers each received chunks from."""
    sends: HolderSends | None = None
    """What the holder's chunk sends were (from its super-seeder's ``served`` calls)."""

    @property
    def slowest(self) -> float | None:
        done = [c for c in self.completions if c is not None]
        return max(done) if done and len(done) == len(self.completions) else None


@dataclass
class HolderSends:
    """The holder's sends of the file's chunks: ``ideal`` is the sum of every stripe's ``k``
    (what the swarm needs from it), ``distinct`` the chunks it sent at least once, ``repeats``
    the sends beyond the first of a chunk, ``beyond_k`` the distinct shares sent beyond ``k``
    in their stripe (a stripe is whole with ``k``; the swarm could have made them itself)."""

    total: int = 0
    distinct: int = 0
    repeats: int = 0
    beyond_k: int = 0
    ideal: int = 0

    @classmethod
    def count(cls, manifest: Manifest, sent: list[bytes]) -> HolderSends:
        where = {
            cid: s for s, stripe in enumerate(manifest.stripes) for cid in stripe
        }  # chunk ID -> stripe
        mine = [cid for cid in sent if cid in where]
        distinct = set(mine)
        per_stripe: dict[int, int] = {}
        for cid in distinct:
            per_stripe[where[cid]] = per_stripe.get(where[cid], 0) + 1
        beyond = sum(
            max(0, per_stripe.get(s, 0) - manifest.data_chunk_count(s))
            for s in range(len(manifest.stripes))
        )
        ideal = sum(manifest.data_chunk_count(s) for s in range(len(manifest.stripes)))
        return cls(len(mine), len(distinct), len(mine) - len(distinct), beyond, ideal)

    def as_dict(self) -> dict[str, int]:
        return {
            "sends": self.total,
            "distinct": self.distinct,
            "repeats": self.repeats,
            "beyond_k": self.beyond_k,
            "ideal": self.ideal,
        }


@contextlib.contextmanager
def record_sends(store: object) -> Iterator[list[bytes]]:
    """The chunk IDs the super-seeder of the node whose store is ``store`` reports as sent (it
    is told of every chunk the node's server sends, super-seeded or not)."""
    sent: list[bytes] = []
    original = SuperSeeder.served

    def served(self: SuperSeeder, peer: Hashable, chunk_id: bytes, now: float) -> None:
        if self.store is store:
            sent.append(chunk_id)
        original(self, peer, chunk_id, now)

    SuperSeeder.served = served  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        SuperSeeder.served = original  # type: ignore[method-assign]


def t_star(size: int, crowd: int, rate: float) -> float:
    """Kumar and Ross's minimum distribution time, one holder and ``crowd`` downloaders."""
    return max(size / rate, crowd * size / ((crowd + 1) * rate))


async def run_crowd(
    workdir: Path, src: Path, digest: bytes, crowd: int, rate: float, config: NodeConfig
) -> CrowdRun:
    """Start one holder and ``crowd`` downloaders in ``workdir``, start every ``get`` at once."""
    size = src.stat().st_size
    ideal = t_star(size, crowd, rate)
    completions: list[float | None] = [None] * crowd
    errors: list[str] = []
    holder_bytes = peer_bytes = 0
    sources: list[int] = []
    with trio.fail_after(RUN_SLACK + 4 * ideal):
        async with trio.open_nursery() as nursery:

            async def run_node(
                name: str, bootstrap: list[tuple[str, int]], *, task_status: trio.TaskStatus[Node]
            ) -> None:
                async with open_node(workdir / name, config, bootstrap=bootstrap) as node:
                    task_status.started(node)
                    await trio.sleep_forever()

            holder: Node = await nursery.start(run_node, "holder", [])
            boot = [holder.udp_address]
            downloaders = [await nursery.start(run_node, f"d{i}", boot) for i in range(crowd)]
            file_id = await holder.put(src, disperse=False)
            await trio.sleep(SETTLE_SECONDS)
            tune_process()  # what `p2pstore daemon` does once it is ready
            holder_label = f"{holder.tcp_address[0]}:{holder.tcp_address[1]}"
            uploaded_before = holder.uploaded_bytes or 0
            go = trio.Event()
            start = 0.0

            async def fetch(i: int, node: Node) -> None:
                nonlocal holder_bytes, peer_bytes
                await go.wait()
                try:
                    result = await node.get(file_id, workdir / f"out{i}.bin")
                except Exception as exc:  # a failed download is a figure, not a crash
                    errors.append(f"d{i}: {type(exc).__name__}: {exc}"[:300])
                    return
                completions[i] = time.perf_counter() - start
                sources.append(len(result.bytes_from_peers))
                for label, nbytes in result.bytes_from_peers.items():
                    if label == holder_label:
                        holder_bytes += nbytes
                    else:
                        peer_bytes += nbytes

            samples: list[int] = []
            crowd_samples: list[int] = []

            sampling = trio.CancelScope()

            async def sample_holder() -> None:
                gate = holder._uploads
                with sampling:
                    await go.wait()
                    while gate is not None:
                        samples.append(gate.core.queued_peers())
                        for node in downloaders:
                            if node._uploads is not None:
                                crowd_samples.append(node._uploads.core.queued_peers())
                        await trio.sleep(0.1)

            everyone = [holder, *downloaders]
            before = sum(node.uploaded_bytes or 0 for node in everyone)
            nursery.start_soon(sample_holder)
            with record_sends(holder.store) as sent:
                async with trio.open_nursery() as crowd_nursery:
                    for i, node in enumerate(downloaders):
                        crowd_nursery.start_soon(fetch, i, node)
                    await trio.lowlevel.checkpoint()  # every fetch is waiting on `go`
                    start = time.perf_counter()
                    go.set()
            sampling.cancel()
            sends = HolderSends.count(await holder.store.load_manifest(file_id), sent)
            uploaded = (holder.uploaded_bytes or 0) - uploaded_before
            total_up = sum(node.uploaded_bytes or 0 for node in everyone) - before
            nursery.cancel_scope.cancel()
    for i, done in enumerate(completions):
        if done is not None:
            assert file_sha256(workdir / f"out{i}.bin") == digest, f"d{i}'s output differs"
    shutil.rmtree(workdir, ignore_errors=True)
    run = CrowdRun(crowd, ideal, completions, uploaded, holder_bytes, peer_bytes, errors)
    run.sources = statistics.median(sources) if sources else 0.0
    run.sends = sends
    run.crowd_queued = (
        sum(1 for q in crowd_samples if q) / len(crowd_samples) if crowd_samples else 0.0
    )
    run.holder_queued = sum(1 for q in samples if q) / len(samples) if samples else 0.0
    if run.slowest:
        run.uplink_use = total_up / ((crowd + 1) * rate * run.slowest)
    return run


def _sends_cell(sends: HolderSends | None) -> str:
    if sends is None:
        return "-"
    return f"{sends.total}/{sends.distinct}/{sends.repeats}/{sends.beyond_k} (ideal {sends.ideal})"


def _print_header(more_columns: str) -> None:
    """The versions line and the table's header: the columns of :func:`_print_row`, then
    ``more_columns``."""
    print(f"versions: {package_versions(PEER_PACKAGES)}")
    print(
        f"{'M':>3} {'T* s':>7} {'slowest':>8} {'per_M':>6} {'median':>7} {'failed':>6} "
        f"{more_columns}"
    )


def _print_row(run: CrowdRun | NetnsCrowd, more_columns: str) -> None:
    """One table row: M, T*, slowest, per_M, median, failed, then ``more_columns``; then the
    first few errors."""
    done = [c for c in run.completions if c is not None]
    slowest = f"{run.slowest:8.2f}" if run.slowest is not None else "       -"
    ratio = f"{run.slowest / run.t_star:6.3f}" if run.slowest is not None else "     -"
    median = f"{statistics.median(done):7.2f}" if done else "      -"
    print(
        f"{run.crowd:>3} {run.t_star:7.2f} {slowest} {ratio} {median} {len(run.errors):>6} "
        f"{more_columns}",
        flush=True,
    )
    for error in run.errors[:5]:
        print(f"    {error}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=64 * MiB, help="file size; 64MiB")
    parser.add_argument("--rate", type=float, default=5.0, help="upload limit R, MB/s; 5")
    parser.add_argument("--crowds", default="4,8,16", help="downloader counts M; 4,8,16")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random file; 1")
    parser.add_argument("--chunk-size", type=parse_size, default=None, help="default: node's")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp directory")
    parser.add_argument("--smoke", action="store_true", help="2 MiB, M = 2: a few seconds")
    parser.add_argument(
        "--netns",
        action="store_true",
        help="real daemons in network namespaces, tbf-shaped uplinks (root only)",
    )
    parser.add_argument("--burst", default="64kb", help="--netns: tbf burst; 64kb")
    parser.add_argument("--latency", default="200ms", help="--netns: tbf latency; 200ms")
    parser.add_argument(
        "--netns-limit",
        choices=("link", "none"),
        default="link",
        help="--netns: each daemon's upload_limit: what the link carries (default) or none",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.crowds = 2 * MiB, "2"
        if not args.netns:
            args.chunk_size = 256 * 1024
    if args.netns and args.chunk_size is not None:
        parser.error("--chunk-size is not available with --netns (daemons use their default)")
    args.crowd_counts = [int(x) for x in args.crowds.split(",") if x.strip()]
    if not args.crowd_counts or min(args.crowd_counts) < 1:
        parser.error("--crowds needs positive integers")
    if args.rate <= 0 or args.size < 1:
        parser.error("--rate and --size must be positive")
    return args


async def _main(args: argparse.Namespace) -> dict[str, object]:
    logging.getLogger("p2pstore").setLevel(logging.WARNING)
    rate = args.rate * MB
    config = NodeConfig(host="127.0.0.1", udp_port=0, tcp_port=0, upload_limit=rate)
    if args.chunk_size is not None:
        config = NodeConfig(
            host="127.0.0.1", udp_port=0, tcp_port=0, upload_limit=rate, chunk_size=args.chunk_size
        )
    runs: list[CrowdRun] = []
    with tempfile.TemporaryDirectory(prefix="bench_flash_", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        print(f"file {args.size} bytes ({args.size / MiB:.1f} MiB), R = {args.rate:g} MB/s")
        _print_header(
            f"{'holder up/F':>11} {'got from holder/peers MB':>25} {'holder busy':>11} "
            f"{'crowd busy':>10} {'uplinks used':>12} {'sources':>7} "
            f"{'holder sends/distinct/repeats/beyond k':>38}"
        )
        for run_no, crowd in enumerate(args.crowd_counts):
            src = tmp / f"flash{run_no}.bin"
            digest = write_seeded_file(src, args.size, args.seed + run_no)
            run = await run_crowd(tmp / f"run{run_no}", src, digest, crowd, rate, config)
            src.unlink()
            runs.append(run)
            _print_row(
                run,
                f"{run.holder_uploaded / args.size:11.3f} "
                f"{run.from_holder / MB:12.1f} / {run.from_peers / MB:10.1f} "
                f"{run.holder_queued:11.0%} {run.crowd_queued:10.0%} {run.uplink_use:12.0%} "
                f"{run.sources:7.1f} {_sends_cell(run.sends):>38}",
            )
    return {
        "per_M": {
            str(r.crowd): round(r.slowest / r.t_star, 4) if r.slowest is not None else None
            for r in runs
        },
        "failed": sum(len(r.errors) for r in runs),
        "holder_upload_ratio": {
            str(r.crowd): round(r.holder_uploaded / args.size, 4) for r in runs
        },
        "slowest_s": {str(r.crowd): r.slowest for r in runs},
        "t_star_s": {str(r.crowd): round(r.t_star, 3) for r in runs},
        "median_s": {
            str(r.crowd): round(statistics.median(c for c in r.completions if c is not None), 3)
            if any(c is not None for c in r.completions)
            else None
            for r in runs
        },
        "holder_busy_fraction": {str(r.crowd): round(r.holder_queued, 3) for r in runs},
        "crowd_busy_fraction": {str(r.crowd): round(r.crowd_queued, 3) for r in runs},
        "uplink_use": {str(r.crowd): round(r.uplink_use, 3) for r in runs},
        "sources_median": {str(r.crowd): r.sources for r in runs},
        "holder_sends": {str(r.crowd): r.sends.as_dict() if r.sends else None for r in runs},
        "size_bytes": args.size,
        "rate_MBps": args.rate,
        "smoke": args.smoke,
    }


@dataclass
class NetnsCrowd:
    """One crowd of real daemons: per-get command times (None = failed) and the holder's upload."""

    crowd: int
    t_star: float
    completions: list[float | None]
    daemon_seconds: list[float | None]
    from_holder: int
    from_peers: int
    holder_wire: int
    sources: list[int]
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    """CPU time (user + system) every daemon used from the common start to the last exit."""
    idle_cpu: float = 0.0
    """CPU seconds per second all daemons used, idle, just before the gets."""

    @property
    def slowest(self) -> float | None:
        done = [c for c in self.completions if c is not None]
        return max(done) if done and len(done) == len(self.completions) else None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (``/proc/PID/stat``); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _write_upload_limit(data_dir: Path, limit: int | None) -> None:
    """Create ``data_dir`` (0700) with a ``p2pstore.toml`` setting ``upload_limit``."""
    data_dir.mkdir(mode=0o700, parents=True)
    if limit is not None:
        (data_dir / "p2pstore.toml").write_text(f"upload_limit = {limit}\n")


def _timed_commands(
    procs: list[subprocess.Popen[bytes]], started: float, timeout: float
) -> list[tuple[float, int, bytes, bytes]]:
    """Wait for every process at once (one thread each); per process: seconds from ``started``
    to its exit, its return code, stdout and stderr. A process still running at ``timeout`` is
    killed (return code -9)."""
    results: list[tuple[float, int, bytes, bytes]] = [(0.0, -1, b"", b"")] * len(procs)

    def wait(i: int, proc: subprocess.Popen[bytes]) -> None:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(killed after {timeout:.0f} s)".encode()
        results[i] = (time.perf_counter() - started, proc.returncode, out, err)

    threads = [threading.Thread(target=wait, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_netns_crowd(
    args: argparse.Namespace, exe: str, src: Path, digest: bytes, workdir: Path, crowd: int
) -> NetnsCrowd:
    """One holder and ``crowd`` downloaders as daemons in a fresh lab; every get at once."""
    import _netns
    from bench_netns import Daemon, cli, wait_providers

    size = src.stat().st_size
    rate = args.rate * MB
    ideal = t_star(size, crowd, rate)
    limit = None if args.netns_limit == "none" else int(rate * NETNS_WIRE_EFFICIENCY)
    with _netns.Lab() as lab:
        holder = lab.add_host("holder")
        downloaders = [lab.add_host(f"d{i}") for i in range(crowd)]
        tbf_rate = f"{rate * 8 / 1e6:g}mbit"
        for host in lab.hosts:
            lab.shape(host, rate=tbf_rate, burst=args.burst, latency=args.latency)
        daemons = {}
        for host in lab.hosts:
            _write_upload_limit(workdir / host.name, limit)
            daemons[host.name] = Daemon(
                lab, host, workdir / host.name, workdir / f"{host.name}.log"
            )
        daemons["holder"].start(exe, None)
        daemons["holder"].wait_ready()
        for host in downloaders:
            daemons[host.name].start(exe, holder.address)
        for host in downloaders:
            daemons[host.name].wait_ready()
        put_args = ["put", str(src), "--no-disperse", "--data-dir", str(workdir / "holder")]
        file_id = cli(lab, holder, exe, put_args, NETNS_PUT_TIMEOUT)["file_id"]
        for host in downloaders:
            wait_providers(lab, host, exe, workdir / host.name, file_id, 1)
        wire_before = _netns.tx_bytes(holder)
        # ``ip netns exec`` execs the daemon in place: the process is the daemon.
        pids = [d.proc.pid for d in daemons.values() if d.proc is not None]
        idle_from = sum(_cpu_seconds(pid) for pid in pids)
        time.sleep(NETNS_IDLE_SAMPLE)  # what the idle daemons cost, for comparison
        cpu_before = sum(_cpu_seconds(pid) for pid in pids)
        idle_cpu = (cpu_before - idle_from) / NETNS_IDLE_SAMPLE
        procs = []
        started = time.perf_counter()
        for i, host in enumerate(downloaders):
            argv = [exe, "get", file_id, "-o", str(workdir / f"out{i}.bin"), "--json"]
            argv += ["--data-dir", str(workdir / host.name)]
            procs.append(lab.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        results = _timed_commands(procs, started, RUN_SLACK + 4 * ideal)
        holder_wire = _netns.tx_bytes(holder) - wire_before
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
        for proc in procs:
            lab.stop(proc)
    run = NetnsCrowd(crowd, ideal, [None] * crowd, [None] * crowd, 0, 0, holder_wire, [])
    run.cpu_seconds = cpu
    run.idle_cpu = idle_cpu
    for i, (took, code, out, err) in enumerate(results):
        if code != 0:
            run.errors.append(f"d{i}: exit {code}: {err.decode(errors='replace').strip()}"[-300:])
            continue
        if file_sha256(workdir / f"out{i}.bin") != digest:
            run.errors.append(f"d{i}: the downloaded file differs from the source")
            continue
        result = json.loads(out)
        run.completions[i] = took
        seconds = result.get("seconds")
        run.daemon_seconds[i] = float(seconds) if isinstance(seconds, (int, float)) else None
        peers = result.get("bytes_from_peers") or {}
        run.sources.append(len(peers))
        for label, nbytes in peers.items():
            if label.rsplit(":", 1)[0] == holder.address:
                run.from_holder += int(nbytes)
            else:
                run.from_peers += int(nbytes)
    return run


def _cpu_ms_per_mb(run: NetnsCrowd) -> float:
    """Every daemon's CPU milliseconds per MB of chunk data the downloaders received."""
    moved = (run.from_holder + run.from_peers) / MB
    return 1000 * run.cpu_seconds / moved if moved else 0.0


def netns_main(args: argparse.Namespace) -> dict[str, object]:
    """``--netns``: every crowd of ``args`` with real daemons on shaped links (see the module
    docstring). Needs root; exits with a clear message otherwise."""
    import _netns
    from bench_netns import p2pstore_command

    missing = _netns.missing_requirements()
    if missing:
        raise SystemExit("bench_flash --netns needs " + "; ".join(missing))
    exe = p2pstore_command()
    rate = args.rate * MB
    runs: list[NetnsCrowd] = []
    limit = (
        "none" if args.netns_limit == "none" else f"{rate * NETNS_WIRE_EFFICIENCY / MB:.3f} MB/s"
    )
    with (
        _netns.signals_raise(),
        tempfile.TemporaryDirectory(prefix="bench_flash_netns_", dir=args.workdir) as tmp_name,
    ):
        tmp = Path(tmp_name)
        print(
            f"netns: file {args.size} bytes ({args.size / MiB:.1f} MiB), every uplink tbf "
            f"{rate * 8 / 1e6:g} mbit (burst {args.burst}, latency {args.latency}), "
            f"daemons' upload_limit {limit}; p2pstore: {exe}"
        )
        _print_header(
            f"{'holder up/F':>11} {'wire/F':>7} {'got from holder/peers MB':>25} {'sources':>7} "
            f"{'CPU ms/MB':>9} {'idle CPU':>8}"
        )
        for run_no, crowd in enumerate(args.crowd_counts):
            src = tmp / f"flash{run_no}.bin"
            digest = write_seeded_file(src, args.size, args.seed + run_no)
            run_dir = tmp / f"run{run_no}"
            run_dir.mkdir(mode=0o700)
            try:
                run = run_netns_crowd(args, exe, src, digest, run_dir, crowd)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
                src.unlink()
            runs.append(run)
            _print_row(
                run,
                f"{run.from_holder / args.size:11.3f} {run.holder_wire / args.size:7.3f} "
                f"{run.from_holder / MB:12.1f} / {run.from_peers / MB:10.1f} "
                f"{statistics.median(run.sources) if run.sources else 0:7.1f} "
                f"{_cpu_ms_per_mb(run):9.1f} {run.idle_cpu:8.0%}",
            )
    mine = f"{_netns.NAME_PREFIX}{os.getpid()}-"
    leftovers = [n for n in _netns.list_namespaces() if n.startswith(mine)]
    print(f"lab namespaces left: {len(leftovers)}")
    return {
        "per_M": {
            str(r.crowd): round(r.slowest / r.t_star, 4) if r.slowest is not None else None
            for r in runs
        },
        "failed": sum(len(r.errors) for r in runs),
        "holder_upload_ratio": {str(r.crowd): round(r.from_holder / args.size, 4) for r in runs},
        "holder_wire_ratio": {str(r.crowd): round(r.holder_wire / args.size, 4) for r in runs},
        "slowest_s": {str(r.crowd): r.slowest for r in runs},
        "t_star_s": {str(r.crowd): round(r.t_star, 3) for r in runs},
        "completions_s": {
            str(r.crowd): [round(c, 3) if c is not None else None for c in r.completions]
            for r in runs
        },
        "daemon_seconds": {str(r.crowd): r.daemon_seconds for r in runs},
        "sources_median": {
            str(r.crowd): statistics.median(r.sources) if r.sources else 0 for r in runs
        },
        "daemons_cpu_ms_per_MB": {str(r.crowd): round(_cpu_ms_per_mb(r), 2) for r in runs},
        "daemons_idle_cpu": {str(r.crowd): round(r.idle_cpu, 3) for r in runs},
        "errors": [e for r in runs for e in r.errors],
        "size_bytes": args.size,
        "rate_MBps": args.rate,
        "upload_limit": limit,
        "tbf": {"burst": args.burst, "latency": args.latency},
        "netns": True,
        "leftover_namespaces": len(leftovers),
        "smoke": args.smoke,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.perf_counter()
    if args.netns:
        netns_result = netns_main(args)
        print(f"total benchmark time {time.perf_counter() - started:.1f} s")
        print(json.dumps(netns_result, sort_keys=False))
        return
    result = trio.run(_main, args)
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    main()
