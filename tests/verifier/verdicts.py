"""Shared pieces of the verdict property tests: flipping a byte, naming a verdict, what an SNP report
changed at one byte must be refused with (the SNP and Azure SNP vTPM tests both need it), what of a
TDX quote is signed, and why a changed compact JWS must be refused (EAR, admin and attestation tokens)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import settings
from hypothesis import strategies as st

from verifier.errors import VerificationError
from verifier.snp import report as rpt
from verifier.snp.report import Generation
from verifier.tdx.quote import parse_quote

VERDICTS = settings(max_examples=80, deadline=None)
ACCEPTED = "accepted"
MALFORMED = "malformed_evidence"
masks = st.integers(min_value=1, max_value=255)

SNP_SIGNATURE_END = rpt.OFF_SIGNATURE_S + rpt.SIGNATURE_COMPONENT_SIZE
# Milan's TCB_VERSION bytes that carry a security patch level (the rest are reserved).
MILAN_TCB_BYTES = (0, 1, 6, 7)


def flipped(data: bytes, offset: int, mask: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def verdict(call: Callable[[], object]) -> str:
    """ "accepted", or the reason code `call` was refused with."""
    try:
        call()
    except VerificationError as exc:
        return exc.reason
    return ACCEPTED


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def snp_expected_reason(original: bytes, changed: bytes, offset: int, *, vlek: str = "chain_invalid") -> str:
    """What a Milan report signed by its VCEK, changed at `offset`, must be refused with: written from
    AMD's report layout and the verifier's documented check order (header, product, key binding,
    signature). `vlek`: the reason when the report now claims a VLEK signature (none is at hand)."""
    version = _u32(changed, rpt.OFF_VERSION)
    if not 2 <= version <= 5:
        return "unsupported_version"
    if _u32(changed, rpt.OFF_SIG_ALGO) != rpt.SIG_ALGO_ECDSA_P384_SHA384:
        return "unsupported_signature_algorithm"
    signing_key = _u32(changed, rpt.OFF_KEY_INFO) >> 2 & 7
    if signing_key != 0:
        return vlek if signing_key == 1 else "unsupported_signing_key"
    if version >= rpt.FIRST_VERSION_WITH_CPUID:
        generation = Generation.from_cpuid(changed[rpt.OFF_CPUID_FAM_ID], changed[rpt.OFF_CPUID_MOD_ID])
        if generation is None:
            return "unsupported_processor"
        if generation is not Generation.MILAN:
            return "chain_invalid"  # the test PKI holds Milan roots only
    tcb = [rpt.OFF_REPORTED_TCB + index for index in MILAN_TCB_BYTES]
    if any(changed[i] != original[i] for i in tcb):
        return "tcb_mismatch"
    chip_id = slice(rpt.OFF_CHIP_ID, rpt.OFF_CHIP_ID + 64)
    if changed[chip_id] != original[chip_id]:
        return "chip_id_mismatch"
    if offset < SNP_SIGNATURE_END:
        return "bad_signature"
    return ACCEPTED  # the reserved tail of the signature field is not signed


# ---- compact JWS (attestation and admin tokens)

FORMAT, KEY, ALG, SIGNATURE = "format", "key", "alg", "signature"
# What the KBS's refusal says for each (`TokenError`, `AdminDenied` and their HTTP details).
JWS_MESSAGES = {
    FORMAT: r"not a JWT|token (header|payload|signature)",
    KEY: r"jwk",
    ALG: r"token alg",
    SIGNATURE: r"token signature does not verify",
}


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate member")
    return dict(pairs)


def _reject(name: str) -> Any:
    raise ValueError(name)


def _finite(text: str) -> float:
    """A number that fits a double (a changed digit can turn `exp` into `17e64567890`)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("overflow")
    return value


def _canonical(part: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url part (RFC 7515), or None."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", part):
        return None
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == part else None


def _decoded_object(part: str) -> dict[str, Any] | None:
    """The JSON object a part holds (UTF-8, strict JSON), or None."""
    raw = _canonical(part)
    try:
        value = json.loads(
            (raw or b"").decode("utf-8"),
            object_pairs_hook=_unique,
            parse_constant=_reject,
            parse_float=_finite,
        )
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _key_members(header: dict[str, Any] | None) -> object:
    """What makes a header jwk's key (a key is trusted, not the JWK's other members)."""
    jwk = (header or {}).get("jwk")
    return [jwk.get(name) for name in ("kty", "crv", "x", "y")] if isinstance(jwk, dict) else jwk


def jws_refusal(original: str, changed: str) -> tuple[str, str]:
    """Why a changed compact JWS must be refused: (by the signature check under the signer's key, by
    a check that takes the key from the header jwk). A part that is not canonical base64url of a JSON
    object is a format error; a header naming another key or algorithm is refused for that; any other
    change -- a signed byte of header or payload, a byte of the signature -- fails the signature."""
    parts = changed.split(".")
    if len(parts) != 3:
        return FORMAT, FORMAT
    header, payload, signature = _decoded_object(parts[0]), _decoded_object(parts[1]), _canonical(parts[2])
    if header is None or payload is None or signature is None:
        return FORMAT, FORMAT
    original_header = _decoded_object(original.split(".")[0])
    assert original_header is not None
    at_stage = ALG if header.get("alg") != original_header["alg"] else SIGNATURE
    return at_stage, KEY if _key_members(header) != _key_members(original_header) else at_stage


def jws_claims(token: str) -> dict[str, Any] | None:
    """The payload object of a compact JWS, read strictly, or None."""
    parts = token.split(".")
    return _decoded_object(parts[1]) if len(parts) == 3 else None


def tdx_signed_parts(quote: bytes, root: x509.Certificate) -> tuple[bytes, ...]:
    """What a TDX quote's attestation key, PCK and PCK chain vouch for (the chain as its certificates
    below the trusted `root`, whose copy in the chain is optional)."""
    parsed = parse_quote(quote)
    certificates = x509.load_pem_x509_certificates(parsed.pck_chain_pem)
    chain = tuple(c.public_bytes(Encoding.DER) for c in certificates if c != root)
    return (
        parsed.signed_data,
        parsed.signature,
        parsed.attestation_key,
        parsed.qe_report.raw,
        parsed.qe_report_signature,
        parsed.qe_auth_data,
        *chain,
    )
