"""Property tests: whatever bytes arrive, the SNP parsers and verifier raise only VerificationError,
and the verifier accepts nothing but the report its VCEK signed (verdicts by field: test_verdicts_snp)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier import snp_builder as b
from tests.verifier.verdicts import SNP_SIGNATURE_END as SIGNATURE_END
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.snp.chain import KeyKind, hwid_extension, verify_endorsement_key
from verifier.snp.evidence import MAX_EVIDENCE_SIZE, parse_evidence
from verifier.snp.report import REPORT_SIZE, Generation, parse_report
from verifier.x509util import der_octet_string, der_unsigned, load_der_certificate, read_tlv

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

CASE = b.make_case()
EVIDENCE = json.loads(CASE.evidence())
ANCHORS = CASE.pki.anchors()
VERIFIER = SnpVerifier(anchors=ANCHORS, vcek_sources=[])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def only_verification_errors(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(VerificationError):
        call(*args, **kwargs)


def refused(data: bytes) -> None:
    with pytest.raises(VerificationError):
        VERIFIER.evaluate(data, bytes(64))


def refused_unless_signed_report(data: bytes) -> None:
    """Changed evidence is refused unless the report in it is still, byte for byte, the signed one
    (JSON spelling and the unsigned reserved bytes may differ)."""
    try:
        VERIFIER.evaluate(data, b.ReportSpec().report_data)
    except VerificationError:
        return
    assert parse_evidence(data).report.raw[:SIGNATURE_END] == CASE.report[:SIGNATURE_END]


@SETTINGS
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_report_parser_takes_any_bytes(data: bytes) -> None:
    only_verification_errors(parse_report, data)


@SETTINGS
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_any_full_size_report_parses_and_fails_verification_cleanly(data: bytes) -> None:
    report = parse_report(data)
    assert report.raw == data
    with pytest.raises(VerificationError):
        VERIFIER.verify_report(report, CASE.vek_der)


@SETTINGS
@given(st.binary(max_size=4096))
def test_evidence_parser_and_verifier_take_any_bytes(data: bytes) -> None:
    only_verification_errors(parse_evidence, data)
    refused(data)
    refused(b"{" + data)


def test_oversized_and_deeply_nested_evidence_is_malformed() -> None:
    for data in (
        b"{" + b" " * MAX_EVIDENCE_SIZE + b"}",
        b"{" + b"[" * 100_000,
        b'{"a": 1' + b"0" * 10_000 + b"}",
    ):
        with pytest.raises(VerificationError) as info:
            parse_evidence(data)
        assert info.value.reason == "malformed_evidence"


@SETTINGS
@given(st.sampled_from(sorted(EVIDENCE["attestation_report"])), json_values)
def test_any_report_field_value_is_refused_unless_the_signed_report_stays(field: str, value: object) -> None:
    doc = json.loads(json.dumps(EVIDENCE))
    doc["attestation_report"][field] = value
    refused_unless_signed_report(json.dumps(doc).encode())


@SETTINGS
@given(json_values, json_values)
def test_any_document_shape_is_refused(report: object, chain: object) -> None:
    for doc in (
        {"attestation_report": report, "cert_chain": chain},
        {"attestation_report": EVIDENCE["attestation_report"], "cert_chain": chain},
        report,
    ):
        refused(json.dumps(doc).encode())  # no VCEK comes with it, none from a source


@SETTINGS
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_byte_mutation_of_valid_evidence_is_refused_unless_the_signed_report_stays(
    position: int, value: int
) -> None:
    data = bytearray(CASE.evidence())
    data[position % len(data)] = value
    refused_unless_signed_report(bytes(data))


@SETTINGS
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=70))
def test_der_readers_take_any_bytes(data: bytes, offset: int) -> None:
    only_verification_errors(read_tlv, data, offset)
    only_verification_errors(der_unsigned, data, "x")
    only_verification_errors(der_octet_string, data, "x")


@SETTINGS
@given(
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=2000),
)
def test_certificate_and_extension_parsers_take_mutated_certificates(
    position: int, value: int, cut: int
) -> None:
    der = bytearray(CASE.vek_der)
    der[position % len(der)] = value
    for candidate in (bytes(der), bytes(der[:cut])):
        only_verification_errors(
            verify_endorsement_key, candidate, KeyKind.VCEK, ANCHORS, generation=Generation.MILAN
        )
        try:
            cert = load_der_certificate(candidate, "VCEK")
        except VerificationError:
            continue
        only_verification_errors(hwid_extension, cert)


@SETTINGS
@given(st.binary(max_size=200))
def test_hwid_extension_takes_any_value(value: bytes) -> None:
    _, der = b.make_vek(CASE.pki, chip_id=value, hwid_encoding="raw")
    only_verification_errors(hwid_extension, load_der_certificate(der, "VCEK"))
