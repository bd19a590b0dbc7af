"""Two `kbs` processes sharing one LocalFs storage directory, a client alternating between them.

The handshake crosses replicas at every step (auth on one, attest on the other, resource from the
first), which needs the shared session store, the shared token key and the shared resource policy;
the attestation policy and reference values are set through one replica only, while both run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.kbs.dbservers import free_port
from tests.kbs.scaleout import KBS, wait_healthy
from tests.kbs.support import (
    AFFIRMING_POLICY,
    API,
    SAMPLE_TRUSTING_POLICY,
    AdminKey,
    Guest,
    b64url,
    config_text,
)


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[list[str], AdminKey]]:
    if not KBS.exists():
        pytest.skip(f"the kbs command is not installed beside {sys.executable} (run scripts/bootstrap)")
    admin = AdminKey.create(tmp_path)
    processes, urls = [], []
    for index in range(2):
        port = free_port()
        config = tmp_path / f"kbs-{index}.toml"
        config.write_text(config_text(tmp_path / "storage", admin.path, sockets=f"127.0.0.1:{port}"))
        process = subprocess.Popen([str(KBS), "--config-file", str(config)], stderr=subprocess.PIPE)
        processes.append(process)
        urls.append(f"http://127.0.0.1:{port}")
        await wait_healthy(urls[-1], process)  # the first one creates the shared files
    try:
        yield urls, admin
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(30) == 0
            if process.stderr:
                process.stderr.close()


async def test_two_processes_complete_the_flow_for_an_alternating_client(
    replicas: tuple[list[str], AdminKey],
) -> None:
    (first, second), admin = replicas
    async with aiohttp.ClientSession() as http:

        async def post(url: str, endpoint: str, **kwargs: object) -> None:
            async with http.post(f"{url}{API}/{endpoint}", headers=admin.headers(), **kwargs) as r:  # type: ignore[arg-type]
                assert r.status == 200, await r.text()

        # Everything is shared through the storage directory: set once, on either replica, while
        # both run; the other applies it at its next request.
        await post(
            first,
            "attestation-policy",
            json={"policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)},
        )
        payload = base64.b64encode(json.dumps({"shared_value": ["x"]}).encode()).decode()
        await post(first, "reference-value", json={"version": "0.1.0", "type": "sample", "payload": payload})
        async with http.get(f"{second}{API}/reference-value/shared_value", headers=admin.headers()) as r:
            assert (r.status, await r.json()) == (200, ["x"])
        await post(second, "resource-policy", json={"policy": b64url(AFFIRMING_POLICY)})
        await post(second, "resource/default/key/shared", data=b"one secret, two replicas")

    for round_ in range(3):
        async with Guest(first) as guest:
            guest.url = (first, second)[round_ % 2]
            assert (await guest.auth())[0] == 200
            guest.url = (second, first)[round_ % 2]
            status, doc = await guest.attest()
            assert status == 200, doc
            guest.url = (first, second)[round_ % 2]
            status, doc = await guest.resource("default/key/shared")
            assert status == 200, doc
            assert guest.decrypt_jwcrypto(doc) == b"one secret, two replicas"


async def test_worker_count_starts_workers_on_one_port(tmp_path: Path) -> None:
    if not KBS.exists():
        pytest.skip(f"the kbs command is not installed beside {sys.executable} (run scripts/bootstrap)")
    admin = AdminKey.create(tmp_path)
    port = free_port()
    config = tmp_path / "kbs.toml"
    text = config_text(tmp_path / "storage", admin.path, sockets=f"127.0.0.1:{port}")
    config.write_text(text.replace("insecure_http = true", "insecure_http = true\nworker_count = 2"))
    process = subprocess.Popen([str(KBS), "-c", str(config)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if sum("listening on http://127.0.0.1" in line for line in lines) == 2:
                break
            assert process.poll() is None, "".join(lines)
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("two workers did not start: " + "".join(lines))
        async with Guest(url) as guest:
            await guest.handshake()  # the sample TEE attests; resources stay refused by default
            status, _ = await guest.resource("default/key/none")
            assert status == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        reader.join(10)
    pids = {line.split("(pid ")[1].split(")")[0] for line in lines if "listening on" in line}
    assert len(pids) == 2 and "Traceback" not in "".join(lines)
