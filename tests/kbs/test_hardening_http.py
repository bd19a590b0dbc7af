"""The KBS's HTTP server against malformed, oversized and slow clients, a fault of its own, a taken
port, and the modes of its session database (issue 12, items 10, 11 and 13). Raw sockets where the
point is what aiohttp does before any handler runs."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kbs.broker import Broker
from kbs.sessions import SessionStore
from kbs.storage import SESSIONS
from kbs.storage.localfs import LocalFsStorage
from kbs.store import ResourcePath, ThreadedResourceStore
from tests.kbs.support import API, AdminKey, Guest, RunningKbs, config_text, error_variant, start_kbs

MARK = "QUOTEME"
SHORT = 0.5  # the timeouts under test, in seconds
PATIENCE = 30.0  # how long a test waits for what SHORT should bring about


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[RunningKbs]:
    running = await start_kbs(tmp_path, idle_timeout=SHORT, body_timeout=SHORT, backend=backend)
    yield running
    await running.runner.cleanup()


async def connect(server: RunningKbs) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), limit=2**20)


async def exchange(server: RunningKbs, raw: bytes) -> tuple[int, bytes]:
    """Send `raw`, read until the server closes: (status, body)."""
    reader, writer = await connect(server)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), PATIENCE)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (f"GET /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nX-Big: {MARK * 200_000}\r\n\r\n", 431),
        (f"GET /kbs/v0/{MARK * 3000} HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (f"{MARK} / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (f"GET / HTTP/1.1\r\nHost: x\r\n{MARK} header\r\n\r\n", 400),
        (f"GET /kbs/v0/auth HTTP/9.{MARK}\r\n\r\n", 400),
        (f"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: {MARK}\r\n\r\n", 400),
        (f"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{MARK}\r\n", 400),
    ],
    ids=[
        "header-over-limit",
        "request-line-over-limit",
        "bad-method",
        "bad-header",
        "bad-version",
        "bad-length",
        "bad-chunk",
    ],
)
async def test_requests_aiohttp_refuses_get_error_information(
    server: RunningKbs, raw: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    got, body = await exchange(server, raw.encode())
    assert got == status, body[:300]
    assert error_variant(json.loads(body)) == "HTTPFailed"
    assert MARK.encode() not in body
    assert MARK not in caplog.text  # nor in the log (a header may carry a token)


class FaultyStore:
    """A store with a bug: an exception no caller expects."""

    inline = True

    def get(self, path: ResourcePath) -> bytes:
        raise RuntimeError(f"bug {MARK}")

    def put(self, path: ResourcePath, data: bytes) -> None:
        raise RuntimeError(f"bug {MARK}")

    def delete(self, path: ResourcePath) -> None:
        raise RuntimeError(f"bug {MARK}")


async def test_a_fault_of_the_kbs_is_a_500_with_error_information(tmp_path: Path) -> None:
    def faulty(broker: Broker) -> None:
        broker.store = ThreadedResourceStore(FaultyStore())

    server = await start_kbs(tmp_path, configure=faulty)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}{API}/resource/default/key/one", data=b"x", headers=server.admin.headers()
            ) as response,
        ):
            body = await response.read()
        assert response.status == 500
        assert error_variant(json.loads(body)) == "HTTPFailed"
        assert MARK.encode() not in body
    finally:
        await server.runner.cleanup()


async def test_a_stalled_request_line_is_disconnected(server: RunningKbs) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /kbs/v0/au")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""  # closed, nothing answered
    writer.close()


async def test_stalled_headers_are_disconnected(server: RunningKbs) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Le")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    writer.close()


async def test_an_idle_kept_alive_connection_is_closed(server: RunningKbs) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    assert head.startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""  # content-length 0, then closed
    writer.close()


async def test_a_stalled_body_gets_408(server: RunningKbs) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"}"), PATIENCE)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert error_variant(json.loads(body)) == "HTTPFailed"


async def test_local_sessions_are_private(tmp_path: Path) -> None:
    store = SessionStore(LocalFsStorage(tmp_path / "state", SESSIONS))
    session = await store.create("sample", "nonce")
    directory = tmp_path / "state" / SESSIONS
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / session.id).stat().st_mode) == 0o600
    assert await store.attest(session, "token")
    assert stat.S_IMODE((directory / session.id).stat().st_mode) == 0o600


async def test_the_state_directory_the_kbs_creates_is_private(tmp_path: Path) -> None:
    server = await start_kbs(tmp_path)
    async with Guest(server.url) as guest:
        await guest.auth()
    await server.runner.cleanup()
    storage = tmp_path / "storage"  # sessions, the token signing key, resources
    assert stat.S_IMODE(storage.stat().st_mode) == 0o700
    sessions = storage / SESSIONS
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
    files = [path for path in sessions.iterdir() if path.name != ".lock"]
    assert files and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_port_is_one_line_and_exit_status_2(tmp_path: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = AdminKey.create(tmp_path)
        config = tmp_path / "kbs.toml"
        text = config_text(tmp_path / "storage", admin.path, sockets=f"127.0.0.1:{port}")
        config.write_text(
            text.replace("insecure_http = true", f"insecure_http = true\nworker_count = {workers}")
        )
        result = subprocess.run(
            [sys.executable, "-m", "kbs.cli", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("kbs:")]
    assert said == [f"kbs: cannot listen on 127.0.0.1:{port}: Address already in use"], result.stderr
