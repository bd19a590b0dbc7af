"""The HCL variable data: a JSON document naming the vTPM's keys (JWKs) and the guest's user-data.

`{"keys": [{"kid": "HCLAkPub", "kty": "RSA", "n": b64url, "e": b64url, ...}, {"kid": "HCLEkPub", ...}],
"vm-configuration": {...}, "user-data": "<hex>"}`. The AK here is what signs the TPM quote; it is
trusted because the document's digest is in the hardware-signed report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from verifier.errors import EvidenceFormatError, VerificationError
from verifier.jsonutil import JsonError, strict_loads
from verifier.vtpm.encoding import b64url_bytes, hex_bytes

AK_KEY_ID = "HCLAkPub"
MIN_AK_BITS = 2048
MAX_AK_BITS = 8192  # bounds the cost of one verification


@dataclass(frozen=True, slots=True)
class VarData:
    document: dict[str, Any]

    def ak_public_key(self) -> rsa.RSAPublicKey:
        """The first key with kid "HCLAkPub" (as upstream), as an RSA public key."""
        keys = self.document.get("keys")
        if not isinstance(keys, list):
            raise VerificationError("ak_not_found", "HCL variable data has no 'keys' list")
        jwk = next((k for k in keys if isinstance(k, dict) and k.get("kid") == AK_KEY_ID), None)
        if jwk is None:
            raise VerificationError("ak_not_found", f"HCL variable data has no {AK_KEY_ID} key")
        return _rsa_key(jwk)

    def user_data(self) -> bytes:
        return hex_bytes(self.document.get("user-data"), "HCL variable data user-data")


def _rsa_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise EvidenceFormatError(f"{AK_KEY_ID} is not an RSA JWK (kty {str(jwk.get('kty'))[:10]!r})")
    n = int.from_bytes(b64url_bytes(jwk.get("n"), f"{AK_KEY_ID} n"), "big")
    e = int.from_bytes(b64url_bytes(jwk.get("e"), f"{AK_KEY_ID} e"), "big")
    if not MIN_AK_BITS <= n.bit_length() <= MAX_AK_BITS:
        raise EvidenceFormatError(
            f"{AK_KEY_ID} modulus has {n.bit_length()} bits, not {MIN_AK_BITS}..{MAX_AK_BITS}"
        )
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise EvidenceFormatError(f"{AK_KEY_ID} is not a usable RSA key: {exc}") from None


def parse_var_data(data: bytes) -> VarData:
    try:
        document = strict_loads(data)
    except JsonError as exc:
        raise EvidenceFormatError(f"HCL variable data is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EvidenceFormatError("HCL variable data is not a JSON object")
    return VarData(document)


def check_user_data(var_data: VarData, expected_report_data: bytes) -> None:
    """Evidence v2: the HCL user-data must start with the expected report data (as upstream)."""
    user_data = var_data.user_data()
    if user_data[: len(expected_report_data)] != expected_report_data:
        raise VerificationError(
            "user_data_mismatch",
            f"HCL user-data starts {user_data[: len(expected_report_data)].hex()}, "
            f"expected {expected_report_data.hex()}",
        )
