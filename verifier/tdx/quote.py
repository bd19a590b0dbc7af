"""TDX quote v4/v5 parsing (Intel TDX DCAP Quoting Library API, appendix: quote format).

Pure over bytes. Layout: header (48) | [v5: body type u16, body size u32] | TD report body (584
TDX 1.0, 648 TDX 1.5) | u32 signature-data length | signature data. Signature data: quote
signature (64, raw r||s) | attestation key (64, raw P-256 x||y) | certification data of type 6
(QE report certification data: QE report 384 | QE report signature 64 | u16 auth length | auth data
| certification data of type 5: PEM chain PCK leaf, PCK Platform/Processor CA, Root CA).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from verifier.errors import EvidenceFormatError, VerificationError

HEADER_SIZE = 48
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
BODY_TYPE_TDX10 = 2
BODY_TYPE_TDX15 = 3
BODY_SIZES = {BODY_TYPE_TDX10: 584, BODY_TYPE_TDX15: 648}
QE_REPORT_SIZE = 384
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
MR_SIZE = 48


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    raw: bytes  # the 48 header bytes (att_key_type, tee_type, reserved, QE vendor id, user data)


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
class EnclaveReport:
    """The SGX report of the quoting enclave (QE), signed by the PCK key."""

    raw: bytes

    @property
    def cpu_svn(self) -> bytes:
        return self.raw[0:16]

    @property
    def misc_select(self) -> bytes:
        return self.raw[16:20]

    @property
    def attributes(self) -> bytes:
        return self.raw[48:64]

    @property
    def mr_enclave(self) -> bytes:
        return self.raw[64:96]

    @property
    def mr_signer(self) -> bytes:
        return self.raw[128:160]

    @property
    def isv_prod_id(self) -> int:
        return int.from_bytes(self.raw[256:258], "little")

    @property
    def isv_svn(self) -> int:
        return int.from_bytes(self.raw[258:260], "little")

    @property
    def report_data(self) -> bytes:
        return self.raw[320:384]


@dataclass(frozen=True, slots=True)
class Quote:
    header: QuoteHeader
    body_type: int  # v4 quotes always carry a TDX 1.0 body
    body_size: int
    body: TdReport
    signed_data: bytes  # header (+ v5 type/size) + body: what the attestation key signs
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _need(data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise EvidenceFormatError(f"TDX quote truncated in {what}: needs {end} bytes, has {len(data)}")


def parse_header(data: bytes) -> QuoteHeader:
    _need(data, HEADER_SIZE, "header")
    version, att_key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    if version not in (4, 5):
        raise VerificationError(
            "unsupported_version", f"TDX quote version {version} is not supported (4 and 5 are)"
        )
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise VerificationError(
            "unsupported_quote", f"attestation key type {att_key_type} is not ECDSA-P256 (2)"
        )
    if tee_type != TEE_TYPE_TDX:
        raise VerificationError("unsupported_quote", f"tee_type 0x{tee_type:x} is not TDX (0x81)")
    return QuoteHeader(version, data[:HEADER_SIZE])


def parse_quote(data: bytes) -> Quote:
    """Split a TDX quote into its parts. Structure only: nothing here is trusted yet."""
    header = parse_header(data)
    offset = HEADER_SIZE
    if header.version == 4:
        body_type, body_size = BODY_TYPE_TDX10, BODY_SIZES[BODY_TYPE_TDX10]
    else:
        _need(data, offset + 6, "v5 body descriptor")
        body_type, body_size = _u16(data, offset), _u32(data, offset + 2)
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
    _need(data, body_end + 4, "report body")
    sig_end = body_end + 4 + _u32(data, body_end)
    _need(data, sig_end, "signature data")
    if any(data[sig_end:]):
        raise EvidenceFormatError(f"{len(data) - sig_end} unexpected bytes after the signature data")
    return Quote(
        header,
        body_type,
        body_size,
        TdReport(data[offset:body_end]),
        data[:body_end],
        *_signature_parts(data, body_end + 4, sig_end),
    )


def _signature_parts(
    data: bytes, start: int, end: int
) -> tuple[bytes, bytes, EnclaveReport, bytes, bytes, bytes]:
    """Signature, attestation key, QE report, its signature, QE auth data and PCK chain of the
    signature data at data[start:end], cut out in place (the PCK chain is a few KB)."""
    cert = start + 134  # QE report certification data, after signature, key and its own header
    _need(data, cert, "signature data header")
    cert_type, cert_len = _u16(data, start + 128), _u32(data, start + 130)
    if cert_type != CERT_DATA_QE_REPORT:
        raise VerificationError(
            "unsupported_quote",
            f"certification data type {cert_type} is not QE report certification data (6)",
        )
    if cert + cert_len != end:
        raise EvidenceFormatError(
            f"certification data length {cert_len} does not fill the signature data ({end - cert})"
        )
    report_end = cert + QE_REPORT_SIZE
    _need(data, report_end + 66, "QE report certification data")
    auth_end = report_end + 66 + _u16(data, report_end + 64)
    _need(data, auth_end + 6, "QE authentication data")
    inner_type, inner_len = _u16(data, auth_end), _u32(data, auth_end + 2)
    if inner_type != CERT_DATA_PCK_CHAIN:
        raise VerificationError(
            "unsupported_quote", f"QE certification data type {inner_type} is not a PCK chain (5)"
        )
    if auth_end + 6 + inner_len != end:
        raise EvidenceFormatError("PCK chain length does not match the QE certification data length")
    chain_end = end
    while chain_end > auth_end + 6 and data[chain_end - 1] == 0:  # the chain is NUL-terminated
        chain_end -= 1
    return (
        data[start : start + 64],
        data[start + 64 : start + 128],
        EnclaveReport(data[cert:report_end]),
        data[report_end : report_end + 64],
        data[report_end + 66 : auth_end],
        data[auth_end + 6 : chain_end],
    )
