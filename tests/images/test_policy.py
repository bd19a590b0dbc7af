"""Image signature policy: scope selection as image-rs does it, and cosign-style signatures checked by
the CDH before any layer is fetched, with the policy and the public key as KBS resources."""

from __future__ import annotations

import base64
import json
import subprocess
from contextlib import contextmanager

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from podvm.cdh.config import ImageSettings
from podvm.cdh.errors import PullError
from podvm.cdh.identity import IdentityMismatch, check_identity
from podvm.cdh.policy import Requirement, parse_policy, scope_candidates
from podvm.cdh.reference import parse_reference
from protocols.ttrpc.status import TtrpcError
from tests.images.cdh_support import cdh, pull, world
from tests.images.cosign import manifest_digest, public_pem, sign
from tests.images.registry import make_oci_image, skopeo, wrap_in_index

REJECTED = "[CDH] [ERROR]: Image Pull error: Image policy rejected: Denied by policy: "


def test_scopes_are_tried_as_image_rs_does():
    assert scope_candidates(parse_reference("quay.io/prometheus/busybox:latest")) == [
        "quay.io/prometheus/busybox:latest",
        "quay.io/prometheus/busybox",
        "quay.io/prometheus",
        "quay.io",
        "*.io",
    ]
    assert scope_candidates(parse_reference("busybox")) == [
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox",
        "docker.io/library",
        "docker.io",
        "*.io",
    ]
    assert scope_candidates(parse_reference("127.0.0.1:5000/a/b@sha256:" + "0" * 64))[:3] == [
        "127.0.0.1:5000/a/b@sha256:" + "0" * 64,
        "127.0.0.1:5000/a/b",
        "127.0.0.1:5000/a",
    ]


def test_most_specific_scope_wins():
    policy = parse_policy(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        "*.example.com": [{"type": "insecureAcceptAnything"}],
                        "registry.example.com/team": [
                            {"type": "signedBy", "keyType": "GPGKeys", "keyData": "eA=="}
                        ],
                        "": [{"type": "sigstoreSigned", "keyPath": "/k"}],
                    }
                },
            }
        ).encode()
    )
    assert policy.requirements_for(parse_reference("registry.example.com/team/app:1"))[0].type == "signedBy"
    assert policy.requirements_for(parse_reference("registry.example.com/other/app:1")) == [
        Requirement("insecureAcceptAnything")
    ]
    assert policy.requirements_for(parse_reference("quay.io/x/y"))[0].type == "sigstoreSigned"


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b"{}",
        b'{"default": [{"type": "trustMe"}]}',
        b'{"default": {}}',
        b"not json",
        b'{"default":[{}]}',
    ],
)
def test_invalid_policy_files(doc):
    with pytest.raises(PullError, match="Invalid image policy file"):
        parse_policy(doc)


async def test_cosign_signatures_with_policy_and_key_from_the_kbs(tmp_path):
    async with world(tmp_path) as w:
        key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        registry = w.registry
        # Three images in the protected repository: signed, unsigned, signed with another key.
        sign(registry, "test/app", manifest_digest(w.plain_image), key, tmp_path / "sig1")
        for target, files in (
            ("app:unsigned", {"u": b"1"}),
            ("app:key2", {"k": b"2"}),
            ("elsewhere:1", {"e": b"3"}),
        ):
            image = make_oci_image(tmp_path / target.replace(":", "_"), [files])
            result = skopeo(
                "copy", "--dest-tls-verify=false", image.ref, f"docker://{registry}/test/{target}"
            )
            assert result.returncode == 0, result.stderr
        sign(registry, "test/app", manifest_digest(f"{registry}/test/app:key2"), other_key, tmp_path / "sig2")
        policy = {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    f"{registry}/test/app": [
                        {
                            "type": "sigstoreSigned",
                            "keyPath": "kbs:///default/cosign-public-key/test",
                            "signedIdentity": {"type": "matchRepository"},
                        }
                    ],
                    f"{registry}/test/inline": [
                        {"type": "sigstoreSigned", "keyData": base64.b64encode(public_pem(key)).decode()}
                    ],
                }
            },
        }
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, "default/security-policy/test", json.dumps(policy).encode())
            await w.kbs.put_resource(http, "default/cosign-public-key/test", public_pem(key))
        settings = ImageSettings(
            policy_uri="kbs:///default/security-policy/test",
            work_dir=tmp_path / "work",
            credentials_uri=f"file://{tmp_path}/auth.json",
        )
        async with cdh(w, settings) as client:
            await pull(client, w.plain_image, tmp_path / "signed")
            assert (tmp_path / "signed" / "rootfs" / "bin" / "hello").exists()

            for name, reason in (
                ("test/app:unsigned", "rejected by `sigstoreSigned` rule: no cosign signature"),
                (
                    "test/app:key2",
                    "rejected by `sigstoreSigned` rule: no signature verifies with the policy's key",
                ),
                ("test/elsewhere:1", f"Policy `reject` rejects image {registry}/test/elsewhere:1"),
            ):
                bundle = tmp_path / name.replace("/", "_").replace(":", "_")
                with pytest.raises(TtrpcError) as caught:
                    await pull(client, f"{registry}/{name}", bundle)
                assert caught.value.message.startswith(REJECTED + reason), caught.value.message
                assert not bundle.exists()


async def test_signature_must_name_the_manifest_digest(tmp_path):
    """A valid signature of another image (copied under this image's .sig tag) does not count."""
    async with world(tmp_path) as w:
        key = ec.generate_private_key(ec.SECP256R1())
        sign(w.registry, "test/app", manifest_digest(w.plain_image), key, tmp_path / "sig")
        # Put the plain image's signature under the encrypted image's signature tag.
        plain_sig = manifest_digest(w.plain_image).replace(":", "-") + ".sig"
        enc_sig = manifest_digest(w.image).replace(":", "-") + ".sig"
        result = skopeo(
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{w.registry}/test/app:{plain_sig}",
            f"docker://{w.registry}/test/app:{enc_sig}",
        )
        assert result.returncode == 0, result.stderr
        policy = {
            "default": [{"type": "sigstoreSigned", "keyData": base64.b64encode(public_pem(key)).decode()}]
        }
        settings = ImageSettings(
            policy_inline=json.dumps(policy),
            work_dir=tmp_path / "work",
            credentials_uri=f"file://{tmp_path}/a",
        )
        async with cdh(w, settings) as client:
            with pytest.raises(TtrpcError) as caught:
                await pull(client, w.image, tmp_path / "bundle")
        assert (
            caught.value.message
            == REJECTED + "rejected by `sigstoreSigned` rule: Manifest digest does not match signature."
        )


def _gpg(home, *args, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@contextmanager
def gpg_key(home):
    home.mkdir(mode=0o700)
    try:
        _gpg(home, "--quick-gen-key", f"Test <{home.name}@example.com>", "ed25519", "sign", "never")
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, timeout=60)


def _gpg_sign(home, sigstore, image: str, digest: str) -> None:
    """A simple-signing signature of `image@digest`, stored where the sigstore lookaside looks."""
    reference = parse_reference(image)
    payload = {
        "critical": {
            "identity": {"docker-reference": image},
            "image": {"docker-manifest-digest": digest},
            "type": "atomic container signature",
        },
        "optional": {},
    }
    directory = sigstore / f"{reference.repository}@{digest.replace(':', '=')}"
    directory.mkdir(parents=True)
    (directory / "signature-1").write_bytes(
        _gpg(home, "--sign", "--output", "-", data=json.dumps(payload).encode())
    )


async def test_gpg_simple_signing_with_sigstore_config_from_the_kbs(tmp_path):
    with gpg_key(tmp_path / "key1") as key1, gpg_key(tmp_path / "key2") as key2:
        async with world(tmp_path) as w:
            sigstore = tmp_path / "sigstore"
            _gpg_sign(key1, sigstore, w.plain_image, manifest_digest(w.plain_image))
            _gpg_sign(key2, sigstore, w.image, manifest_digest(w.image))
            keyring = _gpg(key1, "--export")
            policy = {
                "default": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "kbs:///default/gpg-keyring/test"}
                ]
            }
            async with aiohttp.ClientSession() as http:
                await w.kbs.put_resource(http, "default/gpg-keyring/test", keyring)
                sigstore_config = f"default-docker:\n  sigstore: file://{sigstore}\n".encode()
                await w.kbs.put_resource(http, "default/sigstore-config/test", sigstore_config)
            settings = ImageSettings(
                policy_inline=json.dumps(policy),
                sigstore_config_uri="kbs:///default/sigstore-config/test",
                work_dir=tmp_path / "work",
                credentials_uri=None,
            )
            async with cdh(w, settings) as client:
                await pull(client, w.plain_image, tmp_path / "signed")
                with pytest.raises(TtrpcError) as caught:
                    await pull(client, w.image, tmp_path / "other-key")
                message = caught.value.message
                assert message.startswith(
                    REJECTED + "rejected by `signedBy` rule: The signatures do not satisfied!"
                )
                assert "signature does not verify with the policy's keyring" in message
                # A tag whose digest has no signature directory at all.
                image = make_oci_image(tmp_path / "unsigned", [{"u": b"1"}])
                pushed = skopeo(
                    "copy", "--dest-tls-verify=false", image.ref, f"docker://{w.registry}/test/app:unsigned"
                )
                assert pushed.returncode == 0, pushed.stderr
                with pytest.raises(TtrpcError) as caught:
                    await pull(client, f"{w.registry}/test/app:unsigned", tmp_path / "unsigned-bundle")
                assert "Can not find any signatures." in caught.value.message
        assert (tmp_path / "signed" / "rootfs" / "bin" / "hello").exists()


def test_signed_identity_rules():
    tagged = parse_reference("quay.io/team/app:1")
    by_digest = parse_reference("quay.io/team/app@sha256:" + "1" * 64)
    check_identity({"type": "matchRepoDigestOrExact"}, tagged, "quay.io/team/app:1")
    check_identity({"type": "matchRepoDigestOrExact"}, by_digest, "quay.io/team/app:other")
    check_identity({"type": "matchRepository"}, tagged, "quay.io/team/app:2")
    check_identity({"type": "exactRepository", "dockerRepository": "quay.io/x/y"}, tagged, "quay.io/x/y:9")
    check_identity(
        {"type": "remapIdentity", "prefix": "quay.io/team", "signedPrefix": "mirror.io/t"},
        tagged,
        "mirror.io/t/app:1",
    )
    for rule, image, signed in (
        ({"type": "matchExact"}, tagged, "quay.io/team/app:2"),
        ({"type": "matchExact"}, by_digest, "quay.io/team/app@sha256:" + "1" * 64),
        ({"type": "matchRepoDigestOrExact"}, tagged, "quay.io/team/app:2"),
        ({"type": "matchRepository"}, tagged, "quay.io/team/other:1"),
        ({"type": "exactReference", "dockerReference": "quay.io/team/app:1"}, tagged, "quay.io/team/app:2"),
        ({"type": "sometimes"}, tagged, "quay.io/team/app:1"),
    ):
        with pytest.raises(IdentityMismatch):
            check_identity(rule, image, signed)


async def test_multi_arch_tag_signed_by_its_index_digest(tmp_path):
    """A tag naming an index resolves to the linux/amd64 manifest; cosign signed the index digest, and
    the key may be given as PEM text in keyData (as image-rs reads it)."""
    async with world(tmp_path) as w:
        key = ec.generate_private_key(ec.SECP256R1())
        image = make_oci_image(tmp_path / "multi", [{"bin/hello": b"multi\n"}])
        wrap_in_index(image.layout)
        target = f"{w.registry}/test/multi:1"
        pushed = skopeo("copy", "--all", "--dest-tls-verify=false", image.ref, f"docker://{target}")
        assert pushed.returncode == 0, pushed.stderr
        index_digest = manifest_digest(target)
        sign(w.registry, "test/multi", index_digest, key, tmp_path / "sig")
        policy = {"default": [{"type": "sigstoreSigned", "keyData": public_pem(key).decode()}]}
        settings = ImageSettings(
            policy_inline=json.dumps(policy), work_dir=tmp_path / "work", credentials_uri=None
        )
        async with cdh(w, settings) as client:
            digest = await pull(client, target, tmp_path / "bundle")
        assert digest != index_digest  # the platform manifest's
        assert (tmp_path / "bundle" / "rootfs" / "bin" / "hello").read_bytes() == b"multi\n"
