"""EAR tokens: tiers and status, claims layout, ES256 checked by joserfc and jwcrypto, x5c, JWKS."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey as JoserfcECKey
from joserfc.jwk import KeySet, KeySetSerialization
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from verifier.ear import (
    DEFAULT_PROFILE,
    EarError,
    EarSigner,
    Tier,
    TokenSettings,
    appraisal,
    ear_claims,
    status,
    tier,
)

VECTOR = {"executables": 3, "hardware": 2, "configuration": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Tier.NONE),
        (1, Tier.NONE),
        (-1, Tier.NONE),
        (2, Tier.AFFIRMING),
        (-2, Tier.AFFIRMING),
        (31, Tier.AFFIRMING),
        (-32, Tier.AFFIRMING),
        (32, Tier.WARNING),
        (-33, Tier.WARNING),
        (95, Tier.WARNING),
        (-96, Tier.WARNING),
        (96, Tier.CONTRAINDICATED),
        (97, Tier.CONTRAINDICATED),
        (-97, Tier.CONTRAINDICATED),
        (127, Tier.CONTRAINDICATED),
        (-128, Tier.CONTRAINDICATED),
    ],
)
def test_tier_boundaries_follow_rust_ear(value: int, expected: Tier) -> None:
    assert tier(value) is expected


def test_status_is_the_worst_tier() -> None:
    assert status({"executables": 3, "hardware": 2, "configuration": 2}) == "affirming"
    assert status({"executables": 3, "hardware": 2, "configuration": 36}) == "warning"
    assert status({"executables": 33, "hardware": 97, "configuration": 36}) == "contraindicated"
    assert status(dict.fromkeys(("executables", "hardware"), 0)) == "none"


def test_appraisal_layout_and_validation() -> None:
    submod = appraisal(
        VECTOR, "default", {"sample": {"svn": "1"}}, {"ear.trustee.identifiers": {"validated": {}}}
    )
    assert submod == {
        "ear.status": "affirming",
        "ear.trustworthiness-vector": {"configuration": 2, "executables": 3, "hardware": 2},
        "ear.appraisal-policy-id": "default",
        "ear.veraison.annotated-evidence": {"sample": {"svn": "1"}},
        "ear.trustee.identifiers": {"validated": {}},
    }
    with pytest.raises(EarError, match="not an AR4SI trust claim"):
        appraisal({"hardwares": 2}, "default", {}, {})
    with pytest.raises(EarError, match=r"integer in -128\.\.127"):
        appraisal({"hardware": 128}, "default", {}, {})
    with pytest.raises(EarError, match=r"integer in -128\.\.127"):
        appraisal({"hardware": True}, "default", {}, {})
    with pytest.raises(EarError, match="at least one trust claim"):
        appraisal({}, "default", {}, {})
    with pytest.raises(EarError, match=r"may not replace appraisal fields: ear\.status"):
        appraisal(VECTOR, "default", {}, {"ear.status": "affirming"})


def token_for(signer: EarSigner, now: int = 1_760_000_000) -> str:
    submods = {"cpu0": appraisal(VECTOR, "default", {"sample": {}}, {})}
    return signer.sign(ear_claims(submods, TokenSettings(), now))


def test_claims_as_upstream() -> None:
    claims = ear_claims({"cpu0": appraisal(VECTOR, "default", {"sample": {}}, {})}, TokenSettings(), 1000)
    assert claims["eat_profile"] == DEFAULT_PROFILE == "tag:github.com,2024:confidential-containers/Trustee"
    assert claims["iat"] == 1000
    assert claims["exp"] == 1000 + 5 * 60
    assert claims["iss"] == "CoCo-Attestation-Service"
    assert claims["ear.verifier-id"] == {
        "developer": "https://confidentialcontainers.org",
        "build": "attestation-service 0.1.0",
    }
    assert list(claims["submods"]) == ["cpu0"]
    with pytest.raises(EarError, match="at least one submod"):
        ear_claims({}, TokenSettings(), 1000)


def test_ephemeral_token_verifies_with_joserfc_using_the_header_jwk() -> None:
    signer = EarSigner.ephemeral()
    token = token_for(signer, now=int(datetime.datetime.now(datetime.UTC).timestamp()))
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == "JWT" and header["alg"] == "ES256"
    assert header["jwk"] == signer.jwk
    assert set(header["jwk"]) == {"kty", "crv", "alg", "x", "y"}
    decoded = joserfc_jwt.decode(token, JoserfcECKey.import_key(header["jwk"]), algorithms=["ES256"])
    joserfc_jwt.JWTClaimsRegistry(exp={"essential": True}, iat={"essential": True}).validate(decoded.claims)
    assert decoded.claims["submods"]["cpu0"]["ear.status"] == "affirming"


def test_token_verifies_with_jwcrypto_from_jwks() -> None:
    signer = EarSigner.ephemeral()
    token = token_for(signer, now=int(datetime.datetime.now(datetime.UTC).timestamp()))
    keyset = jwcrypto_jwk.JWKSet.from_json(json.dumps(signer.jwks()))
    (key,) = keyset["keys"]
    verified = jwcrypto_jwt.JWT(jwt=token, key=key, algs=["ES256"])
    assert json.loads(verified.claims)["iss"] == "CoCo-Attestation-Service"


def test_tampered_token_fails_independent_verification() -> None:
    signer = EarSigner.ephemeral()
    head, body, signature = token_for(signer).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["submods"]["cpu0"]["ear.status"] = "affirming"
    claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["hardware"] = 2
    claims["iat"] += 1
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Exception, match=r"(?i)signature"):
        joserfc_jwt.decode(
            f"{head}.{forged_body}.{signature}",
            KeySet.import_key_set(cast(KeySetSerialization, signer.jwks())),
        )


def make_chain(tmp_path: Path, leaf_key: ec.EllipticCurvePrivateKey) -> tuple[Path, list[x509.Certificate]]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attestation service")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA384())
    )
    path = tmp_path / "chain.pem"
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca)))
    return path, [leaf, ca]


def write_key(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def test_configured_key_and_x5c_chain(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain_path, chain = make_chain(tmp_path, key)
    signer = EarSigner.from_files(write_key(tmp_path, key), chain_path, "https://as.example/certs")
    jwk = signer.jwk
    assert jwk["x5u"] == "https://as.example/certs"
    assert [base64.b64decode(der) for der in jwk["x5c"]] == [
        c.public_bytes(serialization.Encoding.DER) for c in chain
    ]
    # The x5c leaf's key verifies the token (what a KBS with trusted_certs_paths does).
    token = token_for(signer, now=int(datetime.datetime.now(datetime.UTC).timestamp()))
    leaf = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    pem = leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_from_cert = jwcrypto_jwk.JWK.from_pem(pem)
    assert json.loads(jwcrypto_jwt.JWT(jwt=token, key=key_from_cert, algs=["ES256"]).claims)["submods"]
    assert signer.jwks() == {"keys": [jwk]}


def test_chain_that_does_not_hold_the_key_is_rejected(tmp_path: Path) -> None:
    chain_path, _ = make_chain(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(EarError, match="does not hold the signing key"):
        EarSigner.from_files(write_key(tmp_path, ec.generate_private_key(ec.SECP256R1())), chain_path)


def test_signing_key_must_be_p256(tmp_path: Path) -> None:
    with pytest.raises(EarError, match="must be P-256, not secp384r1"):
        EarSigner.from_files(write_key(tmp_path, ec.generate_private_key(ec.SECP384R1())))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(EarError, match="not an unencrypted PEM private key"):
        EarSigner.from_files(tmp_path / "junk.pem")
    with pytest.raises(EarError, match="cannot read token signing key"):
        EarSigner.from_files(tmp_path / "absent.pem")


def test_jwk_coordinates_are_fixed_length() -> None:
    for _ in range(20):  # some keys have leading zero bytes in x or y
        jwk = EarSigner.ephemeral().jwk
        assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
        assert len(base64.urlsafe_b64decode(jwk["y"] + "=")) == 32
