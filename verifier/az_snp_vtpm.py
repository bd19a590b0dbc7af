"""The `az-snp-vtpm` verifier: an Azure SEV-SNP confidential VM attesting through its paravisor's vTPM.

Steps (upstream's, in its order): the TPM quote is signed by the AK in the HCL variable data, its
nonce is the expected report data, its PCR digest covers the PCRs sent; SHA-256 of the variable data
is the SNP report's REPORT_DATA[0:32]; evidence v2's user-data carries the report data; the VCEK
sent with the evidence chains to AMD's pinned roots, its TCB is the reported TCB, it signed the
report, and the report is from VMPL 0 (all by the SNP verifier); init data is bound through PCR8.
"""

from __future__ import annotations

import base64

from verifier.base import Claims
from verifier.snp.report import parse_report
from verifier.snp.verifier import SnpVerifier
from verifier.vtpm.azure import VtpmEvidence, add_tpm_claims, check_vtpm, parse_hcl_of
from verifier.vtpm.encoding import b64url_bytes, byte_array, first_pem_certificate
from verifier.vtpm.evidence import field, load_document, tpm_quote
from verifier.vtpm.hcl import ReportType
from verifier.vtpm.quote import check_init_data

_WHAT = "Azure SNP vTPM evidence"
# Upstream's claims: the SNP report's, as strings, byte fields in standard base64, no chip id.
_STRING_CLAIMS = (
    "policy_abi_major",
    "policy_abi_minor",
    "policy_smt_allowed",
    "policy_migrate_ma",
    "policy_debug_allowed",
    "policy_single_socket",
    "reported_tcb_bootloader",
    "reported_tcb_tee",
    "reported_tcb_snp",
    "reported_tcb_microcode",
    "platform_tsme_enabled",
    "platform_smt_enabled",
)
_BASE64_CLAIMS = ("measurement", "report_data", "init_data")


def parse_evidence(evidence: bytes) -> tuple[VtpmEvidence, bytes]:
    """(the vTPM parts, the VCEK DER): v1/v2 send b64url DER, v0 a PEM whose first certificate is it."""
    doc, version = load_document(evidence, _WHAT)
    if version == 0:
        quote = tpm_quote(field(doc, "quote", _WHAT), version)
        hcl_raw = byte_array(field(doc, "report", _WHAT), "HCL report")
        vcek = first_pem_certificate(field(doc, "vcek", _WHAT), "VCEK")
    else:
        quote = tpm_quote(field(doc, "tpm_quote", _WHAT), version)
        hcl_raw = b64url_bytes(field(doc, "hcl_report", _WHAT), "HCL report")
        vcek = b64url_bytes(field(doc, "vcek", _WHAT), "VCEK")
    return VtpmEvidence(version, quote, parse_hcl_of(hcl_raw, ReportType.SNP)), vcek


def az_claims(snp_claims: Claims) -> Claims:
    """Upstream's `parse_tee_evidence_az` from the SNP verifier's claims."""
    claims: Claims = {}
    for name in _STRING_CLAIMS:
        value = snp_claims[name]
        claims[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    for name in _BASE64_CLAIMS:
        claims[name] = base64.b64encode(bytes.fromhex(snp_claims[name])).decode("ascii")
    return claims


class AzSnpVtpmVerifier:
    """Verifier for tee `az-snp-vtpm`; the VCEK always comes with the evidence, so no KDS is asked."""

    tee = "az-snp-vtpm"

    def __init__(self, snp: SnpVerifier | None = None) -> None:
        self._snp = snp if snp is not None else SnpVerifier(vcek_sources=[])

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        parts, vcek_der = parse_evidence(evidence)
        report = parse_report(parts.hcl.hw_report)
        checked = check_vtpm(parts, expected_report_data, report.report_data, "the SNP report's")
        snp_claims = self._snp.verify_report(report, vcek_der)
        check_init_data(checked.pcrs, expected_init_data_hash)
        return add_tpm_claims(az_claims(snp_claims), checked)
