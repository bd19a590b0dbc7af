"""The local REST API (upstream api-server-rest paths) on an ephemeral loopback port, with the sample
attester and the real KBS behind it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from podvm.attestation_agent.agent import AttestationAgent
from podvm.attestation_agent.api import build_app, is_loopback_peer
from podvm.attestation_agent.attester import SampleAttester
from podvm.attestation_agent.config import AaConfig, KbsConfig
from protocols.kbs_client.rcar import KbsClient
from protocols.kbs_client.teekey import TeeKeyPair
from tests.kbs.support import (
    AFFIRMING_POLICY,
    SAMPLE_TRUSTING_POLICY,
    RunningKbs,
    admin_post,
    b64url,
    start_kbs,
)

SECRET = b"api secret"


@pytest.fixture
async def kbs(tmp_path: Path) -> AsyncIterator[RunningKbs]:
    server = await start_kbs(tmp_path)
    async with aiohttp.ClientSession() as http:
        await admin_post(
            http,
            server,
            "attestation-policy",
            {"type": "rego", "policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)},
        )
        await server.put_resource(http, "default/test/secret", SECRET)
    yield server
    await server.runner.cleanup()


async def allow_sample(server: RunningKbs) -> None:
    async with aiohttp.ClientSession() as http:
        await admin_post(http, server, "resource-policy", {"policy": b64url(AFFIRMING_POLICY)})


class Api:
    def __init__(self, server: TestServer, agent: AttestationAgent) -> None:
        self.server = server
        self.agent = agent

    async def get(self, path: str, **params: str) -> tuple[int, bytes, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.server.make_url(path), params=params) as resp,
        ):
            return resp.status, await resp.read(), resp.content_type


async def start_api(kbs_url: str | None, feature: str = "all") -> Api:
    config = AaConfig(kbs=KbsConfig(url=kbs_url) if kbs_url else None)
    agent = AttestationAgent(SampleAttester(), config, rcar_retry_delay=0)
    server = TestServer(build_app(agent, feature), host="127.0.0.1")
    await server.start_server()
    return Api(server, agent)


@pytest.fixture
async def api(kbs: RunningKbs) -> AsyncIterator[Api]:
    running = await start_api(kbs.url)
    yield running
    await running.server.close()
    await running.agent.close()


async def test_cdh_resource_through_the_local_api(kbs: RunningKbs, api: Api) -> None:
    status, body, _ = await api.get("/cdh/resource/default/test/secret")
    assert status == 500 and b"PolicyDeny" in body  # the default resource policy refuses the sample TEE
    await allow_sample(kbs)
    status, body, content_type = await api.get("/cdh/resource/default/test/secret")
    assert (status, body, content_type) == (200, SECRET, "application/octet-stream")
    status, body, _ = await api.get("/cdh/resource/default/test/absent")
    assert status == 500
    status, body, _ = await api.get("/cdh/resource/default/../secret")
    assert status in (404, 500) and SECRET not in body


async def test_token_endpoint_hands_out_a_usable_token_and_key(kbs: RunningKbs, api: Api) -> None:
    await allow_sample(kbs)
    status, body, content_type = await api.get("/aa/token", token_type="kbs")
    assert (status, content_type) == (200, "application/octet-stream")
    doc = json.loads(body)
    assert set(doc) == {"token", "tee_keypair"}
    assert doc["tee_keypair"].startswith("-----BEGIN PRIVATE KEY-----")
    key = TeeKeyPair.from_pem(doc["tee_keypair"])
    async with KbsClient(kbs.url, token=doc["token"], tee_key=key) as passport:
        assert await passport.get_resource("default/test/secret") == SECRET
    assert (await api.get("/aa/token"))[:2] == (400, b"BAD REQUEST")
    status, body, _ = await api.get("/aa/token", token_type="coco_as")
    assert status == 500 and b"unsupported token type" in body


async def test_evidence_endpoint() -> None:
    api = await start_api(None)
    try:
        status, body, _ = await api.get("/aa/evidence", runtime_data="hello world")
        assert status == 200
        assert json.loads(body) == {"svn": "1", "report_data": base64.b64encode(b"hello world").decode()}
        raw = bytes(range(48))
        encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        status, body, _ = await api.get("/aa/evidence", runtime_data=encoded, encoding="base64")
        assert json.loads(body)["report_data"] == base64.b64encode(raw).decode()
        for params in (
            {},
            {"runtime_data": "!!", "encoding": "base64"},
            {"runtime_data": "x", "encoding": "hex"},
        ):
            assert (await api.get("/aa/evidence", **params))[:2] == (400, b"BAD REQUEST")
        assert (await api.get("/aa/additional-evidence", runtime_data="x"))[:2] == (200, b"")
        status, body, _ = await api.get("/aa/token", token_type="kbs")
        assert status == 500 and b"no KBS configured" in body
    finally:
        await api.server.close()


async def test_info_routing_and_features() -> None:
    api = await start_api(None, feature="resource")
    try:
        status, body, _ = await api.get("/info")
        info = json.loads(body)
        assert status == 200 and info["feature"] == "resource" and "tee" not in info and info["version"]
        assert (await api.get("/aa/evidence", runtime_data="x"))[:2] == (
            404,
            b"Attestation Feature Not Enabled",
        )
        assert (await api.get("/nothing/here"))[:2] == (404, b"URL NOT FOUND")
        assert (await api.get("/cdh/other/x"))[:2] == (404, b"URL NOT FOUND")
        async with aiohttp.ClientSession() as http, http.post(api.server.make_url("/info")) as resp:
            assert resp.status == 405
    finally:
        await api.server.close()
    api = await start_api(None, feature="attestation")
    try:
        assert json.loads((await api.get("/info"))[1])["tee"] == "sample"
        assert (await api.get("/cdh/resource/a/b/c"))[:2] == (404, b"Resource Feature Not Enabled")
        async with (
            aiohttp.ClientSession() as http,
            http.post(api.server.make_url("/aa/aael"), json={}) as resp,
        ):
            assert json.loads(await resp.read())["success"] == "false"
    finally:
        await api.server.close()
    with pytest.raises(ValueError, match="feature"):
        build_app(AttestationAgent(SampleAttester(), AaConfig()), "everything")


@pytest.mark.parametrize(
    ("peer", "served"),
    [
        ("10.0.0.1", False),
        ("192.0.2.7", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1", False),
        ("", False),
        (None, False),
        ("unix-socket", False),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
    ],
)
def test_only_loopback_peers_are_served(peer: str | None, served: bool) -> None:
    assert is_loopback_peer(peer) is served
