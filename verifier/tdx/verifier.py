"""The Intel TDX verifier: upstream's `tdx` evidence in, claims out.

The DCAP checks (PCK chain, QE report, quote signature, collateral, TCB level with the TDX module)
are `verifier.dcap.verifier`'s. Only after them come the bindings the relying party asked for:
report data, init data (MR_CONFIG_ID), and the event log replay against the RTMRs.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from verifier.base import Claims
from verifier.dcap.collateral import TDX, IsvLevel
from verifier.dcap.evidence import b64, fit
from verifier.dcap.pck import PckInfo
from verifier.dcap.store import Collateral
from verifier.dcap.tcb import TcbResult
from verifier.dcap.verifier import DcapOptions, DcapVerifier, VerifiedQuote
from verifier.errors import EvidenceFormatError, VerificationError
from verifier.tdx import claims as tdx_claims
from verifier.tdx import eventlog
from verifier.tdx.quote import Quote, parse_quote
from verifier.tdx.tcb import evaluate_tcb

REPORT_DATA_SIZE = 64
INIT_DATA_SIZE = 48

TdxOptions = DcapOptions  # what the TDX verifier enforces itself: the DCAP options


def parse_evidence(
    evidence: bytes, decode_quote: Callable[[object, str], bytes] = b64
) -> tuple[bytes, bytes | None]:
    """Upstream's `{"cc_eventlog": "<b64>" | null, "quote": "<b64>"}`: (quote, CCEL or None)."""
    try:
        doc = orjson.loads(evidence)
    except (ValueError, RecursionError) as exc:
        raise EvidenceFormatError(f"TDX evidence is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "quote" not in doc:
        raise EvidenceFormatError("TDX evidence must be an object with a 'quote'")
    quote = decode_quote(doc["quote"], "quote")
    if not quote:
        raise EvidenceFormatError("TDX quote is empty")
    ccel = doc.get("cc_eventlog")
    return quote, b64(ccel, "cc_eventlog") if ccel else None


class TdxVerifier(DcapVerifier[Quote]):
    """Verifier for tee `tdx`; `verify_quote` is the part the Azure TDX vTPM verifier reuses."""

    tee = "tdx"
    dcap_tee = TDX

    def parse_quote(self, raw: bytes) -> Quote:
        return parse_quote(raw)

    def _platform_tcb(self, quote: Quote) -> tuple[bytes | int, ...]:
        # Body type; TEE TCB SVN, MR_SEAM, MRSIGNER_SEAM, SEAM attributes (+ TDX 1.5 TEE TCB SVN2).
        return quote.body_type, quote.body.raw[:120], quote.body.raw[584:600]

    def _evaluate_tcb(
        self, collateral: Collateral, pck: PckInfo, quote: Quote, qe_level: IsvLevel | None
    ) -> TcbResult:
        return evaluate_tcb(collateral.tcb_info, pck.extension, quote.body, quote.body_type, qe_level)

    def _debug(self, quote: Quote) -> str | None:
        return "the TD runs in debug mode" if quote.body.td_attributes[0] & 1 else None

    @staticmethod
    def quote_claims(verified: VerifiedQuote[Quote]) -> Claims:
        return tdx_claims.quote_claims(verified)

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        """Verify upstream-shaped `tdx` evidence; the claims are upstream's (see `claims`)."""
        raw_quote, ccel = parse_evidence(evidence, self._decode_quote)
        verified = self.verify_quote(raw_quote)
        body = verified.quote.body
        if body.report_data != fit(expected_report_data, REPORT_DATA_SIZE):
            raise VerificationError("report_data_mismatch", "quote report data is not the expected one")
        if expected_init_data_hash is not None and body.mr_config_id != fit(
            expected_init_data_hash, INIT_DATA_SIZE
        ):
            raise VerificationError("init_data_mismatch", "MR_CONFIG_ID is not the expected init data hash")
        claims = self.quote_claims(verified)
        if ccel is not None:
            events = eventlog.parse_ccel(ccel)
            for index, (replayed, quoted) in enumerate(zip(eventlog.replay(events), body.rtmrs, strict=True)):
                if replayed != quoted:
                    raise VerificationError(
                        "rtmr_mismatch",
                        f"event log replays RTMR{index} to {replayed.hex()}, the quote has {quoted.hex()}",
                    )
            claims["uefi_event_logs"] = eventlog.event_claims(events)
        return claims
