"""No key, token or secret in any log, at debug level: a whole pod life and a whole KBS flow.

The adaptor runs as a real process (`cloud-api-adaptor local -v`) with known registry credentials and
init data; the KBS and its built-in attestation service run with known admin key, resource and
tokens. Every secret is looked for in the captured logs raw and in the encodings a careless log line
would use (base64, base64url, hex), and so is any PEM private key at all.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shimdriver.driver import run_pod, shim_annotations
from tests.adaptor.conftest import LocalAdaptor
from tests.kbs.support import (
    AFFIRMING_POLICY,
    API,
    SAMPLE_TRUSTING_POLICY,
    Guest,
    b64url,
    new_tee_key,
    start_kbs,
)

MIN_SECRET = 8  # shorter fragments would match by chance


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes: pytest's tmp_path is too deep."""
    path = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def encodings(secret: bytes) -> dict[str, bytes]:
    """The secret as a log line might carry it, by encoding."""
    forms = {
        "raw": secret,
        "base64": base64.b64encode(secret),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
        "hex": secret.hex().encode(),
    }
    return {kind: form for kind, form in forms.items() if len(form) >= MIN_SECRET}


def pem_bodies(text: str) -> list[bytes]:
    """Each PEM private key in `text`, whole and as the DER it encodes."""
    found = []
    for block in text.split("-----BEGIN ")[1:]:
        if "PRIVATE KEY-----" not in block.split("\n", 1)[0]:
            continue
        body = block.split("\n", 1)[1].split("-----END", 1)[0]
        found += [("-----BEGIN " + block.split("-----END", 1)[0]).encode(), base64.b64decode(body)]
    return found


def assert_not_logged(log: bytes, secrets_: Iterable[bytes]) -> None:
    assert b"PRIVATE KEY" not in log
    for index, secret in enumerate(secrets_):
        for kind, form in encodings(secret).items():
            assert form not in log, f"secret #{index} appears in the log ({kind})"  # not the secret itself


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_a_pod_life_logs_no_secret(short_dir: Path) -> None:
    registry_password = "registry-password-" + secrets.token_hex(16)
    registry_auth = base64.b64encode(f"robot:{registry_password}".encode()).decode()
    auth_file = short_dir / "auth.json"
    auth_file.write_text(json.dumps({"auths": {"registry.example": {"auth": registry_auth}}}))
    initdata_secret = "initdata-secret-" + secrets.token_hex(16)
    initdata = f"""algorithm = "sha384"
version = "0.1.0"

[data]
"aa.toml" = '''
# {initdata_secret}
'''
"""
    adaptor = LocalAdaptor(short_dir)
    adaptor.args = (*adaptor.args, "-v", "--auth-json-file", str(auth_file))
    sandbox = secrets.token_hex(32)
    await adaptor.start()
    try:
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("web", "shop", cc_init_data=initdata))
        await adaptor.hypervisor.start_vm(sandbox)
        # The pod VM's own keys and logs, while it exists (StopVM deletes it).
        pod_vm_keys = [
            key
            for path in adaptor.vms.glob("*/root/run/peerpod/apf.json")
            for key in pem_bodies(json.loads(path.read_text())["tls-server-key"])
        ]
        consoles = b"".join(path.read_bytes() for path in adaptor.vms.glob("*/console.log"))
        result = await run_pod(adaptor.hypervisor, sandbox, ["true"], pod_name="web", namespace="shop")
    finally:
        await adaptor.stop()
    assert result.exit_status == 0
    assert pod_vm_keys, "the pod VM's TLS key travels in its user data"
    tunnel_keys = [
        key for path in (adaptor.state_dir / "tls").glob("*.key") for key in pem_bodies(path.read_text())
    ]
    assert len(tunnel_keys) == 4, "the tunnel CA's and the adaptor's client key, as PEM and DER"
    log = adaptor.log.read_bytes()
    assert sandbox.encode() in log, "the log was captured"
    known = [
        registry_password.encode(),
        registry_auth.encode(),
        initdata_secret.encode(),
        *tunnel_keys,
        *pod_vm_keys,
    ]
    assert_not_logged(log, known)
    assert consoles, "the pod VM's console was captured"
    assert_not_logged(consoles, known)


async def test_a_kbs_flow_logs_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resource = ("resource-value-" + secrets.token_hex(16)).encode()
    tee_key = new_tee_key("ec")
    assert isinstance(tee_key, ec.EllipticCurvePrivateKey)
    server = await start_kbs(tmp_path)
    admin_token = server.admin.token()
    admin = {"Authorization": f"Bearer {admin_token}"}
    try:
        async with aiohttp.ClientSession() as http:
            for endpoint, doc in [
                (
                    "attestation-policy",
                    {"type": "rego", "policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)},
                ),
                ("resource-policy", {"policy": b64url(AFFIRMING_POLICY)}),
            ]:
                async with http.post(f"{server.url}{API}/{endpoint}", json=doc, headers=admin) as response:
                    assert response.status == 200, await response.text()
            async with http.post(
                f"{server.url}{API}/resource/default/test/secret",
                data=resource,
                headers={**admin, "Content-Type": "application/octet-stream"},
            ) as response:
                assert response.status == 200, await response.text()
            async with http.post(
                f"{server.url}{API}/resource/default/test/other",
                data=b"x",
                headers={"Authorization": "Bearer " + admin_token[:-4] + "AAAA"},
            ) as response:
                assert response.status == 401
        async with Guest(server.url, key=tee_key) as guest:
            await guest.handshake()
            assert guest.http is not None and guest.token is not None
            cookie = next(c.value for c in guest.http.cookie_jar if c.key == "kbs-session-id")
            status, jwe_doc = await guest.resource("default/test/secret")
            assert status == 200 and guest.decrypt_jwcrypto(jwe_doc) == resource
            status, _ = await guest.resource(
                "default/test/secret", headers={"Authorization": f"Bearer {guest.token}"}
            )
            assert status == 200
            token = guest.token
    finally:
        await server.runner.cleanup()
    admin_private = server.admin.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    tee_private = tee_key.private_numbers().private_value.to_bytes(32, "big")
    log = "\n".join(f"{record.getMessage()}\n{record.exc_text or ''}" for record in caplog.records).encode()
    assert caplog.records, "the log was captured"
    assert_not_logged(
        log,
        [
            resource,
            admin_token.encode(),
            admin_token.rsplit(".", 1)[1].encode(),
            admin_private,
            token.encode(),
            token.rsplit(".", 1)[1].encode(),
            cookie.encode(),
            tee_private,
            private_pem(tee_key),
        ],
    )
