"""The HTTP face's security rules, each tested: Host, Origin, token, bounds, slow clients."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from p2pstore.errors import ConfigError
from p2pstore.http import HttpSettings, security, server
from p2pstore.http.app import settings_for_bind
from p2pstore.http.client import request
from tests.node.swarm import Swarm

from .helpers import start_face


def test_host_rule() -> None:
    ok = ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080", "10.0.0.7:8080"]
    for value in ok:
        assert security.host_allowed(value, 8080), value
    bad = [None, "", "evil.example:8080", "127.0.0.1:8081", "127.0.0.1", "localhost:x", "[zz]:1"]
    bad += ["localhost:\xb2", "127.0.0.1:80\xb2", "[::1]:\u0668", "localhost:" + "9" * 5000]
    for value in bad:
        assert not security.host_allowed(value, 8080), value
    assert security.host_allowed("127.0.0.1", 80)


def test_origin_rule() -> None:
    host = "127.0.0.1:8080"
    assert security.origin_allowed("GET", "http://evil.example", "cross-site", host)
    assert security.origin_allowed("POST", None, None, host)  # curl
    assert security.origin_allowed("POST", "http://127.0.0.1:8080", "same-origin", host)
    assert not security.origin_allowed("POST", "http://evil.example", None, host)
    assert not security.origin_allowed("POST", "null", None, host)
    assert not security.origin_allowed("POST", None, "cross-site", host)
    assert not security.origin_allowed("DELETE", "http://127.0.0.1:9999", None, host)


def test_token_rules(tmp_path: Path) -> None:
    token = security.load_or_create_token(tmp_path)
    path = tmp_path / security.TOKEN_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert security.load_or_create_token(tmp_path) == token  # stable
    assert security.token_matches(token, f"Bearer {token}", None)
    assert security.token_matches(token, None, f"a=b; {security.TOKEN_COOKIE}={token}")
    assert not security.token_matches(token, f"Bearer {token}x", None)
    assert not security.token_matches(token, f"Basic {token}", None)
    assert security.token_exempt("GET", "/files/ab")
    assert security.token_exempt("GET", "/metrics")
    assert not security.token_exempt("POST", "/files/")
    assert not security.token_exempt("GET", "/api/status")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        security.load_or_create_token(tmp_path)


def test_non_loopback_bind_gets_a_token(tmp_path: Path) -> None:
    assert settings_for_bind("127.0.0.1", tmp_path, HttpSettings()).token is None
    assert settings_for_bind("::1", tmp_path, HttpSettings()).token is None
    settings = settings_for_bind("0.0.0.0", tmp_path, HttpSettings())
    assert settings.token == (tmp_path / security.TOKEN_FILE_NAME).read_text().strip()


async def test_rules_over_http(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        face = await start_face(nursery, node)
        port = face.port
        ok = await face.get("/api/status", headers={"host": f"localhost:{port}"})
        assert ok.status == 200
        rebound = await face.get("/api/status", headers={"host": f"attacker.example:{port}"})
        assert rebound.status == 403
        assert rebound.json() == {
            "error": {
                "code": "forbidden",
                "message": "Host not allowed (use localhost or an IP address)",
            }
        }
        evil = await face.call(
            "POST", "/files?name=a.txt", body=b"x", headers={"origin": "http://evil.example"}
        )
        assert evil.status == 403
        same = await face.call(
            "POST",
            "/files?name=a.txt&disperse=0",
            body=b"x",
            headers={"origin": f"http://127.0.0.1:{port}"},
        )
        assert same.status == 201
        nursery.cancel_scope.cancel()


async def test_token_over_http(tmp_path: Path) -> None:
    token = "t" * 40
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        face = await start_face(nursery, node, settings=HttpSettings(token=token))
        assert (await face.get("/api/status")).status == 401
        assert (await face.get("/")).status == 401
        auth = {"authorization": f"Bearer {token}"}
        assert (await face.get("/api/status", headers=auth)).status == 200
        assert (await face.get("/metrics")).status == 200
        # Reading a locally complete file needs no token; fetching any other one does.
        src = tmp_path / "local.txt"
        src.write_bytes(b"here")
        local_id = await node.put(src, disperse=False)
        assert (await face.get(f"/files/{local_id.hex()}")).body == b"here"
        missing = await face.get("/files/" + "ab" * 32)
        assert missing.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (await face.get("/files/" + "ab" * 32, headers=auth)).status != 401
        assert (await face.call("POST", "/files?name=a", body=b"x")).status == 401
        login = await face.get(f"/?token={token}")
        assert login.status == 303
        cookie = login.headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in login.headers["set-cookie"]
        assert (await face.get("/", headers={"cookie": cookie})).status == 200
        assert (await face.get(f"/?token={'x' * 40}")).status == 401
        nursery.cancel_scope.cancel()


async def test_non_ascii_digits_are_no_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        src = tmp_path / "f.txt"
        src.write_bytes(b"0123456789")
        file_id = await node.put(src, disperse=False)
        face = await start_face(nursery, node)
        host = f"127.0.0.1:{face.port}".encode()
        target = f"/files/{file_id.hex()}".encode()
        ranged = await _raw(
            face.port,
            b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nRange: bytes=\xb2-\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert ranged.startswith(b"HTTP/1.1 200 "), ranged[:100]  # malformed Range: ignored
        assert ranged.endswith(b"0123456789")
        bad_host = await _raw(
            face.port,
            b"GET " + target + b" HTTP/1.1\r\nHost: localhost:\xb2\r\nConnection: close\r\n\r\n",
        )
        assert bad_host.startswith(b"HTTP/1.1 403 "), bad_host[:100]
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        nursery.cancel_scope.cancel()


async def _raw(port: int, data: bytes, *, read: bool = True) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if not read:
            return b""
        out = b""
        with trio.move_on_after(10):
            while chunk := await stream.receive_some(65536):
                out += chunk
        return out


async def test_bounds_and_slow_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "IDLE_TIMEOUT", 1.0)
    monkeypatch.setattr(server, "IO_TIMEOUT", 1.0)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        face = await start_face(nursery, node, settings=HttpSettings(max_upload_bytes=1000))
        port = face.port
        host = f"127.0.0.1:{port}".encode()
        # Oversized head: 431, connection closed.
        huge = b"GET / HTTP/1.1\r\nhost: " + host + b"\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await _raw(port, huge)).startswith(b"HTTP/1.1 431")
        # Oversized body: 413 (declared) ...
        big = await face.call("POST", "/files?name=a", body=b"x" * 1001)
        assert big.status == 413
        # ... and undeclared (chunked).
        chunked = (
            b"POST /files?name=a HTTP/1.1\r\nhost: " + host + b"\r\ntransfer-encoding: chunked"
            b"\r\n\r\n" + (b"100\r\n" + b"y" * 256 + b"\r\n") * 8 + b"0\r\n\r\n"
        )
        assert (await _raw(port, chunked)).startswith(b"HTTP/1.1 413")
        # A slowloris head and a client that never reads do not block anyone else...
        async with trio.open_nursery() as slow:
            stalled = await trio.open_tcp_stream("127.0.0.1", port)
            await stalled.send_all(b"GET /api/status HTTP/1.1\r\nhost: ")
            with trio.fail_after(5):
                assert (await face.get("/api/status")).status == 200
            # ... and the stalled one is closed after the timeout, with a 408.
            with trio.fail_after(5):
                answer = b""
                while chunk := await stalled.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408")
            await stalled.aclose()
            # A reader that stops reading a large file holds only its own connection, which is
            # dropped once a write makes no progress for IO_TIMEOUT.
            src = tmp_path / "big.bin"
            src.write_bytes(os.urandom(8 << 20))
            file_id = await node.put(src, disperse=False)
            lazy = await trio.open_tcp_stream("127.0.0.1", port)
            await lazy.send_all(
                b"GET /files/%s HTTP/1.1\r\nhost: %s\r\n\r\n" % (file_id.hex().encode(), host)
            )
            await trio.sleep(0.3)
            with trio.fail_after(5):
                assert (await face.get("/api/status")).status == 200
            await trio.sleep(2.5)
            got = 0
            with trio.fail_after(10):
                while chunk := await lazy.receive_some(1 << 20):
                    got += len(chunk)
            assert got < 8 << 20, "the server gave up on the client that did not read"
            await lazy.aclose()
            slow.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_connection_limit(tmp_path: Path) -> None:
    from p2pstore.http.server import HttpServer, serve_http

    async def handler(req: server.Request, resp: server.Response) -> None:
        await resp.json({"ok": True})

    http = HttpServer(handler, max_connections=2)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_http, http, "127.0.0.1", 0)
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.2)
        third = await request("127.0.0.1", port, "GET", "/")
        assert third.status == 503
        for s in held:
            await s.aclose()
        await trio.sleep(0.2)
        assert (await request("127.0.0.1", port, "GET", "/")).status == 200
        nursery.cancel_scope.cancel()


async def test_a_slow_but_steady_reader_gets_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "IO_TIMEOUT", 1.0)
    monkeypatch.setattr(server, "SEND_PIECE", 64 * 1024)
    async with trio.open_nursery() as nursery:
        swarm = Swarm(nursery, tmp_path)
        node = await swarm.start()
        face = await start_face(nursery, node)
        src = tmp_path / "f.bin"
        data = os.urandom(8 << 20)
        src.write_bytes(data)
        file_id = await node.put(src, disperse=False)
        stream = await trio.open_tcp_stream("127.0.0.1", face.port)
        await stream.send_all(
            b"GET /files/%s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nconnection: close\r\n\r\n"
            % (file_id.hex().encode(), face.port)
        )
        got = b""
        with trio.fail_after(60):
            while chunk := await stream.receive_some(32 * 1024):
                got += chunk
                await trio.sleep(0.01)  # ~3 MB/s: an 8 MiB body takes longer than IO_TIMEOUT
        await stream.aclose()
        assert got.endswith(data)
        nursery.cancel_scope.cancel()
