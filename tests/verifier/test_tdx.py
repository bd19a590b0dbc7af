"""TDX verifier on fabricated evidence: every acceptance and rejection path, no vectors needed."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from tests.verifier import tdx_builder as b
from verifier.errors import VerificationError
from verifier.tdx import CollateralNeeded, TdxOptions, TdxVerifier

REPORT_DATA = bytes(range(64))
INIT_DATA = bytes(range(100, 148))


@pytest.fixture(scope="module")
def pki() -> b.Pki:
    return b.make_pki()


def make_verifier(pki: b.Pki, *, clock=b.NOW, raw=None, **options) -> TdxVerifier:
    verifier = TdxVerifier(source=None, root=pki.root, options=TdxOptions(**options), clock=lambda: clock)
    verifier.add_collateral(raw if raw is not None else b.collateral(pki))
    return verifier


def spec(**fields) -> b.QuoteSpec:
    return b.QuoteSpec(report_data=REPORT_DATA, mr_config_id=INIT_DATA, **fields)


def reason_of(call) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.reason


def test_v4_quote_with_event_log_verifies(pki: b.Pki) -> None:
    ccel, rtmrs = b.make_ccel(b.DEFAULT_EVENTS)
    quote = b.make_quote(pki, spec(rtmrs=rtmrs))
    claims = make_verifier(pki).evaluate(b.evidence(quote, ccel), REPORT_DATA, INIT_DATA)

    assert claims["quote"]["header"] == {
        "version": "0400",
        "att_key_type": "0200",
        "tee_type": "81000000",
        "reserved": "00000000",
        "vendor_id": b.QE_VENDOR_ID.hex(),
        "user_data": "00" * 20,
    }
    body = claims["quote"]["body"]
    assert body["mr_td"] == bytes(range(48)).hex()
    assert body["rtmr_2"] == rtmrs[2].hex()
    assert body["tcb_svn"] == b.TEE_TCB_SVN.hex()
    assert "tee_tcb_svn2" not in body and "type" not in claims["quote"]
    assert claims["report_data"] == REPORT_DATA.hex()
    assert claims["init_data"] == INIT_DATA.hex()
    assert claims["td_attributes"] == {
        "debug": False,
        "septve_disable": True,
        "protection_keys": False,
        "key_locker": False,
        "perfmon": False,
    }
    assert claims["tcb_status"] == "UpToDate"
    assert claims["advisory_ids"] == ["INTEL-SA-00837"]
    assert claims["tcb_date"] == "2024-03-13T00:00:00Z"
    assert claims["collateral_expiration_status"] == "0"
    assert claims["collateral_signature_verified"] is True
    assert claims["pck_crl_num"] == 1 and claims["root_ca_crl_num"] == 1
    assert claims["platform_instance_id"] == bytes(reversed(range(16))).hex()  # a GUID, big-endian
    assert claims["sgx_type"] == "Scalable"
    assert claims["is_smt_enabled"] is True and claims["is_cached_keys"] is True
    assert claims["earliest_expiration_date"] == b._stamp(b.NOW + timedelta(days=29))
    events = claims["uefi_event_logs"]
    assert [e["index"] for e in events] == [1, 2, 2, 3, 4]
    assert events[1]["type_name"] == "EV_EFI_ACTION"
    assert events[1]["details"] == {"string": "Calling EFI Application from Boot Option"}
    assert events[1]["digest_matches_event"] is True
    json.dumps(claims)  # plain JSON for the policy engine


@pytest.mark.parametrize(("body_type", "size"), [(2, "48020000"), (3, "88020000")])
def test_v5_quote_both_body_types_verify(pki: b.Pki, body_type: int, size: str) -> None:
    quote = b.make_quote(pki, spec(version=5, body_type=body_type))
    claims = make_verifier(pki).evaluate(b.evidence(quote), REPORT_DATA, INIT_DATA)
    assert claims["quote"]["header"]["version"] == "0500"
    assert claims["quote"]["type"] == f"0{body_type}00"
    assert claims["quote"]["size"] == size
    assert ("mr_servicetd" in claims["quote"]["body"]) == (body_type == 3)
    assert claims["report_data"] == REPORT_DATA.hex()
    assert "uefi_event_logs" not in claims


def test_chain_without_root_copy_and_processor_ca() -> None:
    pki = b.make_pki(ca_type="processor", extension=b.sgx_extension(platform_instance_id=None, sgx_type=0))
    quote = b.make_quote(pki, spec(include_root=False))
    claims = make_verifier(pki).evaluate(b.evidence(quote), REPORT_DATA)
    assert "platform_instance_id" not in claims
    assert claims["sgx_type"] == "Standard" and "is_smt_enabled" not in claims


def test_wrong_root_is_rejected(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec())
    other = b.make_pki()
    verifier = TdxVerifier(source=None, root=other.root, clock=lambda: b.NOW)
    assert reason_of(lambda: verifier.verify_quote(quote)) == "chain_invalid"
    intel = TdxVerifier(source=None, clock=lambda: b.NOW)  # the pinned Intel SGX Root CA
    assert reason_of(lambda: intel.verify_quote(quote)) == "chain_invalid"


def test_chain_signed_by_impostor_with_the_same_names_is_rejected(pki: b.Pki) -> None:
    impostor = b.make_pki()  # same subject names, different keys
    mixed = dataclasses.replace(impostor, root=pki.root)
    quote = b.make_quote(mixed, spec(include_root=False))
    assert reason_of(lambda: make_verifier(pki).verify_quote(quote)) == "chain_invalid"


def test_expired_and_not_yet_valid_pck_are_rejected() -> None:
    expired = b.make_pki(pck_not_after=b.NOW - timedelta(days=1))
    quote = b.make_quote(expired, spec())
    assert reason_of(lambda: make_verifier(expired).verify_quote(quote)) == "cert_expired"
    pki = b.make_pki()
    early = make_verifier(pki, clock=b.NOW - timedelta(days=400))
    assert reason_of(lambda: early.verify_quote(b.make_quote(pki, spec()))) == "cert_expired"


def test_tcb_out_of_date_is_reported_or_rejected(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec(tee_tcb_svn=bytes([5, 3, 1] + [0] * 13)))
    claims = make_verifier(pki).evaluate(b.evidence(quote), REPORT_DATA)
    assert claims["tcb_status"] == "OutOfDate"
    assert claims["tcb_date"] == "2018-01-04T00:00:00Z"
    strict = make_verifier(pki, accepted_tcb_statuses=frozenset({"UpToDate"}))
    assert reason_of(lambda: strict.verify_quote(quote)) == "tcb_status_rejected"


def test_revoked_and_unsupported_tcb_levels_are_rejected(pki: b.Pki) -> None:
    revoked = b.tcb_info(pki, levels=(b.tcb_level("Revoked"),))
    verifier = make_verifier(pki, raw=b.collateral(pki, tcb_doc=revoked))
    assert reason_of(lambda: verifier.verify_quote(b.make_quote(pki, spec()))) == "tcb_status_rejected"
    low = b.make_quote(pki, spec(tee_tcb_svn=bytes([5, 3, 1] + [0] * 13)))
    only_high = b.tcb_info(pki, levels=(b.tcb_level("UpToDate"),))
    verifier = make_verifier(pki, raw=b.collateral(pki, tcb_doc=only_high))
    assert reason_of(lambda: verifier.verify_quote(low)) == "tcb_status_rejected"


def test_qe_identity_levels_fold_into_the_status(pki: b.Pki) -> None:
    verifier = make_verifier(pki)
    assert verifier.verify_quote(b.make_quote(pki, spec(qe_isv_svn=3))).tcb.status == "OutOfDate"
    assert (
        reason_of(lambda: verifier.verify_quote(b.make_quote(pki, spec(qe_isv_svn=1))))
        == "tcb_status_rejected"
    )
    other_qe = b.make_quote(pki, spec(qe_mrsigner=bytes(32)))
    assert reason_of(lambda: verifier.verify_quote(other_qe)) == "qe_identity_mismatch"


def test_tdx_module_identity_must_match(pki: b.Pki) -> None:
    verifier = make_verifier(pki)
    third_party = b.make_quote(pki, spec(mrsigner_seam=bytes([1] * 48)))
    assert reason_of(lambda: verifier.verify_quote(third_party)) == "tdx_module_mismatch"
    unknown_version = b.make_quote(pki, spec(tee_tcb_svn=bytes([5, 4, 2] + [0] * 13)))
    assert reason_of(lambda: verifier.verify_quote(unknown_version)) == "tdx_module_mismatch"
    version_zero = b.make_quote(pki, spec(tee_tcb_svn=bytes([5, 0, 2] + [0] * 13)))
    assert verifier.verify_quote(version_zero).tcb.status == "UpToDate"


def test_td_relaunch_advised_for_tdx15(pki: b.Pki) -> None:
    tcb = b.tcb_info(pki, module_levels=((5, "UpToDate"), (2, "OutOfDate")))
    verifier = make_verifier(pki, raw=b.collateral(pki, tcb_doc=tcb))
    launched_old = spec(version=5, body_type=3, tee_tcb_svn=bytes([2, 3, 2] + [0] * 13))
    assert verifier.verify_quote(b.make_quote(pki, launched_old)).tcb.status == "TDRelaunchAdvised"
    same_on_tdx10 = spec(version=5, body_type=2, tee_tcb_svn=bytes([2, 3, 2] + [0] * 13))
    assert verifier.verify_quote(b.make_quote(pki, same_on_tdx10)).tcb.status == "OutOfDate"


@pytest.mark.parametrize(
    ("where", "offset"),
    [("header user_data", 40), ("body mr_td", 48 + 136), ("body report_data", 48 + 570)],
)
def test_flipped_signed_byte_fails_the_quote_signature(pki: b.Pki, where: str, offset: int) -> None:
    quote = bytearray(b.make_quote(pki, spec()))
    quote[offset] ^= 0x01
    assert reason_of(lambda: make_verifier(pki).verify_quote(bytes(quote))) == "bad_signature", where


def test_flipped_qe_report_byte_fails_its_signature(pki: b.Pki) -> None:
    quote = bytearray(b.make_quote(pki, spec()))
    quote[636 + 134 + 100] ^= 0x01  # inside the QE report (mr_enclave)
    assert reason_of(lambda: make_verifier(pki).verify_quote(bytes(quote))) == "bad_signature"


def test_qe_report_must_bind_the_attestation_key(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec(qe_report_data=bytes(64)))
    assert reason_of(lambda: make_verifier(pki).verify_quote(quote)) == "qe_report_binding"


def test_report_data_binding(pki: b.Pki) -> None:
    verifier = make_verifier(pki)
    quote = b.evidence(b.make_quote(pki, spec()))
    assert reason_of(lambda: verifier.evaluate(quote, bytes(64))) == "report_data_mismatch"
    assert verifier.evaluate(quote, REPORT_DATA + b"ignored")  # upstream keeps the first 64 bytes
    short = b.make_quote(pki, b.QuoteSpec(report_data=bytes(range(48)) + bytes(16)))
    assert verifier.evaluate(b.evidence(short), bytes(range(48)))["report_data"].endswith("00" * 16)


def test_init_data_binding(pki: b.Pki) -> None:
    verifier = make_verifier(pki)
    quote = b.evidence(b.make_quote(pki, spec()))
    assert reason_of(lambda: verifier.evaluate(quote, REPORT_DATA, bytes(48))) == "init_data_mismatch"
    assert verifier.evaluate(quote, REPORT_DATA, None)["init_data"] == INIT_DATA.hex()
    short = b.make_quote(pki, b.QuoteSpec(report_data=REPORT_DATA, mr_config_id=bytes(range(32)) + bytes(16)))
    assert verifier.evaluate(b.evidence(short), REPORT_DATA, bytes(range(32)))


def test_debug_td_is_left_to_policy_or_refused(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec(td_attributes=1))
    claims = make_verifier(pki).evaluate(b.evidence(quote), REPORT_DATA)
    assert claims["td_attributes"]["debug"] is True
    assert reason_of(lambda: make_verifier(pki, allow_debug=False).verify_quote(quote)) == "debug_not_allowed"


def test_event_log_must_replay_to_the_quoted_rtmrs(pki: b.Pki) -> None:
    ccel, rtmrs = b.make_ccel(b.DEFAULT_EVENTS)
    quote = b.make_quote(pki, spec(rtmrs=[rtmrs[0], rtmrs[1], bytes(48), rtmrs[3]]))
    with pytest.raises(VerificationError) as info:
        make_verifier(pki).evaluate(b.evidence(quote, ccel), REPORT_DATA)
    assert info.value.reason == "rtmr_mismatch" and "RTMR2" in str(info.value)


@pytest.mark.parametrize("cut", [0, 10, 47, 100, 631, 635, 700, 1000, -200, -1])
def test_truncated_quote_is_malformed(pki: b.Pki, cut: int) -> None:
    quote = b.make_quote(pki, spec())
    evidence = b.evidence(quote[:cut])
    assert reason_of(lambda: make_verifier(pki).evaluate(evidence, REPORT_DATA)) == "malformed_evidence"


@pytest.mark.parametrize(
    "evidence",
    [
        b"",
        b"[]",
        b"{}",
        b'{"quote": 5}',
        b'{"quote": "!!!"}',
        b'{"quote": ""}',
        b'{"quote": "AAAA", "cc_eventlog": 1}',
    ],
)
def test_malformed_evidence_document(pki: b.Pki, evidence: bytes) -> None:
    assert reason_of(lambda: make_verifier(pki).evaluate(evidence, REPORT_DATA)) == "malformed_evidence"


def test_trailing_garbage_is_malformed_but_zero_padding_is_accepted(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec())
    verifier = make_verifier(pki)
    assert verifier.verify_quote(quote + bytes(70))
    assert reason_of(lambda: verifier.verify_quote(quote + b"\x01")) == "malformed_evidence"


def test_unsupported_headers(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec())
    verifier = make_verifier(pki)
    assert reason_of(lambda: verifier.verify_quote(b"\x03\x00" + quote[2:])) == "unsupported_version"
    assert (
        reason_of(lambda: verifier.verify_quote(quote[:2] + b"\x03\x00" + quote[4:])) == "unsupported_quote"
    )
    assert reason_of(lambda: verifier.verify_quote(quote[:4] + b"\x00" + quote[5:])) == "unsupported_quote"


def test_revoked_certificates_are_rejected(pki: b.Pki) -> None:
    quote = b.make_quote(pki, spec())
    verifier = make_verifier(pki, raw=b.collateral(pki, revoked_pck=[pki.pck.serial_number]))
    assert reason_of(lambda: verifier.verify_quote(quote)) == "cert_revoked"
    ca_revoked = b.collateral(pki, revoked_by_root=[12345, pki.ca.serial_number])
    assert reason_of(lambda: make_verifier(pki, raw=ca_revoked)) == "cert_revoked"  # as PCK CRL issuer
    without_pck_crl = dataclasses.replace(ca_revoked, pck_crl=None, pck_crl_issuer_chain=None)
    verifier = make_verifier(pki, raw=without_pck_crl)
    assert reason_of(lambda: verifier.verify_quote(quote)) == "cert_revoked"  # as issuer of the PCK
    revoked_signer = b.collateral(pki, revoked_by_root=[pki.signing.serial_number])
    assert reason_of(lambda: make_verifier(pki, raw=revoked_signer)) == "cert_revoked"


def test_stale_collateral_is_refused_unless_accepted(pki: b.Pki) -> None:
    later = b.NOW + timedelta(days=40)
    quote = b.make_quote(pki, spec())
    assert reason_of(lambda: make_verifier(pki, clock=later).verify_quote(quote)) == "collateral_stale"
    claims = make_verifier(pki, clock=later, accept_stale_collateral=True).evaluate(
        b.evidence(quote), REPORT_DATA
    )
    assert claims["collateral_expiration_status"] == "1"


def test_collateral_without_chain_cannot_be_trusted_silently(pki: b.Pki) -> None:
    raw = b.collateral(pki, with_chains=False, with_crls=False)
    quote = b.make_quote(pki, spec())
    assert reason_of(lambda: make_verifier(pki, raw=raw).verify_quote(quote)) == "collateral_signature"
    claims = make_verifier(pki, raw=raw, accept_unverified_collateral=True).evaluate(
        b.evidence(quote), REPORT_DATA
    )
    assert claims["collateral_signature_verified"] is False
    assert "pck_crl_num" not in claims


def test_tampered_or_foreign_collateral_is_refused(pki: b.Pki) -> None:
    verifier = TdxVerifier(source=None, root=pki.root, clock=lambda: b.NOW)
    doc = b.tcb_info(pki).replace(b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18')
    assert (
        reason_of(lambda: verifier.add_collateral(b.collateral(pki, tcb_doc=doc))) == "collateral_signature"
    )
    foreign = b.make_pki()
    raw = dataclasses.replace(
        b.collateral(foreign), pck_crl=None, pck_crl_issuer_chain=None, root_ca_crl=None
    )
    assert reason_of(lambda: verifier.add_collateral(raw)) == "chain_invalid"
    crl = b.make_crl(foreign.ca, foreign.ca_key)
    raw = dataclasses.replace(b.collateral(pki), pck_crl=crl)
    assert reason_of(lambda: verifier.add_collateral(raw)) == "collateral_signature"


def test_collateral_must_describe_this_platform(pki: b.Pki) -> None:
    other_fmspc = b.collateral(pki, tcb_doc=b.tcb_info(pki, fmspc=bytes.fromhex("50806f000000")))
    verifier = make_verifier(pki, raw=other_fmspc)
    with pytest.raises(CollateralNeeded) as info:
        verifier.verify_quote(b.make_quote(pki, spec()))
    assert info.value.reason == "collateral_unavailable" and info.value.fmspc == b.FMSPC
    other_pce = b.make_pki(extension=b.sgx_extension(pce_id=b"\x00\x01"))
    quote = b.make_quote(other_pce, spec())
    assert reason_of(lambda: make_verifier(other_pce).verify_quote(quote)) == "tcb_info_mismatch"
