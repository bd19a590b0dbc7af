"""TDX quote v4/v5 parsing (Intel TDX DCAP Quoting Library API, appendix: quote format).

Pure over bytes. Layout: header (48) | [v5: body type u16, body size u32] | TD report body (584
TDX 1.0, 648 TDX 1.5) | u32 signature-data length | signature data, whose QE report comes inside
type-6 certification data (see `verifier.dcap.quote`).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.dcap.quote import (
    HEADER_SIZE,
    DcapQuote,
    QuoteHeader,
    need,
    signature_data_end,
    signature_parts,
    u16,
    u32,
)
from verifier.dcap.quote import parse_header as dcap_parse_header
from verifier.errors import EvidenceFormatError, VerificationError

TEE_TYPE_TDX = 0x81
BODY_TYPE_TDX10 = 2
BODY_TYPE_TDX15 = 3
BODY_SIZES = {BODY_TYPE_TDX10: 584, BODY_TYPE_TDX15: 648}
MR_SIZE = 48
TDX = "TDX"


# (claim name, offset, size) of the TD report body fields; TDX 1.5 appends two.
TDX10_FIELDS = (
    ("tcb_svn", 0, 16),
    ("mr_seam", 16, 48),
    ("mrsigner_seam", 64, 48),
    ("seam_attributes", 112, 8),
    ("td_attributes", 120, 8),
    ("xfam", 128, 8),
    ("mr_td", 136, 48),
    ("mr_config_id", 184, 48),
    ("mr_owner", 232, 48),
    ("mr_owner_config", 280, 48),
    ("rtmr_0", 328, 48),
    ("rtmr_1", 376, 48),
    ("rtmr_2", 424, 48),
    ("rtmr_3", 472, 48),
    ("report_data", 520, 64),
)
TDX15_FIELDS = (*TDX10_FIELDS, ("tee_tcb_svn2", 584, 16), ("mr_servicetd", 600, 48))


@dataclass(frozen=True, slots=True)
class TdReport:
    """The TD report body a quote carries (TDX 1.0: 584 bytes, TDX 1.5: 648 bytes)."""

    raw: bytes

    @property
    def fields(self) -> tuple[tuple[str, int, int], ...]:
        return TDX15_FIELDS if len(self.raw) == BODY_SIZES[BODY_TYPE_TDX15] else TDX10_FIELDS

    @property
    def tee_tcb_svn(self) -> bytes:
        return self.raw[0:16]

    @property
    def mrsigner_seam(self) -> bytes:
        return self.raw[64:112]

    @property
    def seam_attributes(self) -> bytes:
        return self.raw[112:120]

    @property
    def td_attributes(self) -> bytes:
        return self.raw[120:128]

    @property
    def mr_td(self) -> bytes:
        return self.raw[136:184]

    @property
    def mr_config_id(self) -> bytes:
        return self.raw[184:232]

    @property
    def rtmrs(self) -> tuple[bytes, ...]:
        return tuple(self.raw[offset : offset + MR_SIZE] for offset in (328, 376, 424, 472))

    @property
    def report_data(self) -> bytes:
        return self.raw[520:584]

    @property
    def tee_tcb_svn2(self) -> bytes | None:
        return self.raw[584:600] if len(self.raw) > 584 else None


@dataclass(frozen=True, slots=True)
class Quote(DcapQuote):
    body_type: int  # v4 quotes always carry a TDX 1.0 body
    body_size: int
    body: TdReport


def parse_header(data: bytes) -> QuoteHeader:
    return dcap_parse_header(data, {4: TEE_TYPE_TDX, 5: TEE_TYPE_TDX}, TDX)


def parse_quote(data: bytes) -> Quote:
    """Split a TDX quote into its parts. Structure only: nothing here is trusted yet."""
    header = parse_header(data)
    offset = HEADER_SIZE
    if header.version == 4:
        body_type, body_size = BODY_TYPE_TDX10, BODY_SIZES[BODY_TYPE_TDX10]
    else:
        need(data, offset + 6, "v5 body descriptor", TDX)
        body_type, body_size = u16(data, offset), u32(data, offset + 2)
        offset += 6
        if body_type not in BODY_SIZES:
            raise VerificationError(
                "unsupported_quote", f"v5 body type {body_type} is not a TDX report (2 or 3)"
            )
        if body_size != BODY_SIZES[body_type]:
            raise EvidenceFormatError(
                f"v5 body size {body_size} does not match type {body_type} ({BODY_SIZES[body_type]})"
            )
    body_end = offset + body_size
    sig_end = signature_data_end(data, body_end, TDX)
    return Quote(
        header,
        data[:body_end],
        *signature_parts(data, body_end + 4, sig_end, wrapped=True, tee=TDX),
        body_type=body_type,
        body_size=body_size,
        body=TdReport(data[offset:body_end]),
    )
