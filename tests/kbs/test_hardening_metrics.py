"""`kbs` with two worker processes: a scrape of either one reports the requests both served."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp

from protocols import kbs
from tests.kbs.support import API, AdminKey, config_text

REQUESTS = 40  # over fresh connections: all on one worker has a chance of 2^-39


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in the scrape"
    return float(match.group(1))


async def test_worker_metrics_add_up(tmp_path: Path) -> None:
    admin = AdminKey.create(tmp_path)
    port = free_port()
    config = tmp_path / "kbs.toml"
    text = config_text(tmp_path / "storage", admin.path, sockets=f"127.0.0.1:{port}")
    config.write_text(text.replace("insecure_http = true", "insecure_http = true\nworker_count = 2"))
    process = subprocess.Popen(
        [sys.executable, "-m", "kbs.cli", "-c", str(config)], stderr=subprocess.PIPE, text=True
    )
    listening = threading.Semaphore(0)
    lines: list[str] = []

    def read() -> None:
        for line in process.stderr or []:
            lines.append(line)
            if "listening on" in line:
                listening.release()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(2):
            assert await asyncio.to_thread(listening.acquire, timeout=120), "".join(lines)
        body = kbs.Request("sample").to_json()
        for _ in range(REQUESTS):
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                http.post(f"{url}{API}/auth", data=body) as response,
            ):
                assert response.status == 200
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            scrape = await response.text()
        assert sample(scrape, "kbs_auth_requests_total") == REQUESTS
        assert sample(scrape, "kbs_http_requests_total") == REQUESTS
        assert sample(scrape, "kbs_http_active_connections") == 0
        assert sample(scrape, "kbs_http_request_duration_seconds_count") == REQUESTS
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        reader.join(10)
    assert "Traceback" not in "".join(lines)
