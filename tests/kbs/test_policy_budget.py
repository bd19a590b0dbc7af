"""Policies regorus takes exponential time to compile do not stop a running `kbs` (issue 12 item 1).

`allow := [[[[...]]]]` nested 40 deep is 100 bytes that regorus would compile for longer than anyone
waits, holding the GIL: compiled in the serving process it stopped `/healthz`, SIGTERM and start-up.
These run the real `kbs` command, so a stuck compile cannot take the test's own event loop with it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.kbs.dbservers import free_port
from tests.kbs.scaleout import KBS, wait_healthy
from tests.kbs.support import API, AdminKey, b64url, config_text

EXPLOSIVE = "package policy\nallow := " + "[" * 40 + "]" * 40 + "\n"
CHECK_TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass
class Kbs:
    url: str
    admin: AdminKey
    process: subprocess.Popen[bytes]


def _start(tmp_path: Path, admin: AdminKey) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp_path / "kbs.toml"
    config.write_text(config_text(tmp_path / "storage", admin.path, sockets=f"127.0.0.1:{port}"))
    process = subprocess.Popen([str(KBS), "-c", str(config)], stderr=subprocess.PIPE)
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
async def kbs(tmp_path: Path) -> AsyncIterator[Kbs]:
    if not KBS.exists():
        pytest.skip(f"the kbs command is not installed beside {KBS.parent} (run scripts/bootstrap)")
    admin = AdminKey.create(tmp_path)
    process, url = _start(tmp_path, admin)
    try:
        await wait_healthy(url, process)
        yield Kbs(url, admin, process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("resource-policy", {"policy": b64url(EXPLOSIVE)}),
        ("attestation-policy", {"type": "rego", "policy_id": "default_cpu", "policy": b64url(EXPLOSIVE)}),
    ],
)
async def test_an_explosive_policy_is_refused_while_healthz_answers_and_sigterm_stops(
    kbs: Kbs, endpoint: str, body: dict[str, str]
) -> None:
    async with aiohttp.ClientSession(timeout=CHECK_TIMEOUT) as http:

        async def post() -> tuple[int, dict[str, str]]:
            async with http.post(f"{kbs.url}{API}/{endpoint}", json=body, headers=kbs.admin.headers()) as r:
                return r.status, await r.json()

        posting = asyncio.create_task(post())
        async with http.get(f"{kbs.url}/healthz", timeout=aiohttp.ClientTimeout(total=20)) as health:
            assert health.status == 200
        status, error = await posting
        assert status == 401
        assert error["type"].startswith("https://github.com/confidential-containers/kbs/errors/")
        assert "CPU" in error["detail"], error
        posting = asyncio.create_task(post())
        async with http.get(f"{kbs.url}/healthz") as health:
            assert health.status == 200
        kbs.process.send_signal(signal.SIGTERM)  # whatever the second post is doing
        assert await asyncio.to_thread(kbs.process.wait, 30) == 0
        await asyncio.gather(posting, return_exceptions=True)


async def test_a_stored_explosive_resource_policy_fails_start_up_clearly(tmp_path: Path) -> None:
    if not KBS.exists():
        pytest.skip("the kbs command is not installed (run scripts/bootstrap)")
    stored = tmp_path / "storage" / "kbs" / "resource-policy"  # upstream's key in the kbs namespace
    stored.parent.mkdir(parents=True)
    stored.write_text(EXPLOSIVE)
    process, _ = _start(tmp_path, AdminKey.create(tmp_path))
    try:
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "kbs/resource-policy" in lines[0] and "CPU" in lines[0], lines


async def test_a_stored_explosive_attestation_policy_fails_start_up_clearly(tmp_path: Path) -> None:
    if not KBS.exists():
        pytest.skip("the kbs command is not installed (run scripts/bootstrap)")
    stored = tmp_path / "storage" / "attestation-service" / "policies" / "default_cpu.rego"
    stored.parent.mkdir(parents=True)
    stored.write_text(EXPLOSIVE)
    process, _ = _start(tmp_path, AdminKey.create(tmp_path))
    try:
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2
    assert "default_cpu" in stderr.decode() and "CPU" in stderr.decode()
