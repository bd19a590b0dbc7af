"""Registry credentials: a docker-registry with htpasswd (Basic) authentication; the CDH pulls with
the credentials of the pod VM's auth.json and fails, with upstream's message, without them."""

from __future__ import annotations

import base64
import json
import warnings

import pytest

from podvm.attestation_agent.attester import SampleAttester
from podvm.cdh.config import CdhConfig, ImageSettings
from podvm.cdh.hub import ConfidentialDataHub
from protocols.proto import cdh_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import TtrpcError
from tests.images.registry import make_oci_image, running_registry, skopeo

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt through libxcrypt: what docker-registry's htpasswd needs


def _auth_json(registry: str, user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": token}}})


async def _pull(tmp_path, image: str, credentials: str | None, bundle):
    auth = tmp_path / "auth.json"
    if credentials is not None:
        auth.write_text(credentials)
    settings = ImageSettings(work_dir=tmp_path / "work", credentials_uri=f"file://{auth}")
    hub = ConfidentialDataHub(CdhConfig(socket=tmp_path / "cdh.sock", image=settings), SampleAttester())
    server = await hub.serve()
    try:
        async with await Client.connect_unix(tmp_path / "cdh.sock") as client:
            request = cdh_pb2.ImagePullRequest(image_url=image, bundle_path=str(bundle))
            await client.unary(
                "api.ImagePullService", "PullImage", request, cdh_pb2.ImagePullResponse, timeout=60
            )
    finally:
        await server.close()
        await hub.close()


async def test_pull_with_auth_json_credentials(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"puller:{crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    image = make_oci_image(tmp_path / "plain", [{"bin/hello": b"hi\n"}])
    with running_registry(tmp_path, htpasswd=htpasswd) as registry:
        pushed = skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "puller:s3cret",
            image.ref,
            f"docker://{registry}/private/app:1",
        )
        assert pushed.returncode == 0, pushed.stderr
        reference = f"{registry}/private/app:1"

        for credentials in (None, _auth_json(registry, "puller", "wrong")):
            with pytest.raises(TtrpcError) as caught:
                await _pull(tmp_path, reference, credentials, tmp_path / "denied")
            assert caught.value.message == "[CDH] [ERROR]: Image Pull error: Failed to pull image manifest"
            assert not (tmp_path / "denied").exists()

        await _pull(tmp_path, reference, _auth_json(registry, "puller", "s3cret"), tmp_path / "bundle")
    assert (tmp_path / "bundle" / "rootfs" / "bin" / "hello").read_bytes() == b"hi\n"
