"""The Intel SGX verifier: upstream's `sgx` evidence (`{"quote": "<base64 quote v3>"}`) in, claims out.

The DCAP checks (PCK chain, QE report, quote signature, collateral with SGX TCB info and the QE
identity) are `verifier.dcap.verifier`'s; the TCB level is matched on the PCK's SGX components and
PCE SVN only. Then, as upstream: REPORT_DATA against the expected report data and CONFIGID (64
bytes) against the expected init data hash, each padded or cut to 64 bytes. A debug enclave
(ATTRIBUTES.DEBUG) is reported in the claims (`body["attributes.flags"]`) and refused when
`allow_debug` is off.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from verifier.base import Claims
from verifier.dcap.collateral import SGX, IsvLevel
from verifier.dcap.evidence import b64, fit
from verifier.dcap.pck import PckInfo
from verifier.dcap.store import Collateral
from verifier.dcap.tcb import TcbResult, evaluate_sgx_tcb
from verifier.dcap.verifier import DcapVerifier
from verifier.errors import EvidenceFormatError, VerificationError
from verifier.sgx import claims as sgx_claims
from verifier.sgx.quote import SgxQuote, parse_quote

REPORT_DATA_SIZE = 64
CONFIG_ID_SIZE = 64


def parse_evidence(evidence: bytes, decode_quote: Callable[[object, str], bytes] = b64) -> bytes:
    """Upstream's `SgxEvidence` `{"quote": "<standard base64>"}`: the raw quote."""
    try:
        doc = orjson.loads(evidence)
    except (ValueError, RecursionError) as exc:
        raise EvidenceFormatError(f"SGX evidence is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "quote" not in doc:
        raise EvidenceFormatError("SGX evidence must be an object with a 'quote'")
    quote = decode_quote(doc["quote"], "quote")
    if not quote:
        raise EvidenceFormatError("SGX quote is empty")
    return quote


class SgxVerifier(DcapVerifier[SgxQuote]):
    """Verifier for tee `sgx`."""

    tee = "sgx"
    dcap_tee = SGX

    def parse_quote(self, raw: bytes) -> SgxQuote:
        return parse_quote(raw)

    def _platform_tcb(self, quote: SgxQuote) -> tuple[bytes | int, ...]:
        return ()  # an SGX platform's TCB is the PCK's (and the QE report's)

    def _evaluate_tcb(
        self, collateral: Collateral, pck: PckInfo, quote: SgxQuote, qe_level: IsvLevel | None
    ) -> TcbResult:
        return evaluate_sgx_tcb(collateral.tcb_info, pck.extension, qe_level)

    def _debug(self, quote: SgxQuote) -> str | None:
        return "the enclave is a debug enclave (ATTRIBUTES.DEBUG)" if quote.body.debug else None

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        """Verify upstream-shaped `sgx` evidence; the claims are upstream's (see `claims`)."""
        verified = self.verify_quote(parse_evidence(evidence, self._decode_quote))
        body = verified.quote.body
        if body.report_data != fit(expected_report_data, REPORT_DATA_SIZE):
            raise VerificationError("report_data_mismatch", "REPORT_DATA is not the expected report data")
        if expected_init_data_hash is not None and body.config_id != fit(
            expected_init_data_hash, CONFIG_ID_SIZE
        ):
            raise VerificationError("init_data_mismatch", "CONFIGID is not the expected init data hash")
        return sgx_claims.quote_claims(verified)
