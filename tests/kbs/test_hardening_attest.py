"""The KBS request path against inputs that used to end in a 500, in a token the KBS itself later
refused, or in a credential that never expired (issue 12, items 2, 3 and 8). All over real HTTP."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from protocols import kbs
from tests.kbs.support import API, Guest, RunningKbs, error_variant, sample_evidence, start_kbs

SECRET = b"released only to a verified key"
P521 = 2**521 - 1
MARK = "@@MARK@@"


@pytest.fixture
def as_key() -> ec.EllipticCurvePrivateKey:
    """The signing key of an external attestation service the KBS trusts (`trusted_jwk_sets`)."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def server(
    tmp_path: Path, as_key: ec.EllipticCurvePrivateKey, backend: str
) -> AsyncIterator[RunningKbs]:
    point = kbs.tee_pubkey_of(as_key.public_key()).to_json()
    jwks = tmp_path / "jwks.json"
    jwk = {"kty": "EC", "crv": "P-256", "x": point["x"], "y": point["y"], "kid": "external-as"}
    jwks.write_text(json.dumps({"keys": [jwk]}))
    extra = f'[attestation_token]\ntrusted_jwk_sets = ["{jwks}"]\n'
    running = await start_kbs(tmp_path, extra, backend=backend)
    async with aiohttp.ClientSession() as http:
        await running.set_policies(http)
        await running.put_resource(http, "default/test/secret", SECRET)
    yield running
    await running.runner.cleanup()


def with_raw(doc: Any, raw: str) -> bytes:
    """`doc` as JSON text with the string MARK (wherever it sits) replaced by the raw JSON `raw`."""
    return json.dumps(doc).replace(json.dumps(MARK), raw).replace(MARK, raw).encode()


def set_primary(field: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["tee-evidence"]["primary_evidence"][field] = MARK

    return edit


def set_additional(doc: dict[str, Any]) -> None:
    doc["tee-evidence"]["additional_evidence"] = json.dumps({"sampledevice": {"x": MARK}})


def set_init_data(doc: dict[str, Any]) -> None:
    doc["init-data"] = {"format": "toml", "body": MARK}


def set_whole_evidence(doc: dict[str, Any]) -> None:
    doc["tee-evidence"]["primary_evidence"] = MARK


@pytest.mark.parametrize(
    ("edit", "raw"),
    [
        (set_whole_evidence, "[" * 300 + "]" * 300),
        (set_primary("deep"), "[" * 256 + "]" * 256),
        (set_primary("svn"), '"\\ud800"'),
        (set_primary("extra"), '"\\udfff tail"'),
        (set_additional, "\\\\ud800"),  # an escaped escape: the inner JSON holds \ud800
        (set_init_data, '"\\ud800"'),
        (set_primary("big"), str(2**64)),
        (set_primary("small"), str(-(2**63) - 1)),
        (set_primary("huge"), "1e999"),
        (set_primary("negative huge"), "-1e999"),
    ],
    ids=[
        "evidence-300-deep",
        "evidence-field-256-deep",
        "surrogate-primary",
        "low-surrogate-primary",
        "surrogate-additional",
        "surrogate-init-data",
        "int-2^64",
        "int-below-i64",
        "1e999",
        "-1e999",
    ],
)
async def test_unusable_json_in_attest_is_a_4xx(
    server: RunningKbs, edit: Callable[[dict[str, Any]], None], raw: str
) -> None:
    async with Guest(server.url) as guest:
        assert (await guest.auth())[0] == 200
        doc = json.loads(guest.attestation().to_json())
        edit(doc)
        status, answer = await guest.attest(with_raw(doc, raw))
        assert (status, error_variant(answer)) == (401, "AttestationError"), answer
        assert "not usable JSON" in answer["detail"]
        assert raw not in answer["detail"]


def bound_attestation(guest: Guest, tee_pubkey: kbs.TeePubKey) -> kbs.Attestation:
    """Sample evidence that binds `tee_pubkey` exactly as a guest holding it would."""
    claims = kbs.runtime_data_claims(guest.nonce, tee_pubkey, "")
    assert guest.challenge is not None
    digest = kbs.runtime_data_digest(claims, guest.challenge.hash_algorithm())
    return kbs.Attestation(
        kbs.RuntimeData(guest.nonce, tee_pubkey), kbs.CompositeEvidence(sample_evidence(digest), "")
    )


def rsa_jwk(n: int, e: int = 65537) -> kbs.RsaPublicJwk:
    size = (n.bit_length() + 7) // 8
    return kbs.RsaPublicJwk(
        kbs.ALG_RSA_OAEP_256,
        kbs.b64url_encode(n.to_bytes(size, "big")),
        kbs.b64url_encode(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    )


def real_modulus() -> int:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers().n


def p521_with_y_plus_p() -> kbs.EcPublicJwk:
    """A P-521 point with y written as y + p: the same point, in a 66-byte field that still fits it."""
    point = ec.generate_private_key(ec.SECP521R1()).public_key().public_numbers()
    return kbs.EcPublicJwk(
        "P-521",
        kbs.ALG_ECDH_ES_A256KW,
        kbs.b64url_encode(point.x.to_bytes(66, "big")),
        kbs.b64url_encode((point.y + P521).to_bytes(66, "big")),
    )


@pytest.mark.parametrize(
    ("make_key", "reason"),
    [
        (lambda: rsa_jwk(real_modulus() + 1), "even"),
        (lambda: rsa_jwk(secrets.randbits(16_400) | 1 | (1 << 16_399)), "bits"),
        (lambda: rsa_jwk(real_modulus(), 2**100 + 1), "exponent"),
        (p521_with_y_plus_p, "coordinate"),
    ],
    ids=["rsa-even-modulus", "rsa-16400-bits", "rsa-huge-exponent", "ec-non-canonical-coordinate"],
)
async def test_tee_keys_the_kbs_cannot_use_are_refused_at_attest(
    server: RunningKbs, make_key: Callable[[], kbs.TeePubKey], reason: str
) -> None:
    async with Guest(server.url) as guest:
        assert (await guest.auth())[0] == 200
        status, answer = await guest.attest(bound_attestation(guest, make_key()))
        assert (status, error_variant(answer)) == (401, "AttestationError"), answer
        assert "tee-pubkey" in answer["detail"] and reason in answer["detail"]
        status, answer = await guest.resource("default/test/secret")
        assert status == 401, answer  # no token, so nothing to release and no 500


async def test_no_token_is_issued_that_the_kbs_would_then_refuse(server: RunningKbs) -> None:
    """Init data large enough that its claims make the token longer than the KBS reads back."""
    entries = "\n".join(f'"f{i}" = "{"v" * 1000}"' for i in range(1100))
    body = f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n{entries}\n'
    async with Guest(server.url) as guest:
        assert (await guest.auth())[0] == 200
        plain = guest.attestation()
        attestation = kbs.Attestation(plain.runtime_data, plain.tee_evidence, kbs.InitData("toml", body))
        status, answer = await guest.attest(attestation)
        assert (status, error_variant(answer)) == (401, "AttestationError"), answer
        assert "token" in answer["detail"]


def sign_raw_eddsa(key: ed25519.Ed25519PrivateKey, payload: str) -> str:
    head = kbs.b64url_encode(b'{"alg":"EdDSA","typ":"JWT"}')
    body = kbs.b64url_encode(payload.encode())
    return f"{head}.{body}.{kbs.b64url_encode(key.sign(f'{head}.{body}'.encode()))}"


def sign_raw_es256(key: ec.EllipticCurvePrivateKey, payload: str) -> str:
    head = kbs.b64url_encode(b'{"alg":"ES256","typ":"JWT","kid":"external-as"}')
    body = kbs.b64url_encode(payload.encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{kbs.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize("exp", ["1e999", "1e300", "18446744073709551615", "-5"])
async def test_admin_token_expiry_must_be_a_real_date(server: RunningKbs, exp: str) -> None:
    now = int(time.time())
    payload = json.dumps({"iss": "test-admin", "role": "admin", "iat": now, "exp": MARK})
    token = sign_raw_eddsa(server.admin.key, payload.replace(json.dumps(MARK), exp))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}{API}/resource-policy", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        doc = await r.json()
    assert (r.status, error_variant(doc)) == (401, "AdminAuthAccess"), doc


@pytest.mark.parametrize("exp", ["1e999", "1e300"])
async def test_attestation_token_expiry_must_be_a_real_date(
    server: RunningKbs, as_key: ec.EllipticCurvePrivateKey, exp: str
) -> None:
    async with Guest(server.url) as guest:
        await guest.handshake()
    claims = guest.token_claims()
    claims["exp"] = MARK
    token = sign_raw_es256(as_key, json.dumps(claims).replace(json.dumps(MARK), exp))
    async with Guest(server.url, key=guest.key) as holder:
        status, doc = await holder.resource("default/test/secret", {"Authorization": f"Bearer {token}"})
    assert (status, error_variant(doc)) == (401, "TokenVerifierError"), doc


async def test_init_data_as_large_as_the_pod_vm_takes_still_gets_a_usable_token(server: RunningKbs) -> None:
    entries = "\n".join(f'"f{i}" = "{"v" * 1000}"' for i in range(256))  # 256 KiB: process-user-data's cap
    body = f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n{entries}\n'
    async with Guest(server.url) as guest:
        assert (await guest.auth())[0] == 200
        plain = guest.attestation()
        attestation = kbs.Attestation(plain.runtime_data, plain.tee_evidence, kbs.InitData("toml", body))
        assert (await guest.attest(attestation))[0] == 200
        status, doc = await guest.resource("default/test/secret")
        assert status == 200, doc
        assert guest.decrypt_jwcrypto(doc) == SECRET
    assert guest.token is not None and len(guest.token) > 256 * 1024
    async with Guest(server.url, key=guest.key) as holder:  # the same token as a bearer token
        status, doc = await holder.resource("default/test/secret", {"Authorization": f"Bearer {guest.token}"})
        assert status == 200, doc
