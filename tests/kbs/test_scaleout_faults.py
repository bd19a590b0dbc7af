"""Faults of a scaled-out KBS: the database stopped under load, a replica killed under load, a
shared attestation service (`coco_as_grpc`) and its absence.

Load guests run handshakes (auth, attest, resource) round-robin over the replicas; the tests wait
for counts of completed handshakes and answers, never for time, except for the length of the
outage itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from kbs.storage.factory import POSTGRES
from tests.kbs.dbservers import Postgres, free_port
from tests.kbs.scaleout import Replicas
from tests.kbs.support import AdminKey, Guest, error_variant
from tests.kbs.test_scaleout import SECRET, admin_post, prepare

PATIENCE = 120.0  # how long a test waits for what the load should bring about
GUESTS = 6
OUTAGE_SECONDS = 5.0


@dataclass
class Load:
    """Guests handshaking over `urls` until stopped. With `retry`, a step whose replica cannot be
    reached is sent once to the next replica (what a Service in front of them does)."""

    urls: list[str]
    retry: bool = False
    statuses: Counter[int] = field(default_factory=Counter)
    completed: int = 0
    retries: list[int] = field(default_factory=list)  # per completed handshake
    failures: list[str] = field(default_factory=list)
    stopping: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _note(self, status: int) -> None:
        self.statuses[status] += 1
        self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        try:
            async with asyncio.timeout(PATIENCE):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"load: {self.completed} done, answers {self.statuses}, {self.failures}"
            ) from None

    async def _step(
        self, guest: Guest, start: int, call: Callable[[], Awaitable[tuple[int, object]]], tries: list[int]
    ) -> tuple[int, object]:
        index = start
        while True:
            guest.url = self.urls[index % len(self.urls)]
            try:
                status, doc = await call()
            except aiohttp.ClientConnectionError as exc:
                if not self.retry or tries[0] >= 1:
                    raise AssertionError(f"replica {guest.url} unreachable: {exc}") from None
                tries[0] += 1
                index += 1
                continue
            self._note(status)
            return status, doc

    async def guest(self, number: int) -> None:
        round_ = number
        while not self.stopping:
            round_ += 1
            tries = [0]
            async with Guest(self.urls[0]) as guest:
                status, doc = await self._step(guest, round_, guest.auth, tries)
                if status != 200:
                    continue
                status, doc = await self._step(guest, round_ + 1, guest.attest, tries)
                if status != 200:
                    continue
                status, doc = await self._step(
                    guest, round_ + 2, lambda: guest.resource("default/key/shared"), tries
                )
                if status != 200:
                    continue
                if guest.decrypt_jwcrypto(doc) != SECRET:
                    self.failures.append("wrong resource")
            self.completed += 1
            self.retries.append(tries[0])
            self.changed.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self.guest(number)) for number in range(GUESTS)]
        try:
            yield self
        finally:
            self.stopping = True
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.failures += [repr(result) for result in results if isinstance(result, BaseException)]


@pytest.fixture
async def on_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    group = Replicas(POSTGRES, tmp_path, AdminKey.create(tmp_path), request.getfixturevalue("postgres_url"))
    try:
        await group.start(3)
        await prepare(group)
        yield group
    finally:
        errors = group.stop()
    assert "Traceback" not in errors, errors


async def test_a_database_outage_is_503s_then_recovery(
    on_postgres: Replicas, postgres_server: Postgres
) -> None:
    load = Load(on_postgres.urls)
    async with load.running():
        await load.until(lambda: load.completed >= 10)
        postgres_server.stop()
        try:
            await load.until(lambda: load.statuses[503] >= 10)
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
        finally:
            postgres_server.start()
        recovered = load.completed
        await load.until(lambda: load.completed >= recovered + 20)
    assert not load.failures, load.failures
    assert 500 not in load.statuses and set(load.statuses) <= {200, 503}, load.statuses


async def test_a_replica_killed_under_load_costs_a_guest_one_retry(on_postgres: Replicas) -> None:
    load = Load(on_postgres.urls, retry=True)
    async with load.running():
        await load.until(lambda: load.completed >= 20)
        on_postgres.kill(1)
        killed_at = load.completed
        await load.until(lambda: load.completed >= killed_at + 60)
    assert not load.failures, load.failures
    assert set(load.statuses) == {200}, load.statuses
    assert max(load.retries) <= 1 and sum(load.retries) >= 1


@pytest.fixture
async def attestation_service(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    binary = Path(sys.executable).with_name("attestation-service")
    if not binary.exists():
        pytest.skip("the attestation-service command is not installed (run scripts/bootstrap)")
    port = free_port()
    command = [
        str(binary),
        "--socket",
        "",
        "--grpc-socket",
        f"127.0.0.1:{port}",
        "--work-dir",
        str(tmp_path / "as"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        assert "grpc listening" in line, line
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(30)


async def test_kbs_front_ends_share_one_attestation_service(
    request: pytest.FixtureRequest, tmp_path: Path, attestation_service: tuple[str, subprocess.Popen[str]]
) -> None:
    address, service = attestation_service
    url = request.getfixturevalue("redis_url")
    group = Replicas("Redis", tmp_path, AdminKey.create(tmp_path), url, as_addr=address)
    try:
        await group.start(3)
        await prepare(group)  # the attestation policy goes to the service through the first
        for round_ in range(2):
            async with Guest(group.urls[round_ % 2]) as guest:
                assert (await guest.auth())[0] == 200
                guest.url = group.urls[(round_ + 1) % 2]
                status, doc = await guest.attest()
                assert status == 200, doc
                assert guest.token_claims()["submods"]["cpu0"]["ear.status"] == "affirming"
                status, doc = await guest.resource("default/key/shared")
                assert status == 200 and guest.decrypt_jwcrypto(doc) == SECRET
        service.terminate()
        service.wait(30)
        async with Guest(group.urls[0]) as guest:
            assert (await guest.auth())[0] == 200
            status, doc = await guest.attest()
            assert (status, error_variant(doc)) == (503, "AttestationError"), doc
            assert "attestation service unavailable" in doc["detail"]
    finally:
        errors = group.stop()
    assert "Traceback" not in errors, errors


async def test_reference_values_go_to_the_shared_service(
    request: pytest.FixtureRequest, tmp_path: Path, attestation_service: tuple[str, subprocess.Popen[str]]
) -> None:
    import base64
    import json

    address, _ = attestation_service
    group = Replicas(
        "Redis", tmp_path, AdminKey.create(tmp_path), request.getfixturevalue("redis_url"), as_addr=address
    )
    try:
        await group.start(2)
        payload = base64.b64encode(json.dumps({"shared_value": ["x"]}).encode()).decode()
        await admin_post(
            group, 0, "reference-value", json={"version": "0.1.0", "type": "sample", "payload": payload}
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{group.urls[1]}/kbs/v0/reference-value/shared_value", headers=group.admin.headers()
            ) as r,
        ):
            assert (r.status, await r.json()) == (200, ["x"])
    finally:
        group.stop()
