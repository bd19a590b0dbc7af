"""Verdict properties of EAR attestation tokens: a token the attestation service signed is accepted by
the KBS's token check, and a change to any byte of its compact form is refused for the right reason:
a part that no longer decodes to canonical base64url / a JSON object is a format error (the JWS
parser's `KbsProtocolError`), a header naming another key or algorithm is refused for that, and any
other change -- a signed byte of header or payload, or a byte of the signature -- fails the signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from kbs.jwt import MAX_TOKEN_CHARS, JwtError, public_key_from_jwk, verify_signature
from kbs.token import TokenError, TokenVerifier
from protocols import kbs
from protocols.jws import parse_jws
from protocols.kbs import KbsProtocolError
from tests.verifier.verdicts import ACCEPTED, VERDICTS
from verifier.ear import EarSigner, TokenSettings, appraisal, ear_claims

FORMAT, KEY, ALG, SIGNATURE = "format", "key", "alg", "signature"
NOW = int(time.time())
SIGNER = EarSigner.ephemeral()
KEY_OF_SIGNER = public_key_from_jwk(SIGNER.jwk)
VERIFIER = TokenVerifier(own_keys=[KEY_OF_SIGNER], clock=lambda: NOW + 1)


def _token() -> str:
    tee_key = kbs.tee_pubkey_of(ec.generate_private_key(ec.SECP256R1()).public_key())
    runtime = kbs.runtime_data_claims("nonce", tee_key, "")
    annotated = {
        "snp": {"measurement": "00" * 48},
        "report_data": kbs.report_data(kbs.runtime_data_digest(runtime)).hex(),
        "runtime_data_claims": runtime,
    }
    submod = appraisal({"hardware": 2, "executables": 3}, "default_cpu", annotated, {})
    return SIGNER.sign(ear_claims({"cpu0": submod}, TokenSettings(), NOW))


TOKEN = _token()
PARTS = TOKEN.split(".")


def stage_verdict(token: str) -> str:
    """Which step refuses `token`: the JWS parser (format) or the signature check under the signer's key."""
    try:
        jws = parse_jws(token, MAX_TOKEN_CHARS)
    except KbsProtocolError:
        return FORMAT
    try:
        verify_signature(jws, KEY_OF_SIGNER)
    except JwtError as exc:
        return SIGNATURE if "signature does not verify" in str(exc) else ALG
    return ACCEPTED


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate member")
    return dict(pairs)


def _reject(name: str) -> Any:
    raise ValueError(name)


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
        value = json.loads((raw or b"").decode("utf-8"), object_pairs_hook=_unique, parse_constant=_reject)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


ORIGINAL_HEADER = _decoded_object(PARTS[0])


def expected(token: str) -> tuple[str, str]:
    """(refusal at the signature stage, refusal by the KBS's token check) for a changed token."""
    parts = token.split(".")
    if len(parts) != 3:
        return FORMAT, FORMAT
    header, payload, signature = _decoded_object(parts[0]), _decoded_object(parts[1]), _canonical(parts[2])
    if header is None or payload is None or signature is None:
        return FORMAT, FORMAT
    at_stage = ALG if header.get("alg") != "ES256" else SIGNATURE
    return at_stage, KEY if _key_members(header) != _key_members(ORIGINAL_HEADER) else at_stage


def _key_members(header: dict[str, Any] | None) -> object:
    """What makes the header jwk's key (the KBS trusts a key, not the JWK's other members)."""
    jwk = (header or {}).get("jwk")
    return [jwk.get(name) for name in ("kty", "crv", "x", "y")] if isinstance(jwk, dict) else jwk


KBS_MESSAGES = {
    FORMAT: r"not a JWT|token (header|payload|signature)",
    KEY: r"jwk",
    ALG: r"token alg",
    SIGNATURE: r"token signature does not verify",
}


@VERDICTS
@given(st.sampled_from([0, 1, 2]), st.data(), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_a_token_is_refused_for_the_right_reason(
    part: int, data: st.DataObject, mask: int
) -> None:
    assert stage_verdict(TOKEN) == ACCEPTED
    assert VERIFIER.verify(TOKEN).claims["submods"]["cpu0"]["ear.status"] == "affirming"
    start = sum(len(p) + 1 for p in PARTS[:part])
    offset = start + data.draw(st.integers(min_value=0, max_value=len(PARTS[part]) - 1))
    raw = bytearray(TOKEN.encode("ascii"))
    raw[offset] ^= mask
    token = raw.decode("latin-1")
    at_stage, at_kbs = expected(token)
    assert stage_verdict(token) == at_stage
    with pytest.raises(TokenError, match=KBS_MESSAGES[at_kbs]):
        VERIFIER.verify(token)
