"""The guest path: the CDH attests to a running KBS (sample TEE), pulls an image encrypted through
peerpods-keyprovider from a local registry and unpacks it; without the key, with a wrong key, or when
the KBS's policy refuses the TEE, the pull fails with upstream's message and leaves no plaintext."""

from __future__ import annotations

import base64
import hashlib
import json

import aiohttp
import pytest

from podvm.cdh.errors import DECRYPT_LAYER_FAILED
from protocols.ocicrypt import keyprovider, layer
from protocols.proto import cdh_pb2, keyprovider_pb2
from protocols.ttrpc.status import TtrpcError
from tests.images.cdh_support import HELLO, KEY_PATH, cdh, pull, world
from tests.images.registry import read_oci_image, skopeo
from tests.kbs.support import SAMPLE_TRUSTING_POLICY, admin_post, b64url

DECRYPT_MESSAGE = f"[CDH] [ERROR]: Image Pull error: {DECRYPT_LAYER_FAILED}"


def _no_plaintext_left(w, bundle, plain_blobs):
    assert not (bundle / "rootfs").exists()
    work = w.tmp / "work"
    leftovers = list(work.iterdir()) if work.exists() else []
    assert leftovers == []
    # Only the plain source layout and the registry (which also holds test/app:plain) hold a plaintext
    # layer blob anywhere under the test directory.
    for path in w.tmp.rglob("*"):
        if path.is_file() and path.relative_to(w.tmp).parts[0] not in ("plain", "registry-data"):
            data = path.read_bytes()
            assert not any(blob == data for blob in plain_blobs), path


def _plain_blobs(w):
    """The plaintext (compressed) layers of the image."""
    return read_oci_image(w.tmp / "plain")[1]


async def test_encrypted_image_is_pulled_after_attestation(tmp_path):
    async with world(tmp_path) as w:
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, KEY_PATH, w.kek)
        async with cdh(w) as client:
            digest = await pull(client, w.image, tmp_path / "bundle")
            rootfs = tmp_path / "bundle" / "rootfs"
            assert (rootfs / "bin" / "hello").read_bytes() == HELLO
            assert (rootfs / "bin" / "hello").stat().st_mode & 0o111
            assert len((rootfs / "data" / "big").read_bytes()) == 200_000
            raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{w.image}").stdout.encode()
            assert digest == f"sha256:{hashlib.sha256(raw).hexdigest()}"
            assert list((tmp_path / "work").iterdir()) == []

            # The same socket serves GetResource and UnWrapKey (what ocicrypt-rs calls) with upstream names.
            resource = await client.unary(
                "api.GetResourceService",
                "GetResource",
                cdh_pb2.GetResourceRequest(ResourcePath=f"kbs:///{KEY_PATH}"),
                cdh_pb2.GetResourceResponse,
            )
            assert resource.Resource == w.kek
            annotations = json.loads(raw)["layers"][0]["annotations"]
            packet = base64.b64decode(annotations[keyprovider.ANNOTATION_PREFIX + "peerpods"])
            request = keyprovider_pb2.KeyProviderKeyWrapProtocolInput(
                KeyProviderKeyWrapProtocolInput=keyprovider.unwrap_request(packet, {})
            )
            reply = await client.unary(
                "keyprovider.KeyProviderService",
                "UnWrapKey",
                request,
                keyprovider_pb2.KeyProviderKeyWrapProtocolOutput,
            )
            out = json.loads(reply.KeyProviderKeyWrapProtocolOutput)
            # The integer-array form ocicrypt-rs reads.
            assert isinstance(out["keyunwrapresults"]["optsdata"], list)
            optsdata = bytes(out["keyunwrapresults"]["optsdata"])
            assert len(layer.parse_private(optsdata).symkey) == 32

            # The same packet in v2 form (explicit version and provider, empty KMS maps) unwraps alike.
            v2 = {**json.loads(packet), "version": "0.1.0", "provider": "kbs", "provider_settings": {}}
            request = keyprovider_pb2.KeyProviderKeyWrapProtocolInput(
                KeyProviderKeyWrapProtocolInput=keyprovider.unwrap_request(json.dumps(v2).encode(), {})
            )
            reply = await client.unary(
                "keyprovider.KeyProviderService",
                "UnWrapKey",
                request,
                keyprovider_pb2.KeyProviderKeyWrapProtocolOutput,
            )
            out = json.loads(reply.KeyProviderKeyWrapProtocolOutput)
            assert bytes(out["keyunwrapresults"]["optsdata"]) == optsdata


async def _refused(w, tmp_path):
    async with cdh(w) as client:
        with pytest.raises(TtrpcError) as caught:
            await pull(client, w.image, tmp_path / "bundle")
    assert caught.value.message == DECRYPT_MESSAGE
    _no_plaintext_left(w, tmp_path / "bundle", _plain_blobs(w))


async def test_no_key_in_the_kbs(tmp_path):
    async with world(tmp_path) as w:
        await _refused(w, tmp_path)


async def test_wrong_key_in_the_kbs(tmp_path):
    async with world(tmp_path) as w:
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, KEY_PATH, b"junk_key")  # kata's wrong-key case: 8 bytes
        await _refused(w, tmp_path)


async def test_kbs_policy_refusing_the_sample_tee(tmp_path):
    async with world(tmp_path) as w:
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, KEY_PATH, w.kek)
            untrusting = SAMPLE_TRUSTING_POLICY.replace('input.sample.svn == "1"', 'input.sample.svn == "9"')
            doc = {"type": "rego", "policy_id": "default_cpu", "policy": b64url(untrusting)}
            await admin_post(http, w.kbs, "attestation-policy", doc)
        await _refused(w, tmp_path)


async def test_tampered_hmac_is_refused_before_any_plaintext(tmp_path):
    async with world(tmp_path) as w:
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, KEY_PATH, w.kek)
        index = json.loads((tmp_path / "enc" / "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest_path = tmp_path / "enc" / "blobs" / "sha256" / digest
        manifest = json.loads(manifest_path.read_text())
        pubopts = {"cipher": layer.CIPHER, "hmac": base64.b64encode(bytes(32)).decode(), "cipheroptions": {}}
        manifest["layers"][1]["annotations"][keyprovider.PUBOPTS_ANNOTATION] = base64.b64encode(
            json.dumps(pubopts).encode()
        ).decode()
        body = json.dumps(manifest).encode()
        new_digest = hashlib.sha256(body).hexdigest()
        (tmp_path / "enc" / "blobs" / "sha256" / new_digest).write_bytes(body)
        index["manifests"][0].update(digest=f"sha256:{new_digest}", size=len(body))
        (tmp_path / "enc" / "index.json").write_text(json.dumps(index))
        target = f"docker://{w.registry}/test/app:tampered"
        result = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'enc'}:latest", target)
        assert result.returncode == 0, result.stderr
        w.image = f"{w.registry}/test/app:tampered"
        await _refused(w, tmp_path)


async def test_plain_image_and_upstream_names(tmp_path):
    async with world(tmp_path) as w, cdh(w) as client:
        await pull(client, w.plain_image, tmp_path / "bundle")
        assert (tmp_path / "bundle" / "rootfs" / "bin" / "hello").read_bytes() == HELLO
        with pytest.raises(TtrpcError) as caught:
            await client.unary(
                "api.GetResourceService",
                "GetResource",
                cdh_pb2.GetResourceRequest(ResourcePath="kbs:///default/key/missing"),
                cdh_pb2.GetResourceResponse,
            )
        assert caught.value.message == "[CDH] [ERROR]: Get Resource failed"
        with pytest.raises(TtrpcError) as caught:
            await client.unary(
                "keyprovider.KeyProviderService",
                "UnWrapKey",
                keyprovider_pb2.KeyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=b"garbage"),
                keyprovider_pb2.KeyProviderKeyWrapProtocolOutput,
            )
        assert caught.value.message == "[ERROR] UnwrapKey Parse request failed"
