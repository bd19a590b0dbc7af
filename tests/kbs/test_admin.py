"""Admin API authorization over HTTP: JWT (EdDSA, ES256) with role claim and regex ACL; modes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kbs.admin import AdminAuth, AdminConfigError, AdminDenied, AuthorizationMode
from protocols import kbs
from tests.kbs.support import API, AdminKey, RunningKbs, b64url, error_variant, sign_eddsa, start_kbs

POLICY_BODY = {"policy": b64url("package policy\ndefault allow := false\n")}


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[RunningKbs]:
    running = await start_kbs(tmp_path, backend=backend)
    yield running
    await running.runner.cleanup()


async def post_policy(server: RunningKbs, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}{API}/resource-policy", json=POLICY_BODY, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None) if r.status != 200 else {}


def es256(key: ec.EllipticCurvePrivateKey, claims: dict[str, object]) -> str:
    head = kbs.b64url_encode(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    body = kbs.b64url_encode(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{kbs.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_valid_admin_token_is_accepted(server: RunningKbs) -> None:
    assert (await post_policy(server, server.admin.headers()))[0] == 200
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}{API}/resource-policy", headers=server.admin.headers()) as r,
    ):
        assert (r.status, await r.json()) == (200, ["resource-policy"])


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not bearer",
        "garbage",
        "other key",
        "expired",
        "no exp",
        "wrong role",
        "no role",
        "wrong issuer",
        "alg none",
        "alg swapped",
    ],
)
async def test_bad_admin_tokens_are_refused(server: RunningKbs, case: str) -> None:
    admin = server.admin
    now = int(time.time())
    claims = {"iss": "test-admin", "role": "admin", "iat": now, "exp": now + 600}
    tokens = {
        "not bearer": None,
        "garbage": "not.a.jwt",
        "other key": sign_eddsa(ed25519.Ed25519PrivateKey.generate(), claims),
        "expired": admin.token(lifetime=-10),
        "no exp": sign_eddsa(admin.key, {k: v for k, v in claims.items() if k != "exp"}),
        "wrong role": admin.token(role="reader"),
        "no role": sign_eddsa(admin.key, {k: v for k, v in claims.items() if k != "role"}),
        "wrong issuer": admin.token(issuer="someone-else"),
        "alg none": kbs.b64url_encode(b'{"alg":"none"}') + "." + admin.token().split(".")[1] + ".",
        "alg swapped": sign_eddsa(admin.key, claims, header={"alg": "ES256"}),
    }
    if case == "missing":
        headers: dict[str, str] = {}
    elif case == "not bearer":
        headers = {"Authorization": f"Basic {admin.token()}"}
    else:
        headers = {"Authorization": f"Bearer {tokens[case]}"}
    status, doc = await post_policy(server, headers)
    assert (status, error_variant(doc)) == (401, "AdminAuthAccess")
    assert doc["detail"].startswith("admin access denied for endpoint resource-policy")
    assert admin.token() not in doc["detail"]


def test_acl_restricts_endpoints(tmp_path: Path) -> None:
    admin = AdminKey.create(tmp_path)
    auth = AdminAuth.from_config(
        {
            "authentication": {
                "bearer_jwt": {
                    "identity_providers": [{"issuer": "test-admin", "public_key_uri": str(admin.path)}]
                }
            },
            "authorization": {
                "regex_acl": {
                    "acls": [{"role": "reader", "allowed_endpoints": "^/kbs/v0/reference-value/.+$"}]
                }
            },
        }
    )
    reader = f"Bearer {admin.token(role='reader')}"
    assert auth.check(reader, "/kbs/v0/reference-value/svn") == "reader"
    with pytest.raises(AdminDenied, match="Role reader not allowed for path /kbs/v0/resource-policy"):
        auth.check(reader, "/kbs/v0/resource-policy")
    for sneaky in ("/kbs/v0/reference-value/svn\n", "/kbs/v0/reference-value/\x00"):
        with pytest.raises(AdminDenied, match="control characters"):
            auth.check(reader, sneaky)


def test_es256_identity_provider(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "es256.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    auth = AdminAuth.from_config(
        {
            "authentication": {
                "bearer_jwt": {"identity_providers": [{"public_key_uri": f"file://{pem}", "audience": "KBS"}]}
            },
            "authorization": {"regex_acl": {"acls": [{"role": "admin", "allowed_endpoints": "^/kbs/.+$"}]}},
        }
    )
    now = int(time.time())
    good = es256(key, {"role": "admin", "aud": ["KBS"], "exp": now + 60})
    assert auth.check(f"Bearer {good}", "/kbs/v0/resource/a/b/c") == "admin"
    wrong_aud = es256(key, {"role": "admin", "aud": "other", "exp": now + 60})
    with pytest.raises(AdminDenied, match="audience"):
        auth.check(f"Bearer {wrong_aud}", "/kbs/v0/resource/a/b/c")


def test_modes(tmp_path: Path) -> None:
    assert AdminAuth.from_config(None).mode is AuthorizationMode.DENY_ALL  # never insecure by default
    with pytest.raises(AdminDenied, match="DenyAll"):
        AdminAuth.from_config({}).check("Bearer x", "/kbs/v0/resource-policy")
    insecure = AdminAuth.from_config({"authorization_mode": "InsecureAllowAll"})
    assert insecure.check(None, "/kbs/v0/resource-policy") == "insecure"
    with pytest.raises(AdminConfigError, match="providers"):
        AdminAuth.from_config({"authorization_mode": "AuthenticatedAuthorization"})
    with pytest.raises(AdminConfigError, match="anchored"):
        AdminAuth.from_config(
            {"authorization": {"regex_acl": {"acls": [{"role": "a", "allowed_endpoints": ".*"}]}}}
        )
    with pytest.raises(AdminConfigError, match="authorization_mode"):
        AdminAuth.from_config({"authorization_mode": "Yes"})


async def test_every_admin_endpoint_requires_admin(server: RunningKbs) -> None:
    calls = [
        ("POST", "attestation-policy", b"{}"),
        ("POST", "resource-policy", b"{}"),
        ("GET", "resource-policy", b""),
        ("POST", "reference-value", b"{}"),
        ("GET", "reference-value/svn", b""),
        ("POST", "resource/a/b/c", b"x"),
        ("DELETE", "resource/a/b/c", b""),
    ]
    async with aiohttp.ClientSession() as http:
        for method, path, body in calls:
            async with http.request(method, f"{server.url}{API}/{path}", data=body) as r:
                doc = await r.json(content_type=None)
                assert (r.status, error_variant(doc)) == (401, "AdminAuthAccess"), (method, path)


async def test_an_unstorable_reference_value_is_refused_and_the_replica_keeps_working(
    server: RunningKbs,
) -> None:
    def message(payload: bytes) -> dict[str, str]:
        return {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(payload).decode()}

    url, headers = f"{server.url}{API}/reference-value", server.admin.headers()
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=message(b'{"svn": "\\ud800"}'), headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "RvpsError")
        async with http.get(f"{url}/svn", headers=headers) as r:
            assert r.status == 401  # never stored, so never answered
        async with http.post(url, json=message(b'{"svn": ["1"]}'), headers=headers) as r:
            assert r.status == 200, await r.text()
        async with http.get(f"{url}/svn", headers=headers) as r:
            assert await r.json() == ["1"]
