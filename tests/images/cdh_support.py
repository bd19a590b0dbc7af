"""Test support for the guest path: a running KBS (sample TEE trusted), a local registry holding an
image encrypted through peerpods-keyprovider, and a CDH serving its ttRPC socket."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from podvm.attestation_agent.attester import SampleAttester
from podvm.cdh.config import CdhConfig, ImageSettings
from podvm.cdh.hub import ConfidentialDataHub
from protocols.proto import cdh_pb2
from protocols.ttrpc.client import Client
from tests.images.gocrypt import PROVIDER_NAME, encrypt_oci_image, provider_config
from tests.images.registry import make_oci_image, running_registry, skopeo
from tests.kbs.support import RunningKbs, start_kbs

KEY_PATH = "default/key/app"
HELLO = b"#!/bin/sh\necho hello from an encrypted image\n"
LAYERS = [{"bin/hello": HELLO, "etc/motd": b"peer pods\n"}, {"data/big": os.urandom(200_000)}]


@dataclass
class World:
    tmp: Path
    kbs: RunningKbs
    registry: str
    kek: bytes
    image: str  # the encrypted image's reference
    plain_image: str


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """KBS with the sample-trusting policies, a registry with `test/app:enc` (encrypted, KEK not yet in
    the KBS) and `test/app:plain`."""
    kbs = await start_kbs(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await kbs.set_policies(http)
        make_oci_image(tmp_path / "plain", LAYERS)
        kek = tmp_path / "kek"
        key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=kbs:///{KEY_PATH}"
        await encrypt_oci_image(
            tmp_path / "plain", tmp_path / "enc", key, provider_config(tmp_path / "oc.json")
        )
        with running_registry(tmp_path) as registry:
            for layout, tag in (("enc", "enc"), ("plain", "plain")):
                result = skopeo(
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{tmp_path / layout}:latest",
                    f"docker://{registry}/test/app:{tag}",
                )
                assert result.returncode == 0, result.stderr
            yield World(
                tmp_path,
                kbs,
                registry,
                kek.read_bytes(),
                f"{registry}/test/app:enc",
                f"{registry}/test/app:plain",
            )
    finally:
        await kbs.runner.cleanup()


@asynccontextmanager
async def cdh(w: World, image: ImageSettings | None = None) -> AsyncIterator[Client]:
    """A CDH (sample attester) on a socket in the test's directory, and a ttRPC client of it."""
    settings = image or ImageSettings(work_dir=w.tmp / "work", credentials_uri=f"file://{w.tmp}/auth.json")
    socket = w.tmp / "cdh.sock"
    hub = ConfidentialDataHub(CdhConfig(socket=socket, kbs_url=w.kbs.url, image=settings), SampleAttester())
    server = await hub.serve()
    try:
        async with await Client.connect_unix(socket) as client:
            yield client
    finally:
        await server.close()
        await hub.close()


async def pull(client: Client, image: str, bundle: Path) -> str:
    request = cdh_pb2.ImagePullRequest(image_url=image, bundle_path=str(bundle))
    response = await client.unary(
        "api.ImagePullService", "PullImage", request, cdh_pb2.ImagePullResponse, timeout=120
    )
    return response.manifest_digest
