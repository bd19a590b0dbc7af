"""SGX DCAP quote v3 parsing (Intel SGX ECDSA Quote Library API, appendix: quote format).

Pure over bytes. Layout: header (48; TEE type 0, reserved = QE SVN u16 | PCE SVN u16) | ISV
enclave report (384) | u32 signature-data length | signature data, whose QE report follows the
attestation key directly: unlike TDX v4/v5 there is no type-6 wrapper (`verifier.dcap.quote`).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.dcap.quote import (
    ENCLAVE_REPORT_SIZE,
    HEADER_SIZE,
    DcapQuote,
    EnclaveReport,
    signature_data_end,
    signature_parts,
)
from verifier.dcap.quote import parse_header as dcap_parse_header

SGX = "SGX"
TEE_TYPE_SGX = 0
BODY_END = HEADER_SIZE + ENCLAVE_REPORT_SIZE


@dataclass(frozen=True, slots=True)
class SgxQuote(DcapQuote):
    body: EnclaveReport  # the ISV enclave's report


def parse_quote(data: bytes) -> SgxQuote:
    """Split an SGX quote v3 into its parts. Structure only: nothing here is trusted yet."""
    header = dcap_parse_header(data, {3: TEE_TYPE_SGX}, SGX)
    sig_end = signature_data_end(data, BODY_END, SGX)
    return SgxQuote(
        header,
        data[:BODY_END],
        *signature_parts(data, BODY_END + 4, sig_end, wrapped=False, tee=SGX),
        body=EnclaveReport(data[HEADER_SIZE:BODY_END]),
    )
