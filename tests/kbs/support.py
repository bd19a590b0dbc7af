"""Test support for the KBS: a running server on 127.0.0.1, a minimal guest, admin tokens, policies.

The guest here is deliberately small and independent of the project's kbs-client: it speaks RCAR
with aiohttp, builds sample (or injected) evidence bound the way the protocol says, and decrypts
resources with an independent JOSE library.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from kbs.app import DEFAULT_BODY_TIMEOUT
from kbs.broker import Broker
from kbs.config import build_broker, parse_config
from kbs.httpserver import DEFAULT_IDLE_TIMEOUT, make_runner
from kbs.storage.factory import LOCAL_FS
from protocols import kbs
from tests.kbs.storage_backends import storage_section

API = "/kbs/v0"

# Attestation policy for tests: trusts sample evidence (the shipped default never does).
SAMPLE_TRUSTING_POLICY = """package policy
import rego.v1
default executables := 33
default hardware := 97
default configuration := 36
executables := 3 if input.sample.launch_digest == "abcde"
hardware := 2 if input.sample.svn == "1"
configuration := 2 if input.sample.debug == false
trust_claims := {"executables": executables, "hardware": hardware, "configuration": configuration}
"""

# Resource policy for tests: any affirming appraisal, sample included.
AFFIRMING_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data.plugin == "resource"
    input.submods.cpu0["ear.status"] == "affirming"
}
"""


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def config_text(
    storage: Path, admin_public_key: Path, extra: str = "", sockets: str = "127.0.0.1:0", backend: str = ""
) -> str:
    """A test KBS's configuration: `backend` is its `[storage_backend]` section (LocalFs in `storage`
    when empty)."""
    return f"""
[http_server]
sockets = ["{sockets}"]
insecure_http = true

[attestation_service]
type = "coco_as_builtin"
timeout = 5

{backend or storage_section(LOCAL_FS, storage)}

[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{{ issuer = "test-admin", public_key_uri = "{admin_public_key}" }}]
[admin.authorization.regex_acl]
acls = [{{ role = "admin", allowed_endpoints = "^/kbs/v0/.+$" }}]
{extra}
"""


@dataclass
class AdminKey:
    key: ed25519.Ed25519PrivateKey
    path: Path

    @classmethod
    def create(cls, directory: Path) -> AdminKey:
        key = ed25519.Ed25519PrivateKey.generate()
        path = directory / "admin-public.pem"
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(key, path)

    def token(
        self, *, role: str = "admin", issuer: str = "test-admin", lifetime: int = 600, **extra: Any
    ) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "role": role, "iat": now, "exp": now + lifetime, **extra}
        return sign_eddsa(self.key, claims)

    def headers(self, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def sign_eddsa(
    key: ed25519.Ed25519PrivateKey, claims: dict[str, Any], header: dict[str, Any] | None = None
) -> str:
    head = kbs.b64url_encode(json.dumps(header or {"alg": "EdDSA", "typ": "JWT"}).encode())
    body = kbs.b64url_encode(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{kbs.b64url_encode(signature)}"


@dataclass
class RunningKbs:
    url: str
    broker: Broker
    admin: AdminKey
    runner: Any = field(repr=False)

    async def set_policies(self, http: aiohttp.ClientSession) -> None:
        """The sample-trusting attestation policy and the affirming resource policy."""
        await admin_post(
            http,
            self,
            "attestation-policy",
            {"type": "rego", "policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)},
        )
        await admin_post(http, self, "resource-policy", {"policy": b64url(AFFIRMING_POLICY)})

    async def put_resource(self, http: aiohttp.ClientSession, path: str, data: bytes) -> None:
        async with http.post(
            f"{self.url}{API}/resource/{path}",
            data=data,
            headers={**self.admin.headers(), "Content-Type": "application/octet-stream"},
        ) as response:
            assert response.status == 200, await response.text()


async def admin_post(http: aiohttp.ClientSession, server: RunningKbs, endpoint: str, doc: Any) -> None:
    async with http.post(
        f"{server.url}{API}/{endpoint}", json=doc, headers=server.admin.headers()
    ) as response:
        assert response.status == 200, await response.text()


async def start_kbs(
    tmp_path: Path,
    extra: str = "",
    configure: Callable[[Broker], None] | None = None,
    *,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    backend: str = "",
) -> RunningKbs:
    """A KBS on 127.0.0.1; `backend` as for `config_text` (see the `backend` fixture)."""
    from aiohttp import web

    admin = AdminKey.create(tmp_path)
    config = parse_config(config_text(tmp_path / "storage", admin.path, extra, backend=backend))
    broker = build_broker(config)
    if configure is not None:
        configure(broker)
    runner = make_runner(broker, idle_timeout=idle_timeout, body_timeout=body_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return RunningKbs(f"http://{host}:{port}", broker, admin, runner)


# ---- the guest


def new_tee_key(kind: str = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def sample_evidence(report_data: bytes, svn: str = "1") -> dict[str, Any]:
    return {"svn": svn, "report_data": base64.b64encode(report_data).decode()}


Evidence = Callable[[bytes], Any]  # expected report data (the binding digest) -> primary evidence


@dataclass
class Guest:
    """One guest's RCAR against `url` (its own cookie jar, like one attestation agent)."""

    url: str
    tee: str = "sample"
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(default_factory=new_tee_key)
    evidence: Evidence = field(default=sample_evidence)
    http: aiohttp.ClientSession | None = None
    challenge: kbs.Challenge | None = None
    token: str | None = None

    async def __aenter__(self) -> Guest:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()

    @property
    def nonce(self) -> str:
        assert self.challenge is not None
        return self.challenge.nonce

    def token_claims(self) -> dict[str, Any]:
        assert self.token is not None
        payload = self.token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))

    @property
    def tee_pubkey(self) -> kbs.TeePubKey:
        return kbs.tee_pubkey_of(self.key.public_key())

    async def auth(self, version: str = kbs.PROTOCOL_VERSION) -> tuple[int, Any]:
        assert self.http is not None
        request = kbs.Request(self.tee, version, {"supported-hash-algorithms": ["sha384"]})
        async with self.http.post(f"{self.url}{API}/auth", data=request.to_json()) as response:
            body = await response.read()
            if response.status == 200:
                self.challenge = kbs.parse_challenge(body)
            return response.status, json.loads(body)

    def attestation(self, nonce: str | None = None) -> kbs.Attestation:
        assert self.challenge is not None
        nonce = self.challenge.nonce if nonce is None else nonce
        claims = kbs.runtime_data_claims(nonce, self.tee_pubkey, "")
        digest = kbs.runtime_data_digest(claims, self.challenge.hash_algorithm())
        return kbs.Attestation(
            runtime_data=kbs.RuntimeData(nonce, self.tee_pubkey),
            tee_evidence=kbs.CompositeEvidence(self.evidence(digest), ""),
        )

    async def attest(self, attestation: kbs.Attestation | bytes | None = None) -> tuple[int, Any]:
        assert self.http is not None
        body = (
            attestation if isinstance(attestation, bytes) else (attestation or self.attestation()).to_json()
        )
        async with self.http.post(f"{self.url}{API}/attest", data=body) as response:
            doc = json.loads(await response.read())
            if response.status == 200:
                self.token = doc["token"]
            return response.status, doc

    async def resource(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.url}{API}/resource/{path}", headers=headers) as response:
            return response.status, json.loads(await response.read())

    async def handshake(self) -> None:
        status, doc = await self.auth()
        assert status == 200, doc
        status, doc = await self.attest()
        assert status == 200, doc

    def decrypt_jwcrypto(self, jwe_doc: Any) -> bytes:
        token = jwcrypto_jwe.JWE()
        token.deserialize(json.dumps(jwe_doc), key=jwcrypto_jwk.JWK.from_pyca(self.key))
        return bytes(token.payload)

    def decrypt_joserfc(self, jwe_doc: Any) -> bytes:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key = RSAKey.import_key(pem) if isinstance(self.key, rsa.RSAPrivateKey) else ECKey.import_key(pem)
        algorithms = [
            "RSA-OAEP-256" if isinstance(self.key, rsa.RSAPrivateKey) else "ECDH-ES+A256KW",
            "A256GCM",
        ]
        result = joserfc_jwe.decrypt_json(jwe_doc, key, algorithms=algorithms)
        assert result.plaintext is not None
        return result.plaintext


def error_variant(doc: Any) -> str:
    """The variant of an ErrorInformation body, checking its shape."""
    assert set(doc) == {"type", "detail"}, doc
    assert doc["type"].startswith(kbs.ERROR_TYPE_PREFIX), doc
    return str(doc["type"][len(kbs.ERROR_TYPE_PREFIX) :])
