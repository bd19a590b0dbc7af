"""What every Intel DCAP quote shares (Intel SGX/TDX DCAP Quoting Library API, quote format).

Pure over bytes. Header (48): version u16, attestation key type u16, TEE type u32, 4 reserved
bytes (SGX v3: QE SVN, PCE SVN), QE vendor id (16), user data (20). After the TEE's report body
comes a u32 signature-data length and the signature data: quote signature (64, raw r||s) |
attestation key (64, raw P-256 x||y) | [v4/v5 only: u16 type 6, u32 length] QE report (384) | QE
report signature (64) | u16 auth length | auth data | u16 type 5, u32 length, PEM chain PCK leaf,
PCK Platform/Processor CA, Root CA.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from verifier.errors import EvidenceFormatError, VerificationError

HEADER_SIZE = 48
ATT_KEY_TYPE_ECDSA_P256 = 2
ENCLAVE_REPORT_SIZE = 384
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    raw: bytes  # the 48 header bytes (att_key_type, tee_type, reserved, QE vendor id, user data)


# (claim name, offset, size) of an SGX enclave report, named as upstream's SGX claims name them.
ENCLAVE_REPORT_FIELDS = (
    ("cpu_svn", 0, 16),
    ("misc_select", 16, 4),
    ("reserved1", 20, 12),
    ("isv_ext_prod_id", 32, 16),
    ("attributes.flags", 48, 8),
    ("attributes.xfrm", 56, 8),
    ("mr_enclave", 64, 32),
    ("reserved2", 96, 32),
    ("mr_signer", 128, 32),
    ("reserved3", 160, 32),
    ("config_id", 192, 64),
    ("isv_prod_id", 256, 2),
    ("isv_svn", 258, 2),
    ("config_svn", 260, 2),
    ("reserved4", 262, 42),
    ("isv_family_id", 304, 16),
    ("report_data", 320, 64),
)
ATTRIBUTE_DEBUG = 0x02  # SGX ATTRIBUTES.FLAGS bit 1: the enclave can be debugged


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """An SGX enclave report (384 bytes): an SGX quote's body, and every quote's QE report."""

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
    def debug(self) -> bool:
        return bool(self.raw[48] & ATTRIBUTE_DEBUG)

    @property
    def mr_enclave(self) -> bytes:
        return self.raw[64:96]

    @property
    def mr_signer(self) -> bytes:
        return self.raw[128:160]

    @property
    def config_id(self) -> bytes:
        return self.raw[192:256]

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
class DcapQuote:
    """The parts of a quote the DCAP checks need, whatever the TEE's body."""

    header: QuoteHeader
    signed_data: bytes  # what the attestation key signs: everything before the signature data
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def need(data: bytes, end: int, what: str, tee: str) -> None:
    if end > len(data):
        raise EvidenceFormatError(f"{tee} quote truncated in {what}: needs {end} bytes, has {len(data)}")


def parse_header(data: bytes, tee_types: Mapping[int, int], tee: str) -> QuoteHeader:
    """The header of a `tee` quote; `tee_types` maps each supported version to its TEE type."""
    need(data, HEADER_SIZE, "header", tee)
    version, att_key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    if version not in tee_types:
        supported = " and ".join(map(str, sorted(tee_types)))
        raise VerificationError(
            "unsupported_version", f"{tee} quote version {version} is not supported ({supported})"
        )
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise VerificationError(
            "unsupported_quote", f"attestation key type {att_key_type} is not ECDSA-P256 (2)"
        )
    if tee_type != tee_types[version]:
        raise VerificationError(
            "unsupported_quote", f"tee_type 0x{tee_type:x} is not {tee} (0x{tee_types[version]:x})"
        )
    return QuoteHeader(version, data[:HEADER_SIZE])


def signature_data_end(data: bytes, body_end: int, tee: str) -> int:
    """Where the signature data after the body ends; nothing but zero padding may follow."""
    need(data, body_end + 4, "report body", tee)
    end = body_end + 4 + u32(data, body_end)
    need(data, end, "signature data", tee)
    if any(data[end:]):
        raise EvidenceFormatError(f"{len(data) - end} unexpected bytes after the signature data")
    return end


SignatureParts = tuple[bytes, bytes, EnclaveReport, bytes, bytes, bytes]


def signature_parts(data: bytes, start: int, end: int, *, wrapped: bool, tee: str) -> SignatureParts:
    """The `DcapQuote` fields from `signature` on, out of the signature data at data[start:end], cut
    out in place (the PCK chain is a few KB). `wrapped`: the QE report comes inside type-6
    certification data (v4/v5)."""
    cert = start + 128
    if wrapped:
        cert += 6
        need(data, cert, "signature data header", tee)
        cert_type, cert_len = u16(data, start + 128), u32(data, start + 130)
        if cert_type != CERT_DATA_QE_REPORT:
            raise VerificationError(
                "unsupported_quote",
                f"certification data type {cert_type} is not QE report certification data (6)",
            )
        if cert + cert_len != end:
            raise EvidenceFormatError(
                f"certification data length {cert_len} does not fill the signature data ({end - cert})"
            )
    report_end = cert + ENCLAVE_REPORT_SIZE
    need(data, report_end + 66, "QE report certification data", tee)
    auth_end = report_end + 66 + u16(data, report_end + 64)
    need(data, auth_end + 6, "QE authentication data", tee)
    inner_type, inner_len = u16(data, auth_end), u32(data, auth_end + 2)
    if inner_type != CERT_DATA_PCK_CHAIN:
        raise VerificationError(
            "unsupported_quote", f"QE certification data type {inner_type} is not a PCK chain (5)"
        )
    if auth_end + 6 + inner_len != end:
        raise EvidenceFormatError("PCK chain length does not match the certification data length")
    chain_end = end
    while chain_end > auth_end + 6 and data[chain_end - 1] == 0:  # the chain may be NUL-terminated
        chain_end -= 1
    return (
        data[start : start + 64],
        data[start + 64 : start + 128],
        EnclaveReport(data[cert:report_end]),
        data[report_end : report_end + 64],
        data[report_end + 66 : auth_end],
        data[auth_end + 6 : chain_end],
    )
