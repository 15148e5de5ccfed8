"""Benchmark of the HTTP gateway: ``GET /files/ID`` against ``p2pstore get`` of the same file.

Definitions (``/work/shared/MEASURING.md``, bench_gateway.py, and issue 18): real
``p2pstore daemon --http 127.0.0.1:0`` processes on 127.0.0.1 (free ports, bootstrapped from the
first), the file random bytes (``os.urandom``), default 1 GiB (``--size``).

* **local**: one daemon holds the file (``put --no-disperse``). ``local_gateway_MBps`` = size /
  wall time of ``curl -o /dev/null`` of ``GET /files/ID`` on it (curl's ``time_total``);
  ``local_get_MBps`` = size / wall time of the ``get`` operation on the same daemon through its
  control socket (what ``p2pstore get`` does, without the CLI's interpreter start-up), which
  writes and renames the whole file.
* **remote**: ``--peers`` daemons (default 4) each hold every share (the same file put without
  dispersal, so the same file ID). One fresh daemon reads it through its gateway
  (``remote_gateway_MBps``, ``first_byte_s`` = curl's ``time_starttransfer``: request sent ->
  first body byte, while the download is running), another fresh daemon runs ``get``
  (``remote_get_MBps``). Both start from empty data directories.
* ``ratio_local`` / ``ratio_remote`` = gateway / get. Targets: >= 0.9 each, ``first_byte_s`` < 0.3.

With ``--repeat N`` the measurements alternate their order and the medians are reported. Every
gateway read's byte count is checked against the size and the get output's SHA-256 against the
source (outside the timed region). Without curl, the built-in h11 client
(``p2pstore.http.client``) reads the body instead (said in the output).

Usage: ``python benchmarks/bench_gateway.py [--size 1GiB] [--peers 4] [--repeat 1]
[--smoke]``. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import trio
from _swarm_util import parse_size, write_random_file

from p2pstore import control
from p2pstore.http.client import request

MB = 1_000_000
CLI = [sys.executable, "-c", "from p2pstore.cli import main; main()"]
START_TIMEOUT = 60.0
#: A whole read may take this long beyond 10 s per GiB before the benchmark gives up.
READ_DEADLINE = 300.0


class Daemon:
    """One ``p2pstore daemon --json --http 127.0.0.1:0`` process."""

    def __init__(self, data_dir: Path, bootstrap: str | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True)
        args = [
            *CLI, "daemon", "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
            "--http", "127.0.0.1:0", "--json", "--data-dir", str(data_dir),
        ]  # fmt: skip
        if bootstrap:
            args += ["--bootstrap", bootstrap]
        self.log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL
        )
        self.info = self._ready()
        host, port = self.info["http"].rsplit(":", 1)
        self.http = (host, int(port))

    def _ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"daemon in {self.data_dir} did not start (see its .log)")
        info: dict[str, Any] = json.loads(line)
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


@contextlib.contextmanager
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def call(daemon: Daemon, op: str, args: dict[str, Any]) -> dict[str, Any]:
    return trio.run(control.call, daemon.data_dir, op, args)


def timed_get(daemon: Daemon, file_id: str, dest: Path) -> float:
    start = time.perf_counter()
    call(daemon, "get", {"file_id": bytes.fromhex(file_id), "dest": str(dest), "cwd": "/"})
    return time.perf_counter() - start


def gateway_read(daemon: Daemon, file_id: str, size: int) -> tuple[float, float]:
    """``(seconds, first_byte_seconds)`` of one whole ``GET /files/ID``, body discarded."""
    host, port = daemon.http
    url = f"http://{host}:{port}/files/{file_id}"
    deadline = READ_DEADLINE + 10 * size / (1 << 30)
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "--max-time", str(int(deadline)), "-w",
             "%{http_code} %{size_download} %{time_starttransfer} %{time_total}", url],
            capture_output=True, text=True, check=True, timeout=deadline + 10,
        ).stdout.split()  # fmt: skip
        code, got, first, total = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    else:

        async def read() -> tuple[int, int, float, float]:
            start = trio.current_time()
            reply = await request(
                host, port, "GET", f"/files/{file_id}", on_data=lambda _: None,
                time_limit=deadline,
            )  # fmt: skip
            end = trio.current_time()
            first_at = reply.first_byte_at if reply.first_byte_at is not None else end
            return reply.status, reply.body_bytes, first_at - start, end - start

        code, got, first, total = trio.run(read)
    if code != 200 or got != size:
        raise RuntimeError(f"gateway answered {code} with {got} of {size} bytes")
    return total, first


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in ("trio", "h11", "p2pstore"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    curl = shutil.which("curl")
    if curl:
        first = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
        parts.append(first.split("\n", 1)[0].split(" (")[0])
    else:
        parts.append("curl not found: built-in h11 client")
    return ", ".join(parts)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="default 1GiB")
    parser.add_argument("--peers", type=int, default=4, help="holders of the remote file")
    parser.add_argument("--repeat", type=int, default=1, help="runs (alternating order)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp directory")
    parser.add_argument("--smoke", action="store_true", help="seconds-long: 4 MiB, 2 peers")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.peers, args.repeat = 4 << 20, 2, 1
    if args.size < 1 or args.peers < 1 or args.repeat < 1:
        parser.error("--size, --peers and --repeat must be positive")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = work / "source.bin"
    write_random_file(src, args.size)
    digest = sha256(src)
    results: dict[str, list[float]] = {
        k: [] for k in ("local_gateway", "local_get", "remote_gateway", "remote_get", "first")
    }
    with daemons() as running:
        seeders: list[Daemon] = []
        file_id = ""
        for i in range(args.peers):
            boot = seeders[0].info["udp"] if seeders else None
            seeders.append(Daemon(work / f"seeder{i}", boot))
            running.append(seeders[-1])
            put = call(seeders[-1], "put", {"path": str(src), "disperse": False})
            assert not file_id or put["file_id"] == file_id
            file_id = put["file_id"]
        boot = seeders[0].info["udp"]
        for r in range(args.repeat):
            order = ["gateway", "get"] if r % 2 == 0 else ["get", "gateway"]
            for kind in order:
                if kind == "gateway":
                    seconds, _ = gateway_read(seeders[0], file_id, args.size)
                    results["local_gateway"].append(seconds)
                    reader = Daemon(work / f"reader-http-{r}", boot)
                    running.append(reader)
                    time.sleep(0.3)  # let its start-up announcements settle, as bench_swarm does
                    seconds, first = gateway_read(reader, file_id, args.size)
                    results["remote_gateway"].append(seconds)
                    results["first"].append(first)
                else:
                    out = work / f"local-{r}.bin"
                    results["local_get"].append(timed_get(seeders[0], file_id, out))
                    if sha256(out) != digest:
                        raise RuntimeError("local get output differs from the source")
                    out.unlink()
                    reader = Daemon(work / f"reader-get-{r}", boot)
                    running.append(reader)
                    time.sleep(0.3)
                    out = work / f"remote-{r}.bin"
                    results["remote_get"].append(timed_get(reader, file_id, out))
                    if sha256(out) != digest:
                        raise RuntimeError("remote get output differs from the source")
                    out.unlink()
                reader.stop()
                running.remove(reader)
                shutil.rmtree(reader.data_dir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    mbps = {k: args.size / med[k] / MB for k in med if k != "first"}
    return {
        "size_bytes": args.size,
        "peers": args.peers,
        "repeat": args.repeat,
        "local_gateway_MBps": round(mbps["local_gateway"], 1),
        "local_get_MBps": round(mbps["local_get"], 1),
        "ratio_local": round(mbps["local_gateway"] / mbps["local_get"], 3),
        "remote_gateway_MBps": round(mbps["remote_gateway"], 1),
        "remote_get_MBps": round(mbps["remote_get"], 1),
        "ratio_remote": round(mbps["remote_gateway"] / mbps["remote_get"], 3),
        "first_byte_s": round(med["first"], 3),
        "runs": {k: [round(x, 3) for x in v] for k, v in results.items()},
    }


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    print(f"bench_gateway: {_versions()}")
    print(f"size {args.size} B, {args.peers} peer(s), {args.repeat} run(s), {os.cpu_count()} CPUs")
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            work = args.workdir
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gw-")))
        result = run(args, work)
    print(f"{'':>8} {'gateway MB/s':>13} {'get MB/s':>9} {'ratio':>6}")
    for where in ("local", "remote"):
        print(
            f"{where:>8} {result[f'{where}_gateway_MBps']:13.1f} {result[f'{where}_get_MBps']:9.1f}"
            f" {result[f'ratio_{where}']:6.3f}"
        )
    print(f"first byte of a streamed remote file: {result['first_byte_s'] * 1000:.0f} ms")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
