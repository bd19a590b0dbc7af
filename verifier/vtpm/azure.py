"""The checks Azure's SNP and TDX confidential VMs share: the vTPM half of their evidence.

The chain of trust: the hardware report (verified by the TEE's own verifier) carries SHA-256 of the
HCL variable data in REPORT_DATA[0:32]; the variable data holds the vTPM's AK; the AK signs a TPM
quote whose extraData is the relying party's nonce and whose PCR digest covers the PCR values sent.
Each link is checked by a function here, so the two verifiers differ only in their hardware part.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.base import Claims
from verifier.errors import VerificationError
from verifier.vtpm.hcl import HclReport, ReportType, check_var_data_binding, parse_hcl_report
from verifier.vtpm.quote import INIT_DATA_PCR, CheckedQuote, TpmQuote, check_quote
from verifier.vtpm.vardata import check_user_data, parse_var_data


@dataclass(frozen=True, slots=True)
class VtpmEvidence:
    """The parts of Azure evidence both TEEs have: its version, the TPM quote and the HCL report."""

    version: int
    quote: TpmQuote
    hcl: HclReport


def parse_hcl_of(raw: bytes, expected: ReportType) -> HclReport:
    """An HCL report that must wrap the hardware report kind this verifier handles."""
    hcl = parse_hcl_report(raw)
    if hcl.report_type is not expected:
        raise VerificationError(
            "hcl_report_type_mismatch",
            f"the HCL report wraps a {hcl.report_type.name} report, this verifier takes {expected.name}",
        )
    return hcl


def check_vtpm(
    evidence: VtpmEvidence, expected_report_data: bytes, hw_report_data: bytes, hw_name: str
) -> CheckedQuote:
    """Upstream's steps in order: quote signed by the HCL AK, nonce, PCR digest, variable data in
    the hardware report's REPORT_DATA (`hw_report_data`, from `hw_name`), then, for evidence v2,
    the HCL user-data against the expected report data. The hardware report is verified apart."""
    var_data = parse_var_data(evidence.hcl.var_data)
    checked = check_quote(evidence.quote, var_data.ak_public_key(), expected_report_data)
    check_var_data_binding(evidence.hcl, hw_report_data, hw_name)
    if evidence.version >= 2:
        check_user_data(var_data, expected_report_data)
    return checked


def add_tpm_claims(claims: Claims, checked: CheckedQuote) -> Claims:
    """Upstream's `extend_claim`: `tpm.pcrNN` (hex), `init_data` = hex(PCR8) when quoted,
    `report_data` = hex(the quote's nonce)."""
    claims["tpm"] = {f"pcr{index:02d}": value.hex() for index, value in checked.pcrs.items()}
    pcr8 = checked.pcrs.get(INIT_DATA_PCR)
    if pcr8 is not None:
        claims["init_data"] = pcr8.hex()
    claims["report_data"] = checked.attest.extra_data.hex()
    return claims
