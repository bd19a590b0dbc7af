"""TPM 2.0 TPMS_ATTEST of a quote (TPM 2.0 Library Part 2, §10.12), parsed from bytes with no I/O.

Integers are big-endian; a TPM2B field is a u16 size and that many bytes. The TPM prefixes every
structure it signs with TPM_GENERATED_VALUE so a restricted key cannot be made to sign look-alike
data: a message without it, or one that is not a quote, is refused here, where it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import EvidenceFormatError, VerificationError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
MAX_PCR_BANKS = 16  # HASH_COUNT bound: more selections than hash algorithms is no real quote


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indices selected in it, ascending."""

    hash_alg: int
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class QuoteAttest:
    """The fields of a TPMS_ATTEST whose `attested` member is a TPMS_QUOTE_INFO."""

    qualified_signer: bytes
    extra_data: bytes  # the caller's nonce (qualifyingData)
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


class _Reader:
    """Sequential big-endian reads that fail as malformed evidence when the bytes run out."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise EvidenceFormatError(f"TPMS_ATTEST ends inside {what} (offset {self._offset})")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def tpm2b(self, what: str) -> bytes:
        return self.take(self.uint(2, f"{what} size"), what)

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise EvidenceFormatError(
                f"TPMS_ATTEST has {len(self._data) - self._offset} bytes after the quote info"
            )


def _selection(reader: _Reader) -> PcrSelection:
    hash_alg = reader.uint(2, "PCR selection hash")
    bitmap = reader.take(reader.uint(1, "PCR selection size"), "PCR selection bitmap")
    indices = tuple(
        8 * octet + bit for octet, value in enumerate(bitmap) for bit in range(8) if value >> bit & 1
    )
    return PcrSelection(hash_alg, indices)


def parse_quote_attest(message: bytes) -> QuoteAttest:
    """Decode a quote's TPMS_ATTEST; anything but a TPM-generated quote, exactly, is refused."""
    reader = _Reader(bytes(message))
    magic = reader.uint(4, "magic")
    if magic != TPM_GENERATED_VALUE:
        raise VerificationError(
            "bad_tpm_magic", f"TPMS_ATTEST magic is {magic:#010x}, not TPM_GENERATED {TPM_GENERATED_VALUE:#x}"
        )
    attest_type = reader.uint(2, "type")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        raise VerificationError(
            "not_a_quote", f"TPMS_ATTEST type is {attest_type:#06x}, not TPM_ST_ATTEST_QUOTE (0x8018)"
        )
    signer = reader.tpm2b("qualifiedSigner")
    extra_data = reader.tpm2b("extraData")
    clock = reader.uint(8, "clock")
    reset_count = reader.uint(4, "resetCount")
    restart_count = reader.uint(4, "restartCount")
    safe = reader.uint(1, "safe")
    if safe > 1:
        raise EvidenceFormatError(f"TPMS_CLOCK_INFO.safe is {safe}, not a TPMI_YES_NO")
    firmware_version = reader.uint(8, "firmwareVersion")
    count = reader.uint(4, "PCR selection count")
    if count > MAX_PCR_BANKS:
        raise EvidenceFormatError(f"TPML_PCR_SELECTION has {count} entries (at most {MAX_PCR_BANKS})")
    selections = tuple(_selection(reader) for _ in range(count))
    pcr_digest = reader.tpm2b("pcrDigest")
    reader.finish()
    return QuoteAttest(
        qualified_signer=signer,
        extra_data=extra_data,
        clock=clock,
        reset_count=reset_count,
        restart_count=restart_count,
        safe=bool(safe),
        firmware_version=firmware_version,
        pcr_selections=selections,
        pcr_digest=pcr_digest,
    )
