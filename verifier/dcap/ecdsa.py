"""ECDSA P-256/SHA-256 with Intel's raw encodings: keys as x||y (64 bytes), signatures as r||s."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.errors import EvidenceFormatError

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def p256_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The public key for a raw x||y point; a point off the curve is malformed evidence."""
    if len(raw) != 64:
        raise EvidenceFormatError(f"P-256 public key must be 64 bytes, got {len(raw)}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as exc:
        raise EvidenceFormatError(f"not a P-256 public key: {exc}") from None


def verify_p256(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` (raw r||s, 64 bytes) is `key`'s ECDSA-SHA256 signature over `data`."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True
