"""The JSON API mirrors the control socket; /metrics parses and moves with traffic; the daemon
serves it all when --http or p2pstore.toml's ``http`` asks."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pstore.config import settings_from_mapping
from p2pstore.control import perform
from p2pstore.http import metrics
from tests.cli.fakes import short_tmp_dir
from tests.node.swarm import Swarm, random_file

from .helpers import Face, start_face

MiB = 1 << 20


async def test_api_mirrors_the_control_operations(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    random_file(src, MiB + 3, seed=7)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        other = await swarm.start()
        file_id = await node.put(src, disperse=False)
        face = await start_face(nursery, node)

        files = (await face.get("/api/files")).json()
        assert files == await perform(node, "ls")
        status = (await face.get("/api/status")).json()
        assert isinstance(status, dict)
        control_status = await perform(node, "status")
        for key in ("node_id", "udp", "tcp", "files", "stored_bytes"):
            assert status[key] == control_status[key]
        assert status["dht"]["contacts"] == len(node.peers())
        peers = (await face.get("/api/peers")).json()
        assert isinstance(peers, dict)
        assert peers["peers"] == (await perform(node, "peers"))["peers"]
        assert other.node_id.hex() in {p["node_id"] for p in peers["peers"]}
        providers = (await face.get(f"/api/providers/{file_id.hex()}")).json()
        assert isinstance(providers, dict)
        assert providers["key"] == file_id.hex()
        assert providers["providers"][0]["node_id"] == node.node_id.hex()
        transfers = (await face.get("/api/transfers")).json()
        assert transfers == {"transfers": []}

        bad = await face.get("/api/providers/zz")
        assert bad.status == 400
        assert bad.json()["error"]["code"] == "bad_request"
        unknown = await face.get("/api/nope")
        assert unknown.status == 404
        assert unknown.json()["error"]["code"] == "not_found"
        post = await face.call("POST", "/api/status", body=b"")
        assert post.status == 405
        nursery.cancel_scope.cancel()


async def test_transfers_show_progress(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    random_file(src, 24 * MiB, seed=8)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        seeder = await swarm.start(upload_limit=6 * MiB)
        file_id = await seeder.put(src, disperse=False)
        getter = await swarm.start()
        face = await start_face(nursery, getter)
        nursery.start_soon(getter.get, file_id, tmp_path / "out.bin")
        seen: list[float] = []
        with trio.fail_after(30):
            while len(seen) < 2:  # progress moves a stripe (4 MiB) at a time
                body = (await face.get("/api/transfers")).json()
                assert isinstance(body, dict)
                for t in body["transfers"]:
                    moving = t["kind"] == "get" and t["fraction"] and 0 < t["fraction"] < 1
                    if moving and (not seen or t["fraction"] > seen[-1]):
                        seen.append(t["fraction"])
                        assert t["peer_rates"], t
                await trio.sleep(0.2)
        assert seen == sorted(seen)
        nursery.cancel_scope.cancel()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        out[(f"family:{family.name}", ())] = 0.0
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_parse_and_move_with_traffic(tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    random_file(src, 5 * MiB, seed=9)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        seeder = await swarm.start()
        getter = await swarm.start()
        seed_face = await start_face(nursery, seeder)
        face = await start_face(nursery, getter)

        async def scrape(f: Face) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            reply = await f.get("/metrics")
            assert reply.status == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            return _samples(reply.body.decode())

        before = await scrape(face)
        families = {name.removeprefix("family:") for name, _ in before}
        for name in metrics.METRICS:  # every documented metric is exposed (quota: when set)
            assert name.removesuffix("_total") in families or name.endswith("quota_bytes"), name
        file_id = await seeder.put(src, disperse=False)
        reply = await face.get(f"/files/{file_id.hex()}")
        assert reply.status == 200

        def value(s: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
            return float(s.get((name, tuple(sorted(labels.items()))), 0.0))

        # The gateway counts a request when its handler returns, which is after the client has
        # the whole body (it then lets the download record the file): wait for that, bounded.
        with trio.move_on_after(10):
            while True:
                after = await scrape(face)
                if value(after, "p2pstore_http_requests_total", method="GET", code="200") >= 2:
                    break
                await trio.sleep(0.05)
        seeded = await scrape(seed_face)

        assert value(after, "p2pstore_chunks_fetched_total") >= 5
        fetched = value(after, "p2pstore_network_bytes_total", direction="received", kind="chunk")
        assert fetched >= 5 * MiB
        assert value(after, "p2pstore_network_bytes_total", direction="sent", kind="http") > (
            value(before, "p2pstore_network_bytes_total", direction="sent", kind="http") + 5 * MiB
        )
        assert value(seeded, "p2pstore_chunks_served_total") >= 5
        assert value(after, "p2pstore_dht_datagrams_total", direction="sent") > value(
            before, "p2pstore_dht_datagrams_total", direction="sent"
        )
        assert value(after, "p2pstore_lookup_duration_seconds_count", kind="find_providers") >= 1
        assert value(after, "p2pstore_http_requests_total", method="GET", code="200") >= 2
        assert value(after, "p2pstore_routing_table_contacts") >= 1
        assert value(after, "p2pstore_store_bytes") >= 5 * MiB
        nursery.cancel_scope.cancel()


def test_http_setting_in_the_config_file() -> None:
    assert settings_from_mapping({"http": "127.0.0.1:0"}).http == ("127.0.0.1", 0)
    assert settings_from_mapping({"http": "[::1]:8080"}).http == ("::1", 8080)


def test_daemon_serves_http_when_asked(tmp_path: Path) -> None:
    with short_tmp_dir() as base:
        data_dir = base / "d"
        data_dir.mkdir()
        (data_dir / "p2pstore.toml").write_text('http = "127.0.0.1:0"\n')
        args = [
            sys.executable, "-c", "from p2pstore.cli import main; main()", "daemon",
            "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--json",
            "--data-dir", str(data_dir),
        ]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "daemon did not start"
            info = json.loads(proc.stdout.readline())
            host, port = info["http"].rsplit(":", 1)
            assert host == "127.0.0.1"
            assert int(port) > 0
            with urllib.request.urlopen(f"http://{info['http']}/api/status", timeout=10) as r:
                assert json.load(r)["node_id"] == info["node_id"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 128 + signal.SIGTERM or proc.returncode in (0, -15, 143)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
