"""SEV-SNP verifier against fabricated PKIs and reports: every acceptance and rejection path, no vectors."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.verifier import snp_builder as b
from verifier.errors import VerificationError
from verifier.roots import pinned_certificates
from verifier.snp import SnpOptions, SnpVerifier
from verifier.snp.evidence import encode_report, parse_evidence
from verifier.snp.report import Generation, TcbVersion, parse_report
from verifier.snp.vcek import OfflineStore
from verifier.snp.verifier import vcek_sources_from_config

SPEC = b.ReportSpec()


def verifier_for(case: b.SnpCase, options: SnpOptions | None = None, **kwargs: object) -> SnpVerifier:
    return SnpVerifier(options, anchors=case.pki.anchors(), vcek_sources=[], **kwargs)  # type: ignore[arg-type]


def rejects(
    reason: str, verifier: SnpVerifier, evidence: bytes, report_data: bytes, init: bytes | None = None
):
    with pytest.raises(VerificationError) as info:
        verifier.evaluate(evidence, report_data, init)
    assert info.value.reason == reason, str(info.value)
    return info.value


@pytest.fixture(scope="module")
def milan() -> b.SnpCase:
    return b.make_case(SPEC)


def test_valid_evidence_gives_upstream_claims(milan: b.SnpCase) -> None:
    claims = verifier_for(milan).evaluate(milan.evidence(), SPEC.report_data)
    assert claims == {
        "policy_abi_major": 0,
        "policy_abi_minor": 0,
        "policy_smt_allowed": True,
        "policy_migrate_ma": False,
        "policy_debug_allowed": False,
        "policy_single_socket": False,
        "reported_tcb_bootloader": 3,
        "reported_tcb_tee": 0,
        "reported_tcb_snp": 8,
        "reported_tcb_microcode": 115,
        "platform_tsme_enabled": False,
        "platform_smt_enabled": True,
        "measurement": SPEC.measurement.hex(),
        "report_data": SPEC.report_data.hex(),
        "init_data": "00" * 32,
        "chip_id": SPEC.effective_chip_id.hex(),
    }


def test_json_encoding_rebuilds_the_signed_bytes(milan: b.SnpCase) -> None:
    doc = json.loads(milan.evidence())
    assert encode_report(doc["attestation_report"]) == milan.report
    assert parse_evidence(milan.evidence()).report.raw == milan.report


@pytest.mark.parametrize("generation", list(Generation))
@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_every_generation_and_report_version_verifies(generation: Generation, version: int) -> None:
    spec = b.ReportSpec(generation=generation, version=version, launch_mit_vector=7, current_mit_vector=9)
    case = b.make_case(spec)
    claims = verifier_for(case).evaluate(case.evidence(), spec.report_data)
    assert claims["reported_tcb_microcode"] == 115
    assert claims["chip_id"] == spec.effective_chip_id.hex()
    report = parse_report(case.report)
    assert report.launch_mit_vector == (7 if version >= 5 else None)
    assert (report.cpuid_generation is generation) == (version >= 3)


def test_v2_report_generation_comes_from_the_issuer() -> None:
    """A v2 report has no CPUID; its VCEK's issuer (a Genoa ASK) decides, among all trusted lines."""
    spec = b.ReportSpec(generation=Generation.GENOA, version=2)
    genoa = b.make_case(spec, pki=b.make_pki(Generation.GENOA))
    anchors = {**b.make_pki(Generation.MILAN, label="milan").anchors(), **genoa.pki.anchors()}
    verifier = SnpVerifier(anchors=anchors, vcek_sources=[])
    claims = verifier.verify_report(parse_report(genoa.report), genoa.vek_der)
    assert claims["reported_tcb_snp"] == 8
    with pytest.raises(VerificationError) as info:
        SnpVerifier(options=SnpOptions(min_report_version=3), anchors=anchors).verify_report(
            parse_report(genoa.report), genoa.vek_der
        )
    assert info.value.reason == "unsupported_version"


def test_turin_fmc_level_is_bound() -> None:
    spec = b.ReportSpec(generation=Generation.TURIN)
    case = b.make_case(spec, vek_tcb=TcbVersion(bootloader=3, tee=0, snp=8, microcode=115, fmc=2))
    error = rejects("tcb_mismatch", verifier_for(case), case.evidence(), spec.report_data)
    assert "fmc" in str(error)


def test_vlek_chains_through_asvk() -> None:
    spec = b.ReportSpec(key_info=1 << 2, chip_id=bytes(64))
    case = b.make_case(spec)
    assert verifier_for(case).evaluate(case.evidence(), spec.report_data)["chip_id"] == "00" * 64
    rejects("vcek_unavailable", verifier_for(case), case.evidence(with_chain=False), spec.report_data)


def test_wrong_root_is_rejected() -> None:
    case = b.make_case(SPEC, pki=b.make_pki(label="impostor"))
    trusted = b.make_pki()
    verifier = SnpVerifier(anchors=trusted.anchors(), vcek_sources=[])
    error = rejects("chain_invalid", verifier, case.evidence(), SPEC.report_data)
    assert "SEV-Milan" in str(error)


def test_vcek_signed_without_pss_is_rejected(milan: b.SnpCase) -> None:
    key, der = b.make_vek(milan.pki, pss=False)
    case = replace(milan, vek_key=key, vek_der=der, report=b.build_report(SPEC, key))
    rejects("chain_invalid", verifier_for(milan), case.evidence(), SPEC.report_data)


def test_vcek_from_another_issuer_key_is_rejected(milan: b.SnpCase) -> None:
    key, der = b.make_vek(milan.pki, signer=b.rsa_key("rogue"))
    case = replace(milan, vek_key=key, vek_der=der, report=b.build_report(SPEC, key))
    rejects("chain_invalid", verifier_for(milan), case.evidence(), SPEC.report_data)


def test_supplied_ark_and_ask_must_chain_to_the_trusted_ark(milan: b.SnpCase) -> None:
    der = lambda cert: cert.public_bytes(Encoding.DER)  # noqa: E731
    genuine = [("ASK", der(milan.pki.ask)), ("ARK", der(milan.pki.ark))]
    assert verifier_for(milan).evaluate(milan.evidence(extra_certs=genuine), SPEC.report_data)
    other = b.make_pki(label="impostor")
    for extra in ([("ARK", der(other.ark))], [("ASK", der(other.ask))], [("ASK", der(milan.pki.asvk))]):
        rejects("chain_invalid", verifier_for(milan), milan.evidence(extra_certs=extra), SPEC.report_data)


def test_expired_and_not_yet_valid_certificates_are_rejected() -> None:
    now = b.now()
    expired = b.make_case(SPEC, not_before=now - timedelta(days=30), not_after=now - timedelta(hours=1))
    rejects("cert_expired", verifier_for(expired), expired.evidence(), SPEC.report_data)
    early = b.make_case(SPEC, not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))
    rejects("cert_expired", verifier_for(early), early.evidence(), SPEC.report_data)
    old_ask = b.make_case(SPEC, pki=b.make_pki(ask_not_after=now - timedelta(hours=1)))
    error = rejects("cert_expired", verifier_for(old_ask), old_ask.evidence(), SPEC.report_data)
    assert "SEV-Milan" in str(error)


def test_validity_is_checked_on_every_use_of_a_cached_chain(milan: b.SnpCase) -> None:
    clock = [b.now()]
    verifier = verifier_for(milan, clock=lambda: clock[0])
    verifier.evaluate(milan.evidence(), SPEC.report_data)
    clock[0] += timedelta(days=400)
    rejects("cert_expired", verifier, milan.evidence(), SPEC.report_data)


@pytest.mark.parametrize("component", ["bootloader", "tee", "snp", "microcode"])
def test_tcb_mismatch_is_rejected(component: str) -> None:
    tcb = replace(b.default_tcb(Generation.MILAN), **{component: 99})
    case = b.make_case(SPEC, vek_tcb=tcb)
    error = rejects("tcb_mismatch", verifier_for(case), case.evidence(), SPEC.report_data)
    assert component in str(error)


def test_chip_id_mismatch_is_rejected() -> None:
    case = b.make_case(SPEC, vek_chip_id=bytes(range(1, 65)))
    rejects("chip_id_mismatch", verifier_for(case), case.evidence(), SPEC.report_data)
    no_hwid = b.make_case(SPEC, hwid_encoding="none")
    rejects("chip_id_mismatch", verifier_for(no_hwid), no_hwid.evidence(), SPEC.report_data)


def test_hwid_as_der_octet_string_is_accepted() -> None:
    case = b.make_case(SPEC, hwid_encoding="octet")
    assert verifier_for(case).evaluate(case.evidence(), SPEC.report_data)


def test_masked_chip_id_is_an_option() -> None:
    spec = replace(SPEC, chip_id=bytes(64))
    case = b.make_case(spec, vek_chip_id=bytes(range(64)))
    assert verifier_for(case).evaluate(case.evidence(), spec.report_data)["chip_id"] == "00" * 64
    strict = verifier_for(case, SnpOptions(allow_masked_chip_id=False))
    rejects("chip_id_mismatch", strict, case.evidence(), spec.report_data)
    rejects("vcek_unavailable", verifier_for(case), case.evidence(with_chain=False), spec.report_data)


def test_bad_signature_is_rejected(milan: b.SnpCase) -> None:
    tampered = bytearray(milan.report)
    tampered[0x2A0] ^= 1  # r
    evidence = b.evidence_json(SPEC, bytes(tampered), [("VCEK", milan.vek_der)])
    rejects("bad_signature", verifier_for(milan), evidence, SPEC.report_data)
    other_content = replace(SPEC, measurement=bytes(48))
    forged = b.evidence_json(other_content, milan.report, [("VCEK", milan.vek_der)])
    rejects("bad_signature", verifier_for(milan), forged, SPEC.report_data)


def test_report_data_binding(milan: b.SnpCase) -> None:
    verifier = verifier_for(milan)
    rejects("report_data_mismatch", verifier, milan.evidence(), bytes(64))
    short = replace(SPEC, report_data=b"\x01" * 48 + bytes(16))
    case = milan.resigned(short)
    assert verifier.evaluate(case.evidence(), b"\x01" * 48)  # padded with zeros, as upstream
    assert verifier.evaluate(case.evidence(), b"\x01" * 48 + bytes(16) + b"\x99")  # cut to 64, as upstream


def test_init_data_binding(milan: b.SnpCase) -> None:
    spec = replace(SPEC, host_data=b"\xaa" * 32)
    case = milan.resigned(spec)
    verifier = verifier_for(milan)
    assert verifier.evaluate(case.evidence(), spec.report_data, b"\xaa" * 32)["init_data"] == "aa" * 32
    rejects("init_data_mismatch", verifier, case.evidence(), spec.report_data, b"\xbb" * 32)
    rejects("init_data_mismatch", verifier, case.evidence(), spec.report_data, b"\xaa" * 16)


def test_other_cert_types_cannot_pass_for_a_vcek(milan: b.SnpCase) -> None:
    doc = json.loads(milan.evidence())
    doc["cert_chain"] = [{"cert_type": {"OTHER": "VCEK"}, "data": list(milan.vek_der)}]
    parsed = parse_evidence(json.dumps(doc).encode())
    assert parsed.certificate("VCEK") is None
    assert parsed.certificate("OTHER:VCEK") == milan.vek_der
    rejects("vcek_unavailable", verifier_for(milan), json.dumps(doc).encode(), SPEC.report_data)


def test_truncated_evidence_is_malformed(milan: b.SnpCase) -> None:
    verifier = verifier_for(milan)
    rejects("malformed_evidence", verifier, milan.report[:-1], SPEC.report_data)
    rejects("malformed_evidence", verifier, milan.evidence()[:-10], SPEC.report_data)
    doc = json.loads(milan.evidence())
    del doc["attestation_report"]["chip_id"]
    rejects("malformed_evidence", verifier, json.dumps(doc).encode(), SPEC.report_data)
    doc = json.loads(milan.evidence())
    doc["attestation_report"]["measurement"] = doc["attestation_report"]["measurement"][:-1]
    rejects("malformed_evidence", verifier, json.dumps(doc).encode(), SPEC.report_data)


def test_debug_policy_bit_is_a_claim_and_an_option(milan: b.SnpCase) -> None:
    spec = replace(SPEC, policy=SPEC.policy | 1 << 19)
    case = milan.resigned(spec)
    assert verifier_for(milan).evaluate(case.evidence(), spec.report_data)["policy_debug_allowed"] is True
    strict = verifier_for(milan, SnpOptions(allow_debug=False))
    rejects("debug_not_allowed", strict, case.evidence(), spec.report_data)
    assert strict.evaluate(milan.evidence(), SPEC.report_data)["policy_debug_allowed"] is False


def test_vmpl_is_checked_unless_disabled(milan: b.SnpCase) -> None:
    spec = replace(SPEC, vmpl=1)
    case = milan.resigned(spec)
    rejects("vmpl_mismatch", verifier_for(milan), case.evidence(), spec.report_data)
    assert verifier_for(milan, SnpOptions(required_vmpl=None)).evaluate(case.evidence(), spec.report_data)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"version": 6}, "unsupported_version"),
        ({"version": 1}, "unsupported_version"),
        ({"sig_algo": 2}, "unsupported_signature_algorithm"),
        ({"key_info": 7 << 2}, "unsupported_signing_key"),
        ({"cpuid": (0x17, 0x31, 0)}, "unsupported_processor"),
    ],
)
def test_unsupported_reports_are_rejected(milan: b.SnpCase, changes: dict[str, object], reason: str) -> None:
    case = milan.resigned(replace(SPEC, **changes))  # type: ignore[arg-type]
    rejects(reason, verifier_for(milan), case.evidence(), SPEC.report_data)


def test_options_and_config_are_validated(tmp_path) -> None:
    with pytest.raises(ValueError, match="min_report_version"):
        SnpOptions(min_report_version=1)
    sources = vcek_sources_from_config(
        {
            "vcek_sources": [
                {"type": "OfflineStore", "path": str(tmp_path)},
                {"type": "KDS", "base_url": "http://127.0.0.1:1"},
            ]
        }
    )
    assert isinstance(sources[0], OfflineStore) and sources[0].root == tmp_path
    assert type(vcek_sources_from_config(None)[0]).__name__ == "KdsFetcher"
    with pytest.raises(ValueError, match="unknown VCEK source"):
        vcek_sources_from_config({"vcek_sources": [{"type": "Carrier pigeon"}]})


def test_a_modified_pinned_bundle_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="fingerprints"):
        pinned_certificates("amd_milan_ask_ark_asvk.pem", ["00" * 32] * 3)
