"""peerpods-keyprovider against Go ocicrypt (the library skopeo uses): layers encrypted through our
provider (cmd and gRPC) decrypt back byte-identical through it, our own decryption reads what Go
ocicrypt wrote, and KEKs registered through the KBS admin API are what an attested guest receives."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from kbs.keyprovider.grpc_server import start_grpc
from kbs.keyprovider.provider import KeyProvider, ProviderConfig
from protocols.ocicrypt import keyprovider, keywrap, layer, packet
from tests.images.gocrypt import PROVIDER_NAME, ocicrypt_go, provider_config
from tests.images.registry import layer_tar
from tests.kbs.support import Guest, start_kbs

PROVIDER_ANNOTATION = keyprovider.ANNOTATION_PREFIX + PROVIDER_NAME


def _plain_layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(layer_tar({"bin/app": b"#!/bin/sh\necho hello\n", "data/blob": os.urandom(300_000)}))
    return path


def _python_decrypt(cipher: Path, annotations: dict[str, str], kek: bytes) -> bytes:
    """Our own reading of what Go ocicrypt wrote: packet -> optsdata -> verify-then-decrypt."""
    p = packet.parse_packet(base64.b64decode(annotations[PROVIDER_ANNOTATION]))
    assert p.iv is not None and p.wrap_type is not None
    private = layer.parse_private(keywrap.unwrap(kek, p.wrapped_data, p.iv, p.wrap_type))
    public = layer.parse_public(base64.b64decode(annotations[keyprovider.PUBOPTS_ANNOTATION]))
    out = io.BytesIO()
    with cipher.open("rb") as source:
        layer.decrypt_file(source, out, private, public)
    return out.getvalue()


async def test_cmd_provider_round_trip_through_go_ocicrypt(tmp_path):
    plain, kek = _plain_layer(tmp_path), tmp_path / "kek"
    config = provider_config(tmp_path / "ocicrypt.json")
    cipher, annotations = tmp_path / "cipher", tmp_path / "annotations.json"
    key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=kbs:///default/key/app"
    status, err = await ocicrypt_go("encrypt", key, plain, cipher, annotations, config)
    assert status == 0, err
    assert len(kek.read_bytes()) == 32 and kek.stat().st_mode & 0o777 == 0o600
    doc = json.loads(annotations.read_text())
    p = packet.parse_packet(base64.b64decode(doc[PROVIDER_ANNOTATION]))
    assert (p.kid, p.wrap_type, len(p.iv or b"")) == ("kbs:///default/key/app", "A256GCM", 12)
    assert cipher.read_bytes() != plain.read_bytes()

    back = tmp_path / "back"
    status, err = await ocicrypt_go(
        "decrypt", f"provider:{PROVIDER_NAME}:keypath={kek}", cipher, back, annotations, config
    )
    assert status == 0, err
    assert back.read_bytes() == plain.read_bytes()
    assert _python_decrypt(cipher, doc, kek.read_bytes()) == plain.read_bytes()


async def test_grpc_provider_round_trip_with_a256ctr(tmp_path):
    server, port = await start_grpc(KeyProvider(ProviderConfig()), "127.0.0.1:0")
    try:
        plain, kek = _plain_layer(tmp_path), tmp_path / "kek"
        kek.write_bytes(os.urandom(32))
        config = provider_config(tmp_path / "ocicrypt.json", grpc=f"127.0.0.1:{port}")
        cipher, annotations = tmp_path / "cipher", tmp_path / "annotations.json"
        key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=default/key/ctr::algorithm=A256CTR"
        status, err = await ocicrypt_go("encrypt", key, plain, cipher, annotations, config)
        assert status == 0, err
        doc = json.loads(annotations.read_text())
        p = packet.parse_packet(base64.b64decode(doc[PROVIDER_ANNOTATION]))
        assert (p.kid, p.wrap_type, len(p.iv or b"")) == ("kbs:///default/key/ctr", "A256CTR", 16)

        back = tmp_path / "back"
        status, err = await ocicrypt_go(
            "decrypt", f"provider:{PROVIDER_NAME}:keypath={kek}", cipher, back, annotations, config
        )
        assert status == 0, err
        assert back.read_bytes() == plain.read_bytes()
    finally:
        await server.stop(None)


async def test_wrong_kek_is_refused_and_nothing_decrypts(tmp_path):
    plain, kek, other = _plain_layer(tmp_path), tmp_path / "kek", tmp_path / "other"
    other.write_bytes(os.urandom(32))
    config = provider_config(tmp_path / "ocicrypt.json")
    cipher, annotations, back = tmp_path / "cipher", tmp_path / "annotations.json", tmp_path / "back"
    key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=kbs:///default/key/app"
    assert (await ocicrypt_go("encrypt", key, plain, cipher, annotations, config))[0] == 0
    status, err = await ocicrypt_go(
        "decrypt", f"provider:{PROVIDER_NAME}:keypath={other}", cipher, back, annotations, config
    )
    assert status != 0
    assert "A256GCM unwrap failed: the KEK is not the one" in err


async def test_kek_registered_in_the_kbs_reaches_an_attested_guest(tmp_path):
    server = await start_kbs(tmp_path)
    try:
        admin_pem = tmp_path / "admin.pem"
        admin_pem.write_bytes(
            server.admin.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        args = ["--kbs-url", server.url, "--admin-key-file", str(admin_pem), "--issuer", "test-admin"]
        config = provider_config(tmp_path / "ocicrypt.json", args=args)
        plain, kek = _plain_layer(tmp_path), tmp_path / "kek"
        key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=kbs:///default/key/registered"
        status, err = await ocicrypt_go(
            "encrypt", key, plain, tmp_path / "cipher", tmp_path / "annotations.json", config
        )
        assert status == 0, err
        async with aiohttp.ClientSession() as http:
            await server.set_policies(http)
        async with Guest(server.url) as guest:
            await guest.handshake()
            status, doc = await guest.resource("default/key/registered")
            assert status == 200, doc
            assert guest.decrypt_jwcrypto(doc) == kek.read_bytes()
    finally:
        await server.runner.cleanup()


def _run_cmd(request: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kbs.keyprovider", *args], input=request, capture_output=True, timeout=60
    )


def test_cmd_mode_refuses_bad_input_with_a_message_and_status_1(tmp_path):
    cases = [
        (b"not json", "not JSON"),
        (keyprovider.wrap_request(b"{}", {PROVIDER_NAME: [b"keyid=kbs:///a/b/c"]}), "no keypath"),
        (
            keyprovider.wrap_request(b"{}", {PROVIDER_NAME: [b"keypath=/nonexistent/dir/kek::keyid=a/b/c"]}),
            "cannot",
        ),
        (keyprovider.unwrap_request(b"{}", {PROVIDER_NAME: [b"sample=true"]}), "no kid"),
    ]
    for request, message in cases:
        result = _run_cmd(request)
        assert result.returncode == 1
        assert result.stdout == b""
        assert message in result.stderr.decode(), result.stderr
        assert b"Traceback" not in result.stderr


def test_sample_mode_with_a256ctr_uses_a_16_byte_iv():
    request = keyprovider.wrap_request(b"opts", {PROVIDER_NAME: [b"sample=true::algorithm=A256CTR"]})
    result = _run_cmd(request)
    assert result.returncode == 0, result.stderr
    p = packet.parse_packet(keyprovider.parse_wrap_response(result.stdout))
    assert (p.wrap_type, p.iv) == ("A256CTR", bytes(16))


def test_sample_mode_matches_coco_keyprovider():
    result = _run_cmd(keyprovider.wrap_request(b"opts", {PROVIDER_NAME: [b"sample=true"]}))
    assert result.returncode == 0, result.stderr
    p = packet.parse_packet(keyprovider.parse_wrap_response(result.stdout))
    assert (p.kid, p.iv) == ("kbs:///default/test-key/1", bytes(12))
    back = _run_cmd(
        keyprovider.unwrap_request(keyprovider.parse_wrap_response(result.stdout), {"x": [b"sample=true"]})
    )
    assert keyprovider.parse_unwrap_response(back.stdout) == b"opts"


@pytest.mark.parametrize("keyid", ["kbs://10.0.0.1:8080/default/key/1", "/default/key/1", "default/key/1"])
def test_keyid_forms_are_written_as_kbs_uris(tmp_path, keyid):
    kek = tmp_path / "kek"
    request = keyprovider.wrap_request(b"opts", {PROVIDER_NAME: [f"keypath={kek}::keyid={keyid}".encode()]})
    result = _run_cmd(request)
    assert result.returncode == 0, result.stderr
    assert packet.parse_packet(keyprovider.parse_wrap_response(result.stdout)).kid == "kbs:///default/key/1"


def test_unreadable_admin_key_is_a_message_not_a_traceback(tmp_path):
    result = _run_cmd(
        b"{}", "--kbs-url", "http://127.0.0.1:1", "--admin-key-file", str(tmp_path / "missing.pem")
    )
    assert result.returncode == 1
    assert b"cannot read the admin key or KBS certificate" in result.stderr
    assert b"Traceback" not in result.stderr
