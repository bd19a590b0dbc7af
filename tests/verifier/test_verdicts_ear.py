"""Verdict properties of EAR attestation tokens: a token the attestation service signed is accepted by
the KBS's token check, and a change to any byte of its compact form is refused for the right reason:
a part that no longer decodes to canonical base64url / a JSON object is a format error (the JWS
parser's `KbsProtocolError`), a header naming another key or algorithm is refused for that, and any
other change -- a signed byte of header or payload, or a byte of the signature -- fails the signature.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from kbs.jwt import MAX_TOKEN_CHARS, JwtError, public_key_from_jwk, verify_signature
from kbs.token import TokenError, TokenVerifier
from protocols import kbs
from protocols.jws import parse_jws
from protocols.kbs import KbsProtocolError
from tests.verifier.verdicts import ACCEPTED, ALG, FORMAT, JWS_MESSAGES, SIGNATURE, VERDICTS, jws_refusal
from verifier.ear import EarSigner, TokenSettings, appraisal, ear_claims

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
    at_stage, at_kbs = jws_refusal(TOKEN, token)
    assert stage_verdict(token) == at_stage
    with pytest.raises(TokenError, match=JWS_MESSAGES[at_kbs]):
        VERIFIER.verify(token)
