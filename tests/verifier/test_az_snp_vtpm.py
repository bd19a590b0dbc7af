"""az-snp-vtpm on fabricated evidence: every upstream step accepts the genuine case and rejects its breach."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from tests.verifier import snp_builder as snp
from tests.verifier import vtpm_builder as b
from verifier.api import VerifierRegistry
from verifier.az_snp_vtpm import AzSnpVtpmVerifier
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.snp.report import Generation, TcbVersion

CASE = b.make_az_snp_case()
NONCE = CASE.nonce


def verifier(case: b.AzSnpCase = CASE) -> AzSnpVtpmVerifier:
    return AzSnpVtpmVerifier(SnpVerifier(anchors=case.snp.pki.anchors(), vcek_sources=[]))


VERIFIER = verifier()


def reject(evidence: bytes, reason: str, nonce: bytes = NONCE, init_data: bytes | None = None) -> None:
    with pytest.raises(VerificationError) as caught:
        VERIFIER.evaluate(evidence, nonce, init_data)
    assert caught.value.reason == reason, caught.value


@pytest.mark.parametrize("version", [0, 1, 2])
def test_every_evidence_version_verifies(version: int) -> None:
    claims = VERIFIER.evaluate(CASE.evidence(version), NONCE)
    spec = CASE.snp.spec
    assert claims["report_data"] == NONCE.hex()
    assert claims["measurement"] == base64.b64encode(spec.measurement).decode()
    assert claims["init_data"] == bytes(32).hex()  # PCR8 overrides host_data
    assert claims["tpm"] == {f"pcr{i:02d}": pcr.hex() for i, pcr in enumerate(b.default_pcrs())}


def test_claims_are_upstreams_strings() -> None:
    claims = VERIFIER.evaluate(CASE.evidence(), NONCE)
    assert claims["policy_abi_major"] == "0"
    assert claims["policy_smt_allowed"] == "true"
    assert claims["policy_debug_allowed"] == "false"
    assert claims["reported_tcb_snp"] == "8"
    assert claims["reported_tcb_microcode"] == "115"
    assert claims["platform_smt_enabled"] == "true"
    assert "chip_id" not in claims
    assert all(isinstance(value, str) for key, value in claims.items() if key != "tpm")


def test_v1_evidence_does_not_check_user_data_but_v2_does() -> None:
    case = CASE.with_var_data(b.var_data(CASE.ak.public_key(), b"\x00" * 64))
    assert verifier(case).evaluate(case.evidence(1), NONCE)["report_data"] == NONCE.hex()
    with pytest.raises(VerificationError, match="user-data") as caught:
        verifier(case).evaluate(case.evidence(2), NONCE)
    assert caught.value.reason == "user_data_mismatch"


def test_v2_user_data_is_compared_over_the_expected_length() -> None:
    nonce = hashlib.sha384(b"runtime data").digest()
    case = b.make_az_snp_case(nonce, pki=CASE.snp.pki)
    assert verifier(case).evaluate(case.evidence(2), nonce)["report_data"] == nonce.hex()


# ---- the TPM quote


def test_quote_signature_bit_flip_is_rejected() -> None:
    sig = bytearray(CASE.quote.signature)
    sig[10] ^= 1
    reject(CASE.evidence(quote=replace(CASE.quote, signature=bytes(sig))), "bad_quote_signature")


def test_quote_signed_by_another_key_is_rejected() -> None:
    reject(CASE.evidence(quote=b.make_quote(b.ak_key("intruder"), NONCE)), "bad_quote_signature")


def test_truncated_signature_is_rejected() -> None:
    reject(
        CASE.evidence(quote=replace(CASE.quote, signature=CASE.quote.signature[:-1])), "bad_quote_signature"
    )


def test_nonce_mismatch() -> None:
    reject(CASE.evidence(1), "nonce_mismatch", nonce=NONCE[::-1])
    reject(CASE.evidence(1, quote=b.make_quote(CASE.ak, NONCE + b"\0")), "nonce_mismatch")


def test_signed_message_without_tpm_magic_is_rejected() -> None:
    reject(CASE.evidence(quote=b.make_quote(CASE.ak, NONCE, magic=0xFF544348)), "bad_tpm_magic")


def test_signed_attestation_that_is_not_a_quote_is_rejected() -> None:
    reject(CASE.evidence(quote=b.make_quote(CASE.ak, NONCE, attest_type=0x8017)), "not_a_quote")


def test_pcr_value_changed_after_quoting_is_rejected() -> None:
    pcrs = list(CASE.quote.pcrs)
    pcrs[0] = bytes([pcrs[0][0] ^ 1]) + pcrs[0][1:]
    reject(CASE.evidence(quote=replace(CASE.quote, pcrs=tuple(pcrs))), "pcr_digest_mismatch")


def test_pcr_digest_not_over_the_values_is_rejected() -> None:
    quote = b.make_quote(CASE.ak, NONCE, digest=hashlib.sha256(b"other").digest())
    reject(CASE.evidence(quote=quote), "pcr_digest_mismatch")


def test_pcr_count_must_match_the_selection() -> None:
    quote = b.make_quote(CASE.ak, NONCE)
    reject(CASE.evidence(quote=replace(quote, pcrs=quote.pcrs[:23])), "pcr_selection_mismatch")


@pytest.mark.parametrize(
    "banks",
    [
        [(b.ALG_SHA1, b"\xff\xff\xff")],
        [(b.ALG_SHA256, b"\xff\xff\xff"), (b.ALG_SHA1, b"\x00\x00\x00")],
        [],
    ],
)
def test_only_one_sha256_bank_is_accepted(banks: list[tuple[int, bytes]]) -> None:
    reject(CASE.evidence(quote=b.make_quote(CASE.ak, NONCE, banks=banks)), "pcr_selection_unsupported")


def test_pcr_claims_follow_the_selected_indices() -> None:
    pcrs = (*b.default_pcrs()[:8], b.init_data_pcr(b"\x11" * 32))  # PCR0..PCR8
    bitmap = b"\xff\x01\x00"
    case = b.make_az_snp_case(pki=CASE.snp.pki)
    quote = b.make_quote(case.ak, NONCE, pcrs, banks=[(b.ALG_SHA256, bitmap)])
    claims = verifier(case).evaluate(case.evidence(quote=quote), NONCE, b"\x11" * 32)
    assert sorted(claims["tpm"]) == [f"pcr{i:02d}" for i in range(9)]
    assert claims["init_data"] == pcrs[8].hex()


def test_trailing_bytes_after_the_quote_info_are_malformed() -> None:
    reject(CASE.evidence(quote=b.make_quote(CASE.ak, NONCE, trailing=b"\0")), "malformed_evidence")


# ---- init data through PCR8


def test_init_data_bound_through_pcr8() -> None:
    digest = hashlib.sha256(b"init data toml").digest()
    pcrs = list(b.default_pcrs())
    pcrs[8] = b.init_data_pcr(digest)
    case = replace(CASE, quote=b.make_quote(CASE.ak, NONCE, pcrs))
    claims = VERIFIER.evaluate(case.evidence(), NONCE, digest)
    assert claims["init_data"] == pcrs[8].hex()
    reject(case.evidence(), "init_data_mismatch", init_data=hashlib.sha256(b"other").digest())
    reject(case.evidence(), "init_data_mismatch", init_data=hashlib.sha384(b"init data toml").digest())


def test_init_data_needs_pcr8_in_the_quote() -> None:
    pcrs = b.default_pcrs()[:8]
    quote = b.make_quote(CASE.ak, NONCE, pcrs)
    reject(CASE.evidence(quote=quote), "init_data_mismatch", init_data=bytes(32))


# ---- the HCL report and its variable data


def test_variable_data_not_in_the_snp_report_is_rejected() -> None:
    hcl = bytearray(CASE.hcl)
    ek_modulus = CASE.var.index(b'"n":"', CASE.var.index(b"HCLEkPub")) + 10
    hcl[0x4D4 + ek_modulus] ^= 0x01  # still JSON, the AK untouched
    reject(CASE.evidence(hcl=bytes(hcl)), "var_data_mismatch")


def test_variable_data_without_the_ak_is_rejected() -> None:
    keys = [b.jwk(b.ak_key("hcl-ek").public_key(), "HCLEkPub")]
    case = CASE.with_var_data(b.var_data(CASE.ak.public_key(), NONCE.ljust(64, b"\0"), keys=keys))
    with pytest.raises(VerificationError) as caught:
        verifier(case).evaluate(case.evidence(), NONCE)
    assert caught.value.reason == "ak_not_found"


@pytest.mark.parametrize("bits", [1024])
def test_weak_ak_is_rejected(bits: int) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    case = CASE.with_var_data(b.var_data(weak.public_key(), NONCE.ljust(64, b"\0")))
    case = replace(case, quote=b.make_quote(weak, NONCE))
    with pytest.raises(VerificationError) as caught:
        verifier(case).evaluate(case.evidence(), NONCE)
    assert caught.value.reason == "malformed_evidence"


def test_variable_data_that_is_not_json_is_malformed() -> None:
    case = CASE.with_var_data(b"not json")
    with pytest.raises(VerificationError) as caught:
        verifier(case).evaluate(case.evidence(), NONCE)
    assert caught.value.reason == "malformed_evidence"


def test_hcl_report_wrapping_tdx_is_refused() -> None:
    reject(
        CASE.evidence(hcl=b.hcl_report(CASE.snp.report, CASE.var, report_type=4)), "hcl_report_type_mismatch"
    )


def test_hcl_report_hash_type_other_than_sha256_is_refused() -> None:
    reject(CASE.evidence(hcl=b.hcl_report(CASE.snp.report, CASE.var, hash_type=2)), "unsupported_hash_type")


@pytest.mark.parametrize(
    "hcl",
    [
        b.hcl_report(CASE.snp.report, CASE.var, magic=b"HCLB"),
        b.hcl_report(CASE.snp.report, CASE.var, report_type=3),
        b.hcl_report(CASE.snp.report, CASE.var, var_size=5000),
        b.hcl_report(CASE.snp.report, CASE.var)[:0x4D3],
    ],
    ids=["magic", "report-type", "var-size", "truncated"],
)
def test_malformed_hcl_reports(hcl: bytes) -> None:
    reject(CASE.evidence(hcl=hcl), "malformed_evidence")


# ---- the SNP report, VCEK and AMD chain


def test_vcek_from_another_amd_is_rejected() -> None:
    other = snp.make_pki(label="other-amd")
    _, der = snp.make_vek(other)
    reject(CASE.evidence(vcek_der=der), "chain_invalid")


def test_vcek_for_another_tcb_is_rejected() -> None:
    _, der = snp.make_vek(CASE.snp.pki, tcb=TcbVersion(bootloader=3, tee=0, snp=9, microcode=115))
    reject(CASE.evidence(vcek_der=der), "tcb_mismatch")


def test_snp_report_altered_inside_the_hcl_is_rejected() -> None:
    hcl = bytearray(CASE.hcl)
    hcl[0x20 + 0x90] ^= 1  # measurement
    reject(CASE.evidence(hcl=bytes(hcl)), "bad_signature")


def test_snp_report_from_vmpl_1_is_rejected() -> None:
    case = CASE.with_spec(vmpl=1)
    reject(case.evidence(), "vmpl_mismatch")


def test_snp_report_version_3_from_genoa_verifies() -> None:
    pki = snp.make_pki(Generation.GENOA)
    case = b.make_az_snp_case(spec=snp.ReportSpec(generation=Generation.GENOA, version=3), pki=pki)
    assert verifier(case).evaluate(case.evidence(), NONCE)["reported_tcb_snp"] == "8"


# ---- the JSON envelope


def _doc(version: int = 2) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(CASE.evidence(version))
    return loaded


@pytest.mark.parametrize(
    "change",
    [
        {"version": 3},
        {"version": "2"},
        {"version": True},
        {"hcl_report": CASE.evidence().decode()[:10]},
        {"hcl_report": base64.b64encode(CASE.hcl).decode().replace("A", "+", 1) + "+"},
        {"vcek": 12},
        {"tpm_quote": {"signature": "00", "message": "00"}},
        {"tpm_quote": {"signature": "0 0", "message": "", "pcrs": []}},
        {"tpm_quote": {"signature": "", "message": "", "pcrs": ["00" * 31]}},
        {"tpm_quote": []},
    ],
)
def test_malformed_v2_documents(change: dict[str, object]) -> None:
    doc = _doc()
    doc.update(change)
    reject(json.dumps(doc).encode(), "malformed_evidence")


@pytest.mark.parametrize(
    "change",
    [
        {"report": [True] * 10},
        {"report": [256]},
        {"vcek": "not a pem"},
        {"vcek": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----"},
        {"quote": {"signature": [1], "message": [1], "pcrs": [[0] * 31]}},
    ],
)
def test_malformed_v0_documents(change: dict[str, object]) -> None:
    doc = _doc(0)
    doc.update(change)
    reject(json.dumps(doc).encode(), "malformed_evidence")


@pytest.mark.parametrize("evidence", [b"", b"[]", b"{", b'{"version": NaN}', b"\xff", b" " * (300 * 1024)])
def test_not_evidence_at_all(evidence: bytes) -> None:
    reject(evidence, "malformed_evidence")


def test_unpadded_base64url_and_unknown_fields_are_accepted() -> None:
    doc = _doc()
    doc["hcl_report"] = str(doc["hcl_report"]).rstrip("=")
    doc["vcek"] = str(doc["vcek"]).rstrip("=")
    doc["something_new"] = 1
    assert VERIFIER.evaluate(json.dumps(doc).encode(), NONCE)["report_data"] == NONCE.hex()


def test_v0_vcek_pem_may_carry_the_chain_after_it() -> None:
    doc = _doc(0)
    doc["vcek"] = str(doc["vcek"]) + b.vcek_pem(CASE.snp.pki.ask.public_bytes(Encoding.DER))
    assert VERIFIER.evaluate(json.dumps(doc).encode(), NONCE)["report_data"] == NONCE.hex()


def test_the_registry_builds_this_verifier() -> None:
    assert isinstance(VerifierRegistry().get("az-snp-vtpm"), AzSnpVtpmVerifier)
