"""Verdict properties of the KBS's signed and bound messages, over real HTTP: the genuine message is
accepted, and a change to any byte is refused with the error variant and reason of what it broke --
an attestation token presented as a Bearer token (TokenVerifierError: format, key, alg or signature),
an admin token (AdminAuthAccess, same reasons), and the runtime data an `/attest` binds to its
evidence (AttestationError: the nonce, the key or the evidence's report data no longer agree).
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import kbs
from protocols.kbs_client.teekey import TeeKeyPair
from tests.kbs.support import AFFIRMING_POLICY, SAMPLE_TRUSTING_POLICY, b64url, error_variant, sample_evidence
from tests.kbs.test_fuzz import Server, server  # noqa: F401 (the running-KBS fixture)
from tests.verifier.verdicts import JWS_MESSAGES, SIGNATURE, jws_claims, jws_refusal

VERDICTS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
RESOURCE = "default/key/verdicts"
SECRET = b"verdict secret"
# printable characters a changed token byte can become (a header value cannot hold the others)
PRINTABLE = string.ascii_letters + string.digits + string.punctuation


def _post(running: Server, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    status, data, _ = running.request("POST", f"/kbs/v0/{endpoint}", body, headers)
    return status, data


class Attester:
    """A sample-TEE guest over the blocking client: one session per `auth`."""

    def __init__(self, running: Server) -> None:
        self.server = running
        self.key = TeeKeyPair.generate()
        self.cookie = ""
        self.challenge = kbs.Challenge("")
        self.token = ""

    def auth(self) -> None:
        request = kbs.Request("sample", kbs.PROTOCOL_VERSION, {"supported-hash-algorithms": ["sha384"]})
        status, body, response = self.server.request("POST", "/kbs/v0/auth", request.to_json())
        assert status == 200, body
        self.cookie = response.headers["Set-Cookie"].split(";")[0]
        self.challenge = kbs.parse_challenge(body)

    def attestation(self) -> dict[str, Any]:
        claims = kbs.runtime_data_claims(self.challenge.nonce, self.key.public_key, "")
        digest = kbs.runtime_data_digest(claims, self.challenge.hash_algorithm())
        attestation = kbs.Attestation(
            runtime_data=kbs.RuntimeData(self.challenge.nonce, self.key.public_key),
            tee_evidence=kbs.CompositeEvidence(sample_evidence(digest), ""),
        )
        return dict(json.loads(attestation.to_json()))

    def attest(self, doc: dict[str, Any]) -> tuple[int, Any]:
        status, body = _post(self.server, "attest", json.dumps(doc).encode(), {"Cookie": self.cookie})
        return status, json.loads(body)


@pytest.fixture(scope="module")
def attester(server: Server) -> Attester:  # noqa: F811 (the fixture imported above)
    """The KBS with the test policies and a resource, and a guest holding a token for it."""
    admin = server.admin.headers()
    for endpoint, doc in (
        (
            "attestation-policy",
            {"type": "rego", "policy_id": "default_cpu", "policy": b64url(SAMPLE_TRUSTING_POLICY)},
        ),
        ("resource-policy", {"policy": b64url(AFFIRMING_POLICY)}),
    ):
        assert _post(server, endpoint, json.dumps(doc).encode(), admin)[0] == 200
    headers = {**admin, "Content-Type": "application/octet-stream"}
    assert _post(server, f"resource/{RESOURCE}", SECRET, headers)[0] == 200
    guest = Attester(server)
    guest.auth()
    status, doc = guest.attest(guest.attestation())
    assert status == 200, doc
    guest.token = doc["token"]
    return guest


def _changed_token(token: str, data: st.DataObject) -> str:
    """`token` with one byte (of a part drawn first, so the short header and signature get their
    share) replaced by another printable character."""
    parts = token.split(".")
    part = data.draw(st.sampled_from(range(3)))
    offset = sum(len(p) + 1 for p in parts[:part]) + data.draw(st.integers(0, len(parts[part]) - 1))
    new = data.draw(st.sampled_from(PRINTABLE).filter(lambda c: c != token[offset]))
    return token[:offset] + new + token[offset + 1 :]


def _refused(status: int, body: bytes, variant: str, reason: str) -> None:
    assert status == 401, body
    doc = json.loads(body)
    assert error_variant(doc) == variant
    assert re.search(reason, doc["detail"]), doc["detail"]


@VERDICTS
@given(st.data())
def test_any_changed_byte_of_an_attestation_token_is_refused(attester: Attester, data: st.DataObject) -> None:
    token = attester.token

    def get(bearer: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {bearer}"}
        status, body, _ = attester.server.request("GET", f"/kbs/v0/resource/{RESOURCE}", headers=headers)
        return status, body

    status, body = get(token)
    assert status == 200 and attester.key.decrypt_response(body) == SECRET
    changed = _changed_token(token, data)
    _refused(*get(changed), "TokenVerifierError", JWS_MESSAGES[jws_refusal(token, changed)[1]])


@VERDICTS
@given(st.data())
def test_any_changed_byte_of_an_admin_token_is_refused(attester: Attester, data: st.DataObject) -> None:
    running = attester.server
    token = running.admin.token()

    def get(bearer: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {bearer}"}
        status, body, _ = running.request("GET", "/kbs/v0/resource-policy", headers=headers)
        return status, body

    assert get(token)[0] == 200
    changed = _changed_token(token, data)
    # The admin key is configured (a header cannot name another one), and the unverified `iss` only
    # picks the identity provider whose key must have signed: another issuer is refused as such.
    reason = JWS_MESSAGES[jws_refusal(token, changed)[0]]
    claims = jws_claims(changed)
    if reason == JWS_MESSAGES[SIGNATURE] and claims is not None and claims.get("iss") != "test-admin":
        reason = "token issuer does not match"
    _refused(*get(changed), "AdminAuthAccess", reason)


def _flip_b64(value: str, data: st.DataObject, mask: int, decode: Callable[[str], bytes]) -> str:
    raw = bytearray(decode(value))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= mask
    return kbs.b64url_encode(bytes(raw)) if decode is _b64url else base64.b64encode(bytes(raw)).decode()


def _b64url(value: str) -> bytes:
    return kbs.b64url_decode(value, "value")


# What each bound field's change breaks, as the KBS words it.
BOUND_FIELDS = {
    "nonce": r"nonce in the handshake session is different",
    "tee-pubkey": r"tee-pubkey|deserialize Attestation|verify TEE evidence failed",
    "report_data": r"verify TEE evidence failed.*report_data",
}


@VERDICTS
@given(st.sampled_from(sorted(BOUND_FIELDS)), st.data(), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_the_bound_runtime_data_is_refused(
    attester: Attester, field: str, data: st.DataObject, mask: int
) -> None:
    attester.auth()
    genuine = attester.attestation()
    doc = json.loads(json.dumps(genuine))
    runtime, evidence = doc["runtime-data"], doc["tee-evidence"]["primary_evidence"]
    if field == "nonce":
        runtime["nonce"] = _flip_b64(runtime["nonce"], data, mask, base64.b64decode)
    elif field == "tee-pubkey":
        coordinate = data.draw(st.sampled_from(["x", "y"]))
        runtime["tee-pubkey"][coordinate] = _flip_b64(runtime["tee-pubkey"][coordinate], data, mask, _b64url)
    else:
        evidence["report_data"] = _flip_b64(evidence["report_data"], data, mask, base64.b64decode)
    status, body = attester.attest(doc)
    _refused(status, json.dumps(body).encode(), "AttestationError", BOUND_FIELDS[field])
    status, body = attester.attest(genuine)  # the same session still attests with the genuine message
    assert status == 200, body
