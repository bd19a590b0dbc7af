"""Three `kbs` processes on one storage backend (LocalFs, PostgreSQL, Redis; real servers).

A guest's handshake crosses replicas at every step; 200 concurrent `/attest` of one session across
the replicas yield one token; a policy or reference value set through one replica holds on another
at its next request; a bearer token issued by one replica is accepted by the others.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from protocols.kbs import SESSION_COOKIE
from tests.kbs.scaleout import Replicas
from tests.kbs.storage_backends import SHARED_BACKENDS
from tests.kbs.support import (
    AFFIRMING_POLICY,
    API,
    SAMPLE_TRUSTING_POLICY,
    AdminKey,
    Guest,
    b64url,
    error_variant,
)

DENY_ALL = "package policy\ndefault allow := false\n"
SECRET = b"one secret, three replicas"


def server_url(request: pytest.FixtureRequest, kind: str) -> str:
    if kind == "Postgres":
        return str(request.getfixturevalue("postgres_url"))
    if kind == "Redis":
        return str(request.getfixturevalue("redis_url"))
    return ""


@pytest.fixture(params=SHARED_BACKENDS)
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    kind = request.param
    group = Replicas(kind, tmp_path, AdminKey.create(tmp_path), server_url(request, kind))
    try:
        await group.start(3)
        yield group
    finally:
        errors = group.stop()
    assert "Traceback" not in errors, errors


async def admin_post(group: Replicas, index: int, endpoint: str, **kwargs: object) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{group.urls[index]}{API}/{endpoint}", headers=group.admin.headers(), **kwargs) as r,  # type: ignore[arg-type]
    ):
        assert r.status == 200, await r.text()


async def prepare(group: Replicas) -> None:
    """Trusting policies and the resource, each through a different replica."""
    policy = {"policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)}
    await admin_post(group, 0, "attestation-policy", json=policy)
    await admin_post(group, 1, "resource-policy", json={"policy": b64url(AFFIRMING_POLICY)})
    await admin_post(group, 2, "resource/default/key/shared", data=SECRET)


async def test_a_handshake_crosses_every_replica(replicas: Replicas) -> None:
    await prepare(replicas)
    urls = replicas.urls
    for round_ in range(3):
        async with Guest(urls[round_ % 3]) as guest:
            assert (await guest.auth())[0] == 200
            guest.url = urls[(round_ + 1) % 3]
            status, doc = await guest.attest()
            assert status == 200, doc
            guest.url = urls[(round_ + 2) % 3]
            status, doc = await guest.resource("default/key/shared")
            assert status == 200, doc
            assert guest.decrypt_jwcrypto(doc) == SECRET
            # the token as a bearer token on another replica: the signing key is shared too
            bearer = {"Authorization": f"Bearer {guest.token}"}
            async with Guest(urls[round_ % 3], key=guest.key) as holder:
                status, doc = await holder.resource("default/key/shared", bearer)
            assert status == 200, doc


async def test_one_nonce_gives_one_token_across_replicas(replicas: Replicas) -> None:
    await prepare(replicas)
    async with Guest(replicas.urls[0]) as guest:
        assert (await guest.auth())[0] == 200
        body = guest.attestation().to_json()
        cookie = next(c.value for c in guest.http.cookie_jar if c.key == SESSION_COOKIE)  # type: ignore[union-attr]

    async def attest(http: aiohttp.ClientSession, index: int) -> tuple[int, str]:
        url = f"{replicas.urls[index % 3]}{API}/attest"
        async with http.post(url, data=body, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}) as response:
            doc = await response.json()
            return response.status, doc.get("token", doc.get("detail"))

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as http:
        results = await asyncio.gather(*(attest(http, index) for index in range(200)))
    assert {status for status, _ in results} == {200}, results[:3]
    assert len({token for _, token in results}) == 1


async def test_changes_through_one_replica_hold_on_another_at_once(replicas: Replicas) -> None:
    await prepare(replicas)
    third = replicas.urls[2]
    async with Guest(third) as guest:
        await guest.handshake()
        assert (await guest.resource("default/key/shared"))[0] == 200
        await admin_post(replicas, 0, "resource-policy", json={"policy": b64url(DENY_ALL)})
        status, doc = await guest.resource("default/key/shared")
        assert (status, error_variant(doc)) == (401, "PolicyDeny")
    payload = base64.b64encode(json.dumps({"shared_value": ["x"]}).encode()).decode()
    await admin_post(
        replicas, 0, "reference-value", json={"version": "0.1.0", "type": "sample", "payload": payload}
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{third}{API}/reference-value/shared_value", headers=replicas.admin.headers()) as r,
    ):
        assert (r.status, await r.json()) == (200, ["x"])
    # the default attestation policy does not affirm the sample TEE: set again through the first
    await admin_post(replicas, 0, "resource-policy", json={"policy": b64url(AFFIRMING_POLICY)})
    default = (Path(__file__).parents[2] / "verifier" / "policy" / "default_cpu.rego").read_text()
    await admin_post(
        replicas, 0, "attestation-policy", json={"policy_id": "default_cpu", "policy": b64url(default)}
    )
    async with Guest(third) as guest:
        await guest.handshake()
        status, doc = await guest.resource("default/key/shared")
        assert (status, error_variant(doc)) == (401, "PolicyDeny")
