"""The SEV-SNP ATTESTATION_REPORT (1184 bytes, little-endian), parsed from bytes with no I/O.

Layout per AMD's SNP firmware ABI (Table "ATTESTATION_REPORT"). The report is kept as its raw bytes,
since those are what the VCEK signed; the fields are read from them. TCB_VERSION fields are 8 raw
bytes whose meaning depends on the processor generation (Turin moved the fields), so they are
decoded only once the generation is known.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from verifier.errors import EvidenceFormatError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72

# Field offsets (and sizes where they vary), shared with the JSON evidence encoder.
OFF_VERSION = 0x000
OFF_GUEST_SVN = 0x004
OFF_POLICY = 0x008
OFF_FAMILY_ID = 0x010
OFF_IMAGE_ID = 0x020
OFF_VMPL = 0x030
OFF_SIG_ALGO = 0x034
OFF_CURRENT_TCB = 0x038
OFF_PLAT_INFO = 0x040
OFF_KEY_INFO = 0x048
OFF_REPORT_DATA = 0x050
OFF_MEASUREMENT = 0x090
OFF_HOST_DATA = 0x0C0
OFF_ID_KEY_DIGEST = 0x0E0
OFF_AUTHOR_KEY_DIGEST = 0x110
OFF_REPORT_ID = 0x140
OFF_REPORT_ID_MA = 0x160
OFF_REPORTED_TCB = 0x180
OFF_CPUID_FAM_ID = 0x188
OFF_CPUID_MOD_ID = 0x189
OFF_CPUID_STEP = 0x18A
OFF_CHIP_ID = 0x1A0
OFF_COMMITTED_TCB = 0x1E0
OFF_CURRENT_VERSION = 0x1E8  # build, minor, major
OFF_COMMITTED_VERSION = 0x1EC  # build, minor, major
OFF_LAUNCH_TCB = 0x1F0
OFF_LAUNCH_MIT_VECTOR = 0x1F8
OFF_CURRENT_MIT_VECTOR = 0x200
OFF_SIGNATURE_R = 0x2A0
OFF_SIGNATURE_S = OFF_SIGNATURE_R + SIGNATURE_COMPONENT_SIZE

# Report versions that carry the CPUID fields / the mitigation vectors.
FIRST_VERSION_WITH_CPUID = 3
FIRST_VERSION_WITH_MIT_VECTORS = 5

SIG_ALGO_ECDSA_P384_SHA384 = 1


class Generation(enum.Enum):
    """EPYC product lines with SEV-SNP; the value is AMD's KDS spelling."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def from_cpuid(cls, family: int, model: int) -> Generation | None:
        """The product line of a CPUID family/model pair (report v3+), None when not an SNP part."""
        if family == 0x19:
            if model <= 0x0F:
                return cls.MILAN
            if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
                return cls.GENOA
        elif family == 0x1A and model <= 0x11:
            return cls.TURIN
        return None


class SigningKey(enum.IntEnum):
    """KEY_INFO.SIGNING_KEY: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class TcbVersion:
    """A decoded TCB_VERSION; `fmc` is set only on Turin and later."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: bytes, generation: Generation) -> TcbVersion:
        if generation is Generation.TURIN:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def encode(self) -> bytes:
        """The 8 raw bytes: Turin layout when `fmc` is set, the Milan/Genoa layout otherwise."""
        if self.fmc is not None:
            return bytes([self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode])
        return bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode])


@dataclass(frozen=True)
class FirmwareVersion:
    major: int
    minor: int
    build: int

    @classmethod
    def decode(cls, raw: bytes) -> FirmwareVersion:
        return cls(major=raw[2], minor=raw[1], build=raw[0])


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def _u64(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], "little")


@dataclass(frozen=True)
class SnpReport:
    """One attestation report; `raw` is authoritative, the other fields are read from it."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    vmpl: int
    sig_algo: int
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    chip_id: bytes
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    current_version: FirmwareVersion
    committed_version: FirmwareVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signature_rs(self) -> tuple[int, int]:
        """ECDSA r and s (each stored as a 72-byte little-endian integer)."""
        r = self.raw[OFF_SIGNATURE_R : OFF_SIGNATURE_R + SIGNATURE_COMPONENT_SIZE]
        s = self.raw[OFF_SIGNATURE_S : OFF_SIGNATURE_S + SIGNATURE_COMPONENT_SIZE]
        return int.from_bytes(r, "little"), int.from_bytes(s, "little")

    @property
    def signing_key(self) -> int:
        return (self.key_info >> 2) & 0x7

    @property
    def chip_id_masked(self) -> bool:
        """MASK_CHIP_ID was set: the firmware reported zeros instead of the chip id."""
        return not any(self.chip_id)

    @property
    def cpuid_generation(self) -> Generation | None:
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return Generation.from_cpuid(self.cpuid_family, self.cpuid_model)

    @property
    def chip_id_turin_like(self) -> bool:
        """Turin reports carry an 8-byte chip id, zero-padded: the only product hint a v2 report has."""
        return not self.chip_id_masked and not any(self.chip_id[8:])

    def tcb(self, offset: int, generation: Generation) -> TcbVersion:
        """The TCB_VERSION at `offset` (OFF_REPORTED_TCB, OFF_CURRENT_TCB, ...)."""
        return TcbVersion.decode(self.raw[offset : offset + 8], generation)

    def reported_tcb(self, generation: Generation) -> TcbVersion:
        """The TCB the signing VCEK was derived for."""
        return self.tcb(OFF_REPORTED_TCB, generation)

    # GUEST_POLICY bits
    @property
    def policy_abi_minor(self) -> int:
        return self.policy & 0xFF

    @property
    def policy_abi_major(self) -> int:
        return (self.policy >> 8) & 0xFF

    @property
    def policy_smt_allowed(self) -> bool:
        return bool(self.policy >> 16 & 1)

    @property
    def policy_migrate_ma(self) -> bool:
        return bool(self.policy >> 18 & 1)

    @property
    def policy_debug_allowed(self) -> bool:
        return bool(self.policy >> 19 & 1)

    @property
    def policy_single_socket(self) -> bool:
        return bool(self.policy >> 20 & 1)

    # PLATFORM_INFO bits
    @property
    def platform_smt_enabled(self) -> bool:
        return bool(self.platform_info & 1)

    @property
    def platform_tsme_enabled(self) -> bool:
        return bool(self.platform_info >> 1 & 1)


def parse_report(raw: bytes) -> SnpReport:
    """Read every field of a 1184-byte report; version policy is the verifier's business."""
    if len(raw) != REPORT_SIZE:
        raise EvidenceFormatError(f"an SNP report is {REPORT_SIZE} bytes, got {len(raw)}")
    raw = bytes(raw)
    version = _u32(raw, OFF_VERSION)
    has_cpuid = version >= FIRST_VERSION_WITH_CPUID
    has_mit = version >= FIRST_VERSION_WITH_MIT_VECTORS
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=_u32(raw, OFF_GUEST_SVN),
        policy=_u64(raw, OFF_POLICY),
        vmpl=_u32(raw, OFF_VMPL),
        sig_algo=_u32(raw, OFF_SIG_ALGO),
        platform_info=_u64(raw, OFF_PLAT_INFO),
        key_info=_u32(raw, OFF_KEY_INFO),
        report_data=raw[OFF_REPORT_DATA : OFF_REPORT_DATA + 64],
        measurement=raw[OFF_MEASUREMENT : OFF_MEASUREMENT + 48],
        host_data=raw[OFF_HOST_DATA : OFF_HOST_DATA + 32],
        chip_id=raw[OFF_CHIP_ID : OFF_CHIP_ID + 64],
        cpuid_family=raw[OFF_CPUID_FAM_ID] if has_cpuid else None,
        cpuid_model=raw[OFF_CPUID_MOD_ID] if has_cpuid else None,
        cpuid_stepping=raw[OFF_CPUID_STEP] if has_cpuid else None,
        current_version=FirmwareVersion.decode(raw[OFF_CURRENT_VERSION : OFF_CURRENT_VERSION + 3]),
        committed_version=FirmwareVersion.decode(raw[OFF_COMMITTED_VERSION : OFF_COMMITTED_VERSION + 3]),
        launch_mit_vector=_u64(raw, OFF_LAUNCH_MIT_VECTOR) if has_mit else None,
        current_mit_vector=_u64(raw, OFF_CURRENT_MIT_VECTOR) if has_mit else None,
    )
