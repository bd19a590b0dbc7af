"""The shared certificate helpers on their own: generic chains (ECDSA, PKCS#1), validity, DER values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.verifier import snp_builder as b
from verifier.errors import VerificationError
from verifier.x509util import (
    RSA_PSS_SHA384_SALT48,
    check_validity,
    der_octet_string,
    der_unsigned,
    extension_value,
    load_der_certificate,
    load_pem_certificates,
    read_tlv,
    verify_issued_by,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ec_cert(
    cn: str, issuer_cn: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def reason(call) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.reason


def test_declared_algorithm_chains_for_ecdsa() -> None:
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = ec_cert("Root", "Root", root_key, root_key)
    leaf = ec_cert("Leaf", "Root", leaf_key, root_key)
    verify_issued_by(leaf, root, "leaf")
    verify_issued_by(root, root, "root")
    assert reason(lambda: verify_issued_by(root, leaf, "root")) == "chain_invalid"  # names do not chain
    forged = ec_cert("Leaf", "Root", leaf_key, leaf_key)
    assert reason(lambda: verify_issued_by(forged, root, "leaf")) == "chain_invalid"
    # A fixed RSA-PSS profile refuses an EC issuer outright.
    assert (
        reason(lambda: verify_issued_by(leaf, root, "leaf", scheme=RSA_PSS_SHA384_SALT48)) == "chain_invalid"
    )


def test_fixed_pss_profile_is_enforced() -> None:
    pki = b.make_pki()
    _, pkcs1 = b.make_vek(pki, pss=False)
    cert = load_der_certificate(pkcs1, "VCEK")
    verify_issued_by(cert, pki.ask, "VCEK")  # fine by what it declares...
    assert (
        reason(lambda: verify_issued_by(cert, pki.ask, "VCEK", scheme=RSA_PSS_SHA384_SALT48))
        == "chain_invalid"
    )


def test_validity_window() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ec_cert("X", "X", key, key)
    check_validity(cert, NOW, "X")
    assert reason(lambda: check_validity(cert, NOW + timedelta(days=2), "X")) == "cert_expired"
    assert reason(lambda: check_validity(cert, NOW - timedelta(days=2), "X")) == "cert_expired"


def test_loading_and_extensions() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ec_cert("X", "X", key, key)
    pem = cert.public_bytes(Encoding.PEM)
    assert load_pem_certificates(pem * 2, "bundle") == [cert, cert]
    assert (
        reason(lambda: load_pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n", "bundle"))
        == "malformed_evidence"
    )
    assert reason(lambda: load_der_certificate(b"\x30\x03\x02\x01\x01", "X")) == "malformed_evidence"
    assert extension_value(cert, "1.2.3.4") is None


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x02\x01\x00", 0),
        (b"\x02\x01\x73", 115),
        (b"\x02\x02\x00\xa9", 169),
        (b"\x02\x81\x80" + b"\x01" * 128, int.from_bytes(b"\x01" * 128, "big")),
    ],
)
def test_der_unsigned(data: bytes, value: int) -> None:
    assert der_unsigned(data, "x") == value


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",
        b"\x02\x00",
        b"\x02\x01\x80",
        b"\x02\x02\x00\x01",
        b"\x04\x01\x01",
        b"\x02\x01\x01\x00",
        b"\x02\x81\x01\x01",
        b"\x02\x80",
    ],
)
def test_der_unsigned_rejects(data: bytes) -> None:
    assert reason(lambda: der_unsigned(data, "x")) == "malformed_evidence"


def test_der_octet_string_and_tlv() -> None:
    assert der_octet_string(b"\x04\x03abc", "x") == b"abc"
    assert read_tlv(b"\x30\x00\x04\x01z", 2) == (0x04, b"z", 5)
    assert reason(lambda: read_tlv(b"\x1f\x01\x00")) == "malformed_evidence"
