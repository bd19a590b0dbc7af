"""Registry behaviour docker-registry cannot be made to show, from a small test server over an OCI
layout: faults the CDH must turn into upstream's pull errors (never a bare exception, never a partial
rootfs) -- a blob connection cut mid-body, a blob whose bytes do not match its digest -- and the
Bearer-token challenge of Docker Hub-style registries, answered with auth.json credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from podvm.attestation_agent.attester import SampleAttester
from podvm.cdh.config import CdhConfig, ImageSettings
from podvm.cdh.hub import ConfidentialDataHub
from protocols.proto import cdh_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import TtrpcError
from tests.images.registry import make_oci_image, read_oci_image

PULL_FAILED = "[CDH] [ERROR]: Image Pull error: Errors happened when pulling image"


TOKEN = "t0k3n"
BASIC = "Basic " + base64.b64encode(b"puller:s3cret").decode()


async def _serve_layout(layout: Path, fault: str) -> web.AppRunner:
    manifest, _ = read_oci_image(layout)
    layer_digest = manifest["layers"][0]["digest"]

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if fault != "bearer" or request.path == "/token":
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="test",scope="repository:x/y:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return await handler(request)

    async def token(request: web.Request) -> web.Response:
        if (
            request.headers.get("Authorization") != BASIC
            or request.query.get("scope") != "repository:x/y:pull"
        ):
            return web.Response(status=401)
        return web.json_response({"token": TOKEN})

    async def manifests(request: web.Request) -> web.Response:
        return web.Response(
            body=json.dumps(manifest).encode(), content_type="application/vnd.oci.image.manifest.v1+json"
        )

    async def blobs(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        if digest != layer_digest or fault == "bearer":
            return web.Response(body=data)
        if fault == "corrupt":
            return web.Response(body=bytes(len(data)))
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # cut mid-body
        return response

    app = web.Application(middlewares=[bearer])
    app.router.add_get("/token", token)
    app.router.add_get("/v2/{repo:.+}/manifests/{reference}", manifests)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blobs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def _pull(tmp_path, fault: str, credentials: str | None = None) -> None:
    make_oci_image(tmp_path / "plain", [{"data/x": bytes(range(256)) * 4000}])
    runner = await _serve_layout(tmp_path / "plain", fault)
    port = runner.addresses[0][1]
    if credentials is not None:
        (tmp_path / "auth.json").write_text(credentials.replace("REGISTRY", f"127.0.0.1:{port}"))
    settings = ImageSettings(work_dir=tmp_path / "work", credentials_uri=f"file://{tmp_path}/auth.json")
    hub = ConfidentialDataHub(CdhConfig(socket=tmp_path / "cdh.sock", image=settings), SampleAttester())
    server = await hub.serve()
    try:
        async with await Client.connect_unix(tmp_path / "cdh.sock") as client:
            request = cdh_pb2.ImagePullRequest(
                image_url=f"127.0.0.1:{port}/x/y:1", bundle_path=str(tmp_path / "b")
            )
            await client.unary("api.ImagePullService", "PullImage", request, cdh_pb2.ImagePullResponse)
    finally:
        await server.close()
        await hub.close()
        await runner.cleanup()


@pytest.mark.parametrize("fault", ["cut", "corrupt"])
async def test_blob_faults_are_pull_errors(tmp_path, fault):
    with pytest.raises(TtrpcError) as caught:
        await _pull(tmp_path, fault)
    assert caught.value.message == PULL_FAILED
    assert not (tmp_path / "b" / "rootfs").exists()
    assert list((tmp_path / "work").iterdir()) == []


async def test_bearer_token_challenge_answered_with_auth_json(tmp_path):
    with pytest.raises(TtrpcError) as caught:
        await _pull(tmp_path, "bearer")
    assert caught.value.message == "[CDH] [ERROR]: Image Pull error: Failed to pull image manifest"
    auth = json.dumps({"auths": {"REGISTRY": {"auth": BASIC.removeprefix("Basic ")}}})
    await _pull(tmp_path / "ok", "bearer", auth)
    assert (tmp_path / "ok" / "b" / "rootfs" / "data" / "x").stat().st_size == 256 * 4000
