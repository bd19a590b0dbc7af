"""The sample verifier: upstream's evidence shape and claims, report_data equality, clean errors."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.errors import VerificationError
from verifier.sample import SampleVerifier

REPORT_DATA = b"\x11" * 48


def evidence(**fields: object) -> bytes:
    return json.dumps({"svn": "1", "report_data": base64.b64encode(REPORT_DATA).decode(), **fields}).encode()


def test_claims_are_upstreams() -> None:
    claims = SampleVerifier().evaluate(evidence(), REPORT_DATA)
    assert claims == {
        "svn": "1",
        "report_data": base64.b64encode(REPORT_DATA).decode(),
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }


def test_init_data_hash_is_passed_through_as_base64() -> None:
    claims = SampleVerifier().evaluate(evidence(), REPORT_DATA, b"\x22" * 32)
    assert claims["init_data"] == base64.b64encode(b"\x22" * 32).decode()


def test_report_data_must_match_exactly() -> None:
    with pytest.raises(VerificationError) as info:
        SampleVerifier().evaluate(evidence(), REPORT_DATA + b"\0")
    assert info.value.reason == "report_data_mismatch"


def test_missing_report_data_means_empty() -> None:
    assert SampleVerifier().evaluate(json.dumps({"svn": "7"}).encode(), b"")["report_data"] == ""


@pytest.mark.parametrize(
    "bad",
    [b"", b"[]", b'{"report_data": ""}', b'{"svn": 1}', b'{"svn": "1", "report_data": "***"}',
     b'{"svn": "1", "report_data": 5}', b"\xff\xfe", b"[" * 100_000, b"{" + b" " * 70_000 + b"}"],
)  # fmt: skip
def test_malformed_evidence(bad: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        SampleVerifier().evaluate(bad, REPORT_DATA)
    assert info.value.reason == "malformed_evidence"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_refused_with_a_verification_error(data: bytes) -> None:
    with pytest.raises(VerificationError):
        SampleVerifier().evaluate(data, REPORT_DATA)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(REPORT_DATA) - 1), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_the_bound_report_data_is_a_mismatch(offset: int, mask: int) -> None:
    SampleVerifier().evaluate(evidence(), REPORT_DATA)
    changed = bytearray(REPORT_DATA)
    changed[offset] ^= mask
    with pytest.raises(VerificationError) as info:
        SampleVerifier().evaluate(
            evidence(report_data=base64.b64encode(bytes(changed)).decode()), REPORT_DATA
        )
    assert info.value.reason == "report_data_mismatch"
