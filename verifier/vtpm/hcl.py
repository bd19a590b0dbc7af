"""Azure's HCL report: the paravisor's wrapper around the hardware report, parsed with no I/O.

Layout (little-endian): header at 0x00 (`"HCLA"`, version, report size, request type, status,
3 reserved u32), the hardware report at 0x20 in a 1184-byte slot (an SNP report fills it, a TDX
TDREPORT takes its first 1024 bytes), the runtime-data header at 0x4C0 (data size, version, report
type 2 = SNP / 4 = TDX, hash type 1 = SHA-256, variable data size), then the variable data, a JSON
document, at 0x4D4. Only the variable data is bound to the hardware (its SHA-256 is the report's
REPORT_DATA[0:32]); every other header field is unsigned and serves only to find the parts.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

from verifier.errors import EvidenceFormatError, VerificationError

HCL_SIGNATURE = b"HCLA"
HW_REPORT_OFFSET = 0x20
HW_REPORT_SLOT = 1184
RUNTIME_HEADER_OFFSET = HW_REPORT_OFFSET + HW_REPORT_SLOT  # 0x4C0
VAR_DATA_OFFSET = RUNTIME_HEADER_OFFSET + 20  # 0x4D4
TD_REPORT_SIZE = 1024
HASH_TYPE_SHA256 = 1


class ReportType(enum.IntEnum):
    SNP = 2
    TDX = 4


@dataclass(frozen=True, slots=True)
class HclReport:
    raw: bytes
    report_type: ReportType
    var_data: bytes

    @property
    def hw_report(self) -> bytes:
        """The SNP report (1184 bytes) or TDREPORT (1024 bytes) the hardware produced."""
        size = TD_REPORT_SIZE if self.report_type is ReportType.TDX else HW_REPORT_SLOT
        return self.raw[HW_REPORT_OFFSET : HW_REPORT_OFFSET + size]

    @property
    def var_data_sha256(self) -> bytes:
        return hashlib.sha256(self.var_data).digest()


def parse_hcl_report(raw: bytes) -> HclReport:
    """Locate the hardware report and the variable data; refuse what cannot be an HCL report."""
    raw = bytes(raw)
    if len(raw) < VAR_DATA_OFFSET:
        raise EvidenceFormatError(f"an HCL report is at least {VAR_DATA_OFFSET} bytes, got {len(raw)}")
    if raw[:4] != HCL_SIGNATURE:
        raise EvidenceFormatError(f"HCL report signature is {raw[:4].hex()}, not 'HCLA'")
    _, _, report_type, hash_type, var_size = struct.unpack_from("<5I", raw, RUNTIME_HEADER_OFFSET)
    try:
        kind = ReportType(report_type)
    except ValueError:
        raise EvidenceFormatError(f"HCL report type {report_type} is neither SNP (2) nor TDX (4)") from None
    if hash_type != HASH_TYPE_SHA256:
        raise VerificationError(
            "unsupported_hash_type",
            f"HCL variable data hash type is {hash_type}, only SHA-256 (1) is supported",
        )
    end = VAR_DATA_OFFSET + var_size
    if end > len(raw):
        raise EvidenceFormatError(
            f"HCL variable data ({var_size} bytes) runs past the report's {len(raw)} bytes"
        )
    return HclReport(raw=raw, report_type=kind, var_data=raw[VAR_DATA_OFFSET:end])


def check_var_data_binding(hcl: HclReport, report_data: bytes, what: str) -> None:
    """SHA-256 of the variable data must open the hardware report's REPORT_DATA (`what` names it)."""
    digest = hcl.var_data_sha256
    if report_data[: len(digest)] != digest:
        raise VerificationError(
            "var_data_mismatch",
            f"SHA-256 of the HCL variable data is {digest.hex()}, {what} report_data starts "
            f"{report_data[: len(digest)].hex()}",
        )
