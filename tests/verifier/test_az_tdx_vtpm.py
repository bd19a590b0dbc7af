"""az-tdx-vtpm on fabricated evidence: a test Intel PKI and collateral, so DCAP verification runs in full."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest

from tests.verifier import tdx_builder as tdx
from tests.verifier import vtpm_builder as b
from verifier.api import VerifierRegistry
from verifier.az_tdx_vtpm import AzTdxVtpmVerifier
from verifier.errors import VerificationError
from verifier.tdx import TdxVerifier

CASE = b.make_az_tdx_case()
NONCE = CASE.nonce


def tdx_verifier(pki: tdx.Pki, *, with_collateral: bool = True) -> TdxVerifier:
    verifier = TdxVerifier(source=None, root=pki.root, clock=lambda: tdx.NOW)
    if with_collateral:
        verifier.add_collateral(tdx.collateral(pki))
    return verifier


VERIFIER = AzTdxVtpmVerifier(tdx_verifier(CASE.pki))


def reject(
    evidence: bytes,
    reason: str,
    nonce: bytes = NONCE,
    init_data: bytes | None = None,
    verifier: AzTdxVtpmVerifier = VERIFIER,
) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.evaluate(evidence, nonce, init_data)
    assert caught.value.reason == reason, caught.value


@pytest.mark.parametrize("version", [0, 1, 2])
def test_every_evidence_version_verifies(version: int) -> None:
    claims = VERIFIER.evaluate(CASE.evidence(version), NONCE)
    assert claims["report_data"] == NONCE.hex()
    assert claims["init_data"] == bytes(32).hex()  # PCR8, not MR_CONFIG_ID
    assert claims["tpm"] == {f"pcr{i:02d}": pcr.hex() for i, pcr in enumerate(b.default_pcrs())}
    assert claims["quote"]["body"]["mr_td"] == CASE.spec.mr_td.hex()
    assert claims["quote"]["body"]["report_data"] == b.bound_report_data(CASE.var).hex()
    assert claims["tcb_status"] == "UpToDate"
    assert claims["td_attributes"]["septve_disable"] is True


def test_v1_evidence_does_not_check_user_data_but_v2_does() -> None:
    case = CASE.with_var_data(b.var_data(CASE.ak.public_key(), bytes(64)))
    assert VERIFIER.evaluate(case.evidence(1), NONCE)["report_data"] == NONCE.hex()
    reject(case.evidence(2), "user_data_mismatch")


def test_init_data_bound_through_pcr8() -> None:
    digest = hashlib.sha256(b"init data").digest()
    pcrs = list(b.default_pcrs())
    pcrs[8] = b.init_data_pcr(digest)
    evidence = CASE.evidence(quote=b.make_quote(CASE.ak, NONCE, pcrs))
    assert VERIFIER.evaluate(evidence, NONCE, digest)["init_data"] == pcrs[8].hex()
    reject(evidence, "init_data_mismatch", init_data=bytes(32))


# ---- the vTPM quote (shared with az-snp-vtpm; here to show the wiring)


def test_quote_signature_bit_flip_is_rejected() -> None:
    signature = bytearray(CASE.quote.signature)
    signature[-1] ^= 0x80
    reject(CASE.evidence(quote=replace(CASE.quote, signature=bytes(signature))), "bad_quote_signature")


def test_nonce_mismatch() -> None:
    reject(CASE.evidence(), "nonce_mismatch", nonce=NONCE[::-1])


def test_pcr_value_changed_after_quoting_is_rejected() -> None:
    pcrs = list(CASE.quote.pcrs)
    pcrs[23] = bytes(32)
    reject(CASE.evidence(quote=replace(CASE.quote, pcrs=tuple(pcrs))), "pcr_digest_mismatch")


# ---- the HCL report and the TD quote


def test_variable_data_not_in_the_td_quote_is_rejected() -> None:
    unbound = tdx.make_quote(CASE.pki, replace(CASE.spec, report_data=bytes(64)))
    reject(CASE.evidence(td_quote=unbound), "var_data_mismatch")


def test_hcl_report_wrapping_snp_is_refused() -> None:
    reject(CASE.evidence(hcl=b.hcl_report(b.TD_REPORT, CASE.var, report_type=2)), "hcl_report_type_mismatch")


def test_td_quote_altered_after_signing_is_rejected() -> None:
    quote = bytearray(CASE.td_quote)
    quote[48 + 136] ^= 1  # mr_td
    reject(CASE.evidence(td_quote=bytes(quote)), "bad_signature")


def test_td_quote_from_another_intel_is_rejected() -> None:
    other = b.make_az_tdx_case(pki=tdx.make_pki())
    with pytest.raises(VerificationError) as caught:
        VERIFIER.evaluate(other.evidence(), NONCE)
    assert caught.value.reason == "chain_invalid"


def test_td_quote_without_collateral_is_not_accepted() -> None:
    verifier = AzTdxVtpmVerifier(tdx_verifier(CASE.pki, with_collateral=False))
    reject(CASE.evidence(), "collateral_unavailable", verifier=verifier)


def test_debug_td_is_left_to_policy_as_upstream() -> None:
    case = b.make_az_tdx_case(pki=CASE.pki, spec=replace(CASE.spec, td_attributes=1))
    assert VERIFIER.evaluate(case.evidence(), NONCE)["td_attributes"]["debug"] is True


# ---- the JSON envelope


@pytest.mark.parametrize(
    "change",
    [
        {"td_quote": "not base64!"},
        {"td_quote": base64.urlsafe_b64encode(CASE.td_quote[:100]).decode()},
        {"td_quote": ""},
        {"hcl_report": 5},
        {"version": 0},
    ],
)
def test_malformed_documents(change: dict[str, object]) -> None:
    doc = json.loads(CASE.evidence())
    doc.update(change)
    reject(json.dumps(doc).encode(), "malformed_evidence")


def test_v0_takes_byte_arrays_only() -> None:
    doc = json.loads(CASE.evidence(0))
    doc["td_quote"] = base64.urlsafe_b64encode(CASE.td_quote).decode()
    reject(json.dumps(doc).encode(), "malformed_evidence")


def test_the_registry_builds_this_verifier() -> None:
    assert isinstance(VerifierRegistry().get("az-tdx-vtpm"), AzTdxVtpmVerifier)
