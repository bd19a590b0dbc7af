"""Compact JWS (JWT) parsing and signature checks, shared by attestation-token and admin-token checks.

Only asymmetric algorithms whose key type is fixed by the name are accepted (ES256, ES384, EdDSA with
Ed25519), and the key must be of that type: a token cannot pick `none`, an HMAC, or a curve the key
is not on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from protocols.jws import Jws, parse_jws
from protocols.kbs import KbsProtocolError, b64url_decode

# Tokens carry the init data claims: the largest init data a pod VM takes (256 KiB) must fit.
MAX_TOKEN_CHARS = 1024 * 1024
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# alg -> (curve name or "Ed25519", hash, coordinate bytes)
_ALGORITHMS: dict[str, tuple[str, hashes.HashAlgorithm | None, int]] = {
    "ES256": ("secp256r1", hashes.SHA256(), 32),
    "ES384": ("secp384r1", hashes.SHA384(), 48),
    "EdDSA": ("Ed25519", None, 0),
}
_JWK_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
}


class JwtError(ValueError):
    """The token is malformed, its signature does not verify, or its key cannot be used."""


def parse(token: str) -> Jws:
    """Split and decode a compact JWS whose payload is a JSON object (not yet verified)."""
    try:
        return parse_jws(token, MAX_TOKEN_CHARS)
    except KbsProtocolError as exc:
        raise JwtError(str(exc)) from None


def verify_signature(jws: Jws, key: PublicKey) -> None:
    """Check the signature with `key` under the header's `alg`, which must suit the key."""
    spec = _ALGORITHMS.get(jws.alg)
    if spec is None:
        raise JwtError(f"token alg {jws.alg[:20]!r} is not one of {', '.join(_ALGORITHMS)}")
    curve, digest, size = spec
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and curve == "Ed25519":
            key.verify(jws.signature, jws.signing_input)
            return
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve and digest is not None:
            if len(jws.signature) != 2 * size:
                raise JwtError(f"{jws.alg} signature must be {2 * size} bytes")
            r = int.from_bytes(jws.signature[:size], "big")
            s = int.from_bytes(jws.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(digest))
            return
    except InvalidSignature:
        raise JwtError("token signature does not verify") from None
    raise JwtError(f"token alg {jws.alg} does not match the verification key")


def check_times(claims: Mapping[str, Any], now: float, *, require_exp: bool = True) -> None:
    """`exp` (required unless told otherwise) must be in the future and `nbf`, when given, not ahead;
    both must be real dates (RFC 7519 NumericDate), so an absurd `exp` cannot make a token eternal."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is None:
        if require_exp:
            raise JwtError("token has no exp claim")
    elif not _is_numeric_date(exp):
        raise JwtError(f"token exp is not a NumericDate between 0 and {MAX_NUMERIC_DATE}")
    elif exp <= now:
        raise JwtError("token has expired")
    if nbf is not None and (not _is_numeric_date(nbf) or nbf > now):
        raise JwtError("token is not valid yet (nbf)")


def _is_numeric_date(value: Any) -> bool:
    """A number from 0 to year 9999 (NaN and infinities fail the range check)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_NUMERIC_DATE


def public_key_from_jwk(jwk: Any) -> PublicKey:
    """An EC (P-256/P-384) or OKP (Ed25519) public JWK as a key."""
    if not isinstance(jwk, dict):
        raise JwtError("jwk must be a JSON object")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "EC" and isinstance(crv, str) and crv in _JWK_CURVES:
            curve, size = _JWK_CURVES[crv]
            x, y = b64url_decode(str(jwk.get("x")), "jwk x"), b64url_decode(str(jwk.get("y")), "jwk y")
            if len(x) != size or len(y) != size:
                raise JwtError(f"jwk {crv} coordinates must be {size} bytes")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()
            )
            return numbers.public_key()
        if kty == "OKP" and crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(str(jwk.get("x")), "jwk x"))
    except KbsProtocolError as exc:
        raise JwtError(str(exc)) from None
    except ValueError:
        raise JwtError(f"jwk is not a valid {crv} public key") from None
    raise JwtError(f"jwk kty {str(kty)[:10]!r} / crv {str(crv)[:10]!r} is not supported")


def load_public_key_pem(pem: bytes, what: str) -> PublicKey:
    """A PEM public key (SubjectPublicKeyInfo): EC P-256/P-384 or Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise JwtError(f"{what} is not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in {"secp256r1", "secp384r1"}:
        return key
    raise JwtError(f"{what} must be an Ed25519, P-256 or P-384 public key")


def key_id(key: PublicKey) -> str:
    """A stable fingerprint of a public key (to compare keys and name them in logs)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def der_from_b64(text: Any, what: str) -> bytes:
    """Standard base64 (x5c entries)."""
    if not isinstance(text, str):
        raise JwtError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise JwtError(f"{what} is not standard base64") from None
