"""End to end over real HTTP on 127.0.0.1: RCAR with the sample TEE, resources as JWE, refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kbs.attestation import BuiltinAttestation
from kbs.broker import Broker
from kbs.sessions import SessionStore
from kbs.token import json_pointer
from protocols import kbs
from tests.kbs.support import (
    API,
    Guest,
    RunningKbs,
    admin_post,
    b64url,
    error_variant,
    new_tee_key,
    start_kbs,
)
from verifier.ear import EarSigner

SECRET = b"shhhhhhh"


def token_signer(broker: Broker) -> EarSigner:
    """The built-in attestation service's signing key."""
    assert isinstance(broker.attestation, BuiltinAttestation)
    return broker.attestation.service.signer


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[RunningKbs]:
    running = await start_kbs(tmp_path, backend=backend)
    async with aiohttp.ClientSession() as http:
        await running.set_policies(http)
        await running.put_resource(http, "default/test/secret", SECRET)
    yield running
    await running.runner.cleanup()


@pytest.mark.parametrize("kind", ["ec", "rsa"])
async def test_full_rcar_flow_and_independent_decryption(server: RunningKbs, kind: str) -> None:
    async with Guest(server.url, key=new_tee_key(kind)) as guest:
        status, challenge = await guest.auth()
        assert status == 200
        assert challenge["extra-params"] == ""
        assert len(base64.b64decode(challenge["nonce"], validate=True)) == 32
        cookies = {c.key: c for c in guest.http.cookie_jar}  # type: ignore[union-attr]
        assert len(cookies["kbs-session-id"].value) == 32
        assert cookies["kbs-session-id"]["expires"]
        status, doc = await guest.attest()
        assert status == 200 and set(doc) == {"token"}
        status, jwe_doc = await guest.resource("default/test/secret")
        assert status == 200, jwe_doc
        assert set(jwe_doc) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
        header = kbs.parse_jwe_response(json.dumps(jwe_doc)).header()
        assert header["enc"] == "A256GCM"
        assert header["alg"] == ("RSA-OAEP-256" if kind == "rsa" else "ECDH-ES+A256KW")
        assert guest.decrypt_jwcrypto(jwe_doc) == SECRET
        assert guest.decrypt_joserfc(jwe_doc) == SECRET
        # The token says what the hardware bound: the nonce and this guest's key.
        claims = guest.token_claims()
        runtime = json_pointer(claims, "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims")
        assert runtime == {
            "nonce": guest.nonce,
            "tee-pubkey": guest.tee_pubkey.to_json(),
            "additional-evidence": "",
        }
        # /attest again on the attested session answers with the same token, as upstream.
        status, again = await guest.attest()
        assert status == 200 and again["token"] == guest.token


async def test_bearer_token_path(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        await guest.handshake()
        token = guest.token
    async with Guest(server.url, key=guest.key) as passport:  # no session: token only
        status, doc = await passport.resource("default/test/secret", {"Authorization": f"Bearer {token}"})
        assert status == 200
        assert passport.decrypt_jwcrypto(doc) == SECRET
        status, doc = await passport.resource("default/test/secret")
        assert (status, error_variant(doc)) == (401, "TokenNotFound")


async def test_missing_resource_and_bad_path(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        await guest.handshake()
        status, doc = await guest.resource("default/test/nothing")
        assert (status, error_variant(doc)) == (401, "PluginInternalError")
        assert "not found" in doc["detail"]
        status, doc = await guest.resource("default/../secret")
        assert (status, error_variant(doc)) == (401, "PluginInternalError")


async def test_default_resource_policy_denies_sample(server: RunningKbs) -> None:
    async with aiohttp.ClientSession() as http:
        default = (Path(__file__).parents[2] / "kbs" / "default_resource_policy.rego").read_text()
        await admin_post(http, server, "resource-policy", {"policy": b64url(default)})
    async with Guest(server.url) as guest:
        await guest.handshake()  # attests (affirming, with the test attestation policy) ...
        claims = guest.token_claims()
        assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
        status, doc = await guest.resource("default/test/secret")  # ... and is refused for being sample
        assert (status, error_variant(doc)) == (401, "PolicyDeny")


async def test_shipped_attestation_policy_never_trusts_sample(tmp_path: Path, backend: str) -> None:
    running = await start_kbs(tmp_path, backend=backend)
    try:
        async with Guest(running.url) as guest:
            await guest.handshake()
            claims = guest.token_claims()
            assert claims["submods"]["cpu0"]["ear.status"] == "contraindicated"
            status, doc = await guest.resource("default/test/secret")
            assert (status, error_variant(doc)) == (401, "PolicyDeny")
    finally:
        await running.runner.cleanup()


async def test_tampered_evidence_is_refused(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        await guest.auth()
        attestation = guest.attestation()
        evidence = dict(attestation.tee_evidence.primary_evidence)
        raw = bytearray(base64.b64decode(evidence["report_data"]))
        raw[0] ^= 1
        evidence["report_data"] = base64.b64encode(bytes(raw)).decode()
        tampered = kbs.Attestation(attestation.runtime_data, kbs.CompositeEvidence(evidence, ""))
        status, doc = await guest.attest(tampered)
        assert (status, error_variant(doc)) == (401, "AttestationError")
        assert "report_data_mismatch" in doc["detail"]
        # The key in runtime data swapped for another: the evidence no longer matches it.
        other = kbs.tee_pubkey_of(new_tee_key().public_key())
        swapped = kbs.Attestation(
            kbs.RuntimeData(attestation.runtime_data.nonce, other), attestation.tee_evidence
        )
        status, doc = await guest.attest(swapped)
        assert "report_data_mismatch" in doc["detail"]
        status, doc = await guest.resource("default/test/secret")
        assert (status, error_variant(doc)) == (401, "TokenNotFound")


async def test_replayed_nonce_is_refused(server: RunningKbs) -> None:
    async with Guest(server.url) as first:
        await first.handshake()
        old = first.attestation()  # bound to the first session's nonce
    async with Guest(server.url, key=first.key) as replay:
        await replay.auth()
        status, doc = await replay.attest(old)
        assert (status, error_variant(doc)) == (401, "AttestationError")
        assert "nonce in the handshake session is different" in doc["detail"]
        # Claiming the old nonce in runtime data does not help either.
        status, doc = await replay.attest(replay.attestation(nonce=first.nonce))
        assert "nonce" in doc["detail"]


async def test_expired_session_is_refused(tmp_path: Path, backend: str) -> None:
    now = [time.time()]  # the client cookie jar keeps real time: the cookie itself stays

    def configure(broker: Broker) -> None:
        broker.sessions = SessionStore(broker.sessions.storage, timeout=300, clock=lambda: now[0])

    running = await start_kbs(tmp_path, configure=configure, backend=backend)
    try:
        async with Guest(running.url) as guest:
            await guest.auth()
            now[0] += 301
            status, doc = await guest.attest()
            assert (status, error_variant(doc)) == (401, "AttestationError")
            assert "session not found or expired" in doc["detail"]
            await guest.auth()
            status, _ = await guest.attest()
            assert status == 200
            now[0] += 301  # the attested session expires too: its cookie no longer reaches the token
            status, doc = await guest.resource("default/test/secret")
            assert (status, error_variant(doc)) == (401, "TokenNotFound")
    finally:
        await running.runner.cleanup()


async def test_token_bound_to_another_key_is_refused(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        await guest.handshake()
    claims = guest.token_claims()
    other = new_tee_key()
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    annotated["runtime_data_claims"]["tee-pubkey"] = kbs.tee_pubkey_of(other.public_key()).to_json()
    # Signed by the trusted attestation service key: only the binding check can catch it.
    forged = token_signer(server.broker).sign(claims)
    async with Guest(server.url, key=other) as thief:
        status, doc = await thief.resource("default/test/secret", {"Authorization": f"Bearer {forged}"})
        assert (status, error_variant(doc)) == (401, "TokenVerifierError")
        assert "not the key bound into the TEE report" in doc["detail"]


async def test_untrusted_or_expired_tokens_are_refused(server: RunningKbs) -> None:
    from verifier.ear import EarSigner

    async with Guest(server.url) as guest:
        await guest.handshake()
    claims = guest.token_claims()
    strange = EarSigner.ephemeral().sign(claims)  # a valid token from a key the KBS does not trust
    expired = token_signer(server.broker).sign({**claims, "exp": claims["iat"] - 1})
    for token, reason in [(strange, "not a trusted key"), (expired, "expired"), ("a.b.c", "")]:
        async with Guest(server.url) as other:
            status, doc = await other.resource("default/test/secret", {"Authorization": f"Bearer {token}"})
        assert (status, error_variant(doc)) == (401, "TokenVerifierError")
        assert reason in doc["detail"]


async def test_protocol_version_mismatch(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        status, doc = await guest.auth(version="0.3.0")
        assert (status, error_variant(doc)) == (401, "AttestationError")
        assert doc["detail"] == (
            "Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch:"
            " expect =0.4.0 while the request is 0.3.0"
        )


async def test_health_metrics_and_unknown_paths(server: RunningKbs) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        async with Guest(server.url) as guest:
            await guest.handshake()
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'kbs_attestation_successes_total{tee_type="sample"} 1.0' in text
        assert "kbs_auth_requests_total" in text and "kbs_http_request_duration_seconds_bucket" in text
        async with http.post(f"{server.url}/metrics") as response:
            assert response.status == 405
            error_variant(await response.json())
        async with http.get(f"{server.url}{API}/nosuchplugin/x") as response:
            assert (response.status, error_variant(await response.json())) == (404, "PluginNotFound")
        async with http.get(f"{server.url}/elsewhere") as response:
            assert (response.status, error_variant(await response.json())) == (404, "InvalidRequestPath")


async def test_admin_endpoints_do_what_they_say(server: RunningKbs) -> None:
    headers = server.admin.headers()
    base = f"{server.url}{API}"
    payload = base64.b64encode(json.dumps({"svn": ["1"], "major_version": 1}).encode()).decode()
    async with aiohttp.ClientSession() as http:
        message = {"version": "0.1.0", "type": "sample", "payload": payload}
        async with http.post(f"{base}/reference-value", json=message, headers=headers) as r:
            assert r.status == 200
        async with http.get(f"{base}/reference-value/svn", headers=headers) as r:
            assert (r.status, await r.json()) == (200, ["1"])
        async with http.get(f"{base}/reference-value/nothing", headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "RvpsError")
        bad_version = {**message, "version": "0.2.0"}
        async with http.post(f"{base}/reference-value", json=bad_version, headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "RvpsError")
        not_rego = {"policy_id": "default_cpu", "policy": b64url("package policy\nallow if {")}
        async with http.post(f"{base}/attestation-policy", json=not_rego, headers=headers) as r:
            doc = await r.json()
            assert (r.status, error_variant(doc)) == (401, "AttestationError")
            assert "does not compile" in doc["detail"]
        padded = {"policy_id": "default_cpu", "policy": base64.urlsafe_b64encode(b"package x\n").decode()}
        async with http.post(f"{base}/attestation-policy", json=padded, headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "AttestationError")
        async with http.post(f"{base}/resource-policy", json={"policy": b64url("package p\nallow if {")},
                             headers=headers) as r:  # fmt: skip
            assert (r.status, error_variant(await r.json())) == (401, "PolicyEngineError")
        async with http.post(f"{base}/resource-policy", json={"policy": 5}, headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "ParsePolicyError")
        async with http.delete(f"{base}/resource/default/test/secret", headers=headers) as r:
            assert r.status == 200
        async with http.delete(f"{base}/resource/default/test/secret", headers=headers) as r:
            assert (r.status, error_variant(await r.json())) == (401, "PluginInternalError")
    async with Guest(server.url) as guest:
        await guest.handshake()
        status, doc = await guest.resource("default/test/secret")
        assert (status, error_variant(doc)) == (401, "PluginInternalError")


INIT_DATA = """version = "0.1.0"
algorithm = "sha384"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
"""


async def test_init_data_is_bound_and_claimed(server: RunningKbs) -> None:
    async with Guest(server.url) as guest:
        await guest.auth()
        plain = guest.attestation()
        with_init = kbs.Attestation(plain.runtime_data, plain.tee_evidence, kbs.InitData("toml", INIT_DATA))
        status, _ = await guest.attest(with_init)
        assert status == 200
        annotated = guest.token_claims()["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
        assert annotated["init_data_claims"]["aa.toml"] == {
            "token_configs": {"kbs": {"url": "http://127.0.0.1:8080"}}
        }
        assert base64.b64decode(annotated["init_data"]) == hashlib.sha384(INIT_DATA.encode()).digest()
    async with Guest(server.url) as guest:
        await guest.auth()
        plain = guest.attestation()
        as_json = kbs.Attestation(plain.runtime_data, plain.tee_evidence, kbs.InitData("json", "{}"))
        status, doc = await guest.attest(as_json)
        assert (status, error_variant(doc)) == (401, "AttestationError")
        assert "init-data format 'json' is not 'toml'" in doc["detail"]
