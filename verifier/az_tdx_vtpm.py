"""The `az-tdx-vtpm` verifier: an Azure TDX confidential VM attesting through its paravisor's vTPM.

Upstream's steps: the TPM quote is signed by the AK in the HCL variable data, its nonce is the
expected report data, its PCR digest covers the PCRs sent; the TD quote passes DCAP verification;
SHA-256 of the variable data is the TD quote's REPORT_DATA[0:32]; evidence v2's user-data carries
the report data; init data is bound through PCR8. The HCL's own TDREPORT is not used: the TD quote
is the hardware's signed statement. Everything that needs no collateral is checked before the
DCAP verification (all must pass either way), so bad evidence never costs a collateral fetch.
"""

from __future__ import annotations

from verifier.base import Claims
from verifier.tdx.quote import parse_quote
from verifier.tdx.verifier import TdxVerifier
from verifier.vtpm.azure import VtpmEvidence, add_tpm_claims, check_vtpm, parse_hcl_of
from verifier.vtpm.encoding import b64url_bytes, byte_array
from verifier.vtpm.evidence import field, load_document, tpm_quote
from verifier.vtpm.hcl import ReportType
from verifier.vtpm.quote import check_init_data

_WHAT = "Azure TDX vTPM evidence"


def parse_evidence(evidence: bytes) -> tuple[VtpmEvidence, bytes]:
    """(the vTPM parts, the raw TD quote): v1/v2 send b64url, v0 byte arrays under the same names."""
    doc, version = load_document(evidence, _WHAT)
    decode = byte_array if version == 0 else b64url_bytes
    quote = tpm_quote(field(doc, "tpm_quote", _WHAT), version)
    hcl_raw = decode(field(doc, "hcl_report", _WHAT), "HCL report")
    td_quote = decode(field(doc, "td_quote", _WHAT), "TD quote")
    return VtpmEvidence(version, quote, parse_hcl_of(hcl_raw, ReportType.TDX)), td_quote


class AzTdxVtpmVerifier:
    """Verifier for tee `az-tdx-vtpm`; the TD quote goes to a `TdxVerifier` (its collateral source
    and caches), by default one asking Intel's PCS as upstream does."""

    tee = "az-tdx-vtpm"

    def __init__(self, tdx: TdxVerifier | None = None) -> None:
        self._tdx = tdx if tdx is not None else TdxVerifier()

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        parts, raw_quote = parse_evidence(evidence)
        td_report_data = parse_quote(raw_quote).body.report_data
        checked = check_vtpm(parts, expected_report_data, td_report_data, "the TD quote's")
        check_init_data(checked.pcrs, expected_init_data_hash)
        verified = self._tdx.verify_quote(raw_quote)
        return add_tpm_claims(self._tdx.quote_claims(verified), checked)
