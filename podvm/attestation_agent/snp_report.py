"""SEV-SNP report bytes -> the evidence JSON Trustee expects (sans-IO).

The KBS's SNP verifier takes `{"attestation_report": ..., "cert_chain": [...] | null}` in the serde
shape of the `virtee/sev` crate (upstream's attester serialises its `AttestationReport`): integers for
scalar fields, byte arrays as lists of integers, TCB versions as objects (Turin adds `fmc`), firmware
versions as `{major, minor, build}`, the signature as `{"r": [72], "s": [72]}`. The certificate table
(`auxblob`, or the extended report's certificate buffer) is the GHCB one: 24-byte entries of GUID
(RFC 4122 byte order), offset and length (little-endian), closed by an all-zero entry.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from podvm.attestation_agent.errors import AttesterError

REPORT_SIZE = 0x4A0
OFF_REPORT_DATA = 0x050
OFF_HOST_DATA = 0x0C0
HOST_DATA_SIZE = 32
_TURIN_FAMILY = 0x1A

_SIGNATURE = 0x2A0
_SIGNATURE_COMPONENT = 72

CERT_GUIDS = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}
_CERT_ENTRY = struct.Struct("<16sII")
MAX_CERT_ENTRIES = 64


class SnpReportError(AttesterError):
    """The firmware's report or certificate table is malformed."""


def report_to_json(raw: bytes) -> dict[str, Any]:
    """The sev-crate JSON of a raw 1184-byte report, fields in the crate's order."""
    if len(raw) != REPORT_SIZE:
        raise SnpReportError(f"SNP report is {len(raw)} bytes, expected {REPORT_SIZE}")
    version = _u32(raw, 0x000)
    has_cpuid = version >= 3
    turin = has_cpuid and raw[0x188] == _TURIN_FAMILY
    doc: dict[str, Any] = {
        "version": version,
        "guest_svn": _u32(raw, 0x004),
        "policy": _u64(raw, 0x008),
        "family_id": _bytes(raw, 0x010, 16),
        "image_id": _bytes(raw, 0x020, 16),
        "vmpl": _u32(raw, 0x030),
        "sig_algo": _u32(raw, 0x034),
        "current_tcb": _tcb(raw, 0x038, turin),
        "plat_info": _u64(raw, 0x040),
        "key_info": _u32(raw, 0x048),
        "report_data": _bytes(raw, OFF_REPORT_DATA, 64),
        "measurement": _bytes(raw, 0x090, 48),
        "host_data": _bytes(raw, OFF_HOST_DATA, HOST_DATA_SIZE),
        "id_key_digest": _bytes(raw, 0x0E0, 48),
        "author_key_digest": _bytes(raw, 0x110, 48),
        "report_id": _bytes(raw, 0x140, 32),
        "report_id_ma": _bytes(raw, 0x160, 32),
        "reported_tcb": _tcb(raw, 0x180, turin),
        "cpuid_fam_id": raw[0x188] if has_cpuid else None,
        "cpuid_mod_id": raw[0x189] if has_cpuid else None,
        "cpuid_step": raw[0x18A] if has_cpuid else None,
        "chip_id": _bytes(raw, 0x1A0, 64),
        "committed_tcb": _tcb(raw, 0x1E0, turin),
        "current": _firmware(raw, 0x1E8),
        "committed": _firmware(raw, 0x1EC),
        "launch_tcb": _tcb(raw, 0x1F0, turin),
    }
    if version >= 5:
        doc["launch_mit_vector"] = _u64(raw, 0x1F8)
        doc["current_mit_vector"] = _u64(raw, 0x200)
    doc["signature"] = {
        "r": _bytes(raw, _SIGNATURE, _SIGNATURE_COMPONENT),
        "s": _bytes(raw, _SIGNATURE + _SIGNATURE_COMPONENT, _SIGNATURE_COMPONENT),
    }
    return doc


def report_data_of(raw: bytes) -> bytes:
    return raw[OFF_REPORT_DATA : OFF_REPORT_DATA + 64]


def host_data_of(raw: bytes) -> bytes:
    return raw[OFF_HOST_DATA : OFF_HOST_DATA + HOST_DATA_SIZE]


def parse_cert_table(blob: bytes) -> list[tuple[str | dict[str, str], bytes]]:
    """(cert_type, DER) pairs; cert_type is "VCEK"/"ASK"/... or `{"OTHER": "<uuid>"}` (sev serde)."""
    entries: list[tuple[str | dict[str, str], bytes]] = []
    offset = 0
    while True:
        if offset + _CERT_ENTRY.size > len(blob):
            raise SnpReportError("SNP certificate table has no terminating all-zero entry")
        guid_bytes, cert_offset, length = _CERT_ENTRY.unpack_from(blob, offset)
        if guid_bytes == bytes(16) and cert_offset == 0 and length == 0:
            return entries
        if len(entries) == MAX_CERT_ENTRIES:
            raise SnpReportError(f"SNP certificate table has more than {MAX_CERT_ENTRIES} entries")
        if cert_offset + length > len(blob) or length == 0:
            raise SnpReportError("SNP certificate table entry points outside the table")
        guid = uuid.UUID(bytes=guid_bytes)
        cert_type: str | dict[str, str] = CERT_GUIDS.get(guid) or {"OTHER": str(guid)}
        entries.append((cert_type, blob[cert_offset : cert_offset + length]))
        offset += _CERT_ENTRY.size


def cert_chain_to_json(entries: list[tuple[str | dict[str, str], bytes]]) -> list[dict[str, Any]]:
    return [{"cert_type": cert_type, "data": list(data)} for cert_type, data in entries]


def snp_evidence(raw_report: bytes, cert_table: bytes | None) -> dict[str, Any]:
    """The evidence document: report plus the certificate chain (null without a table)."""
    chain = cert_chain_to_json(parse_cert_table(cert_table)) if cert_table else None
    return {"attestation_report": report_to_json(raw_report), "cert_chain": chain}


def _bytes(raw: bytes, offset: int, size: int) -> list[int]:
    return list(raw[offset : offset + size])


def _tcb(report: bytes, offset: int, turin: bool) -> dict[str, int | None]:
    raw = report[offset : offset + 8]
    if turin:
        return {"fmc": raw[0], "bootloader": raw[1], "tee": raw[2], "snp": raw[3], "microcode": raw[7]}
    return {"fmc": None, "bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


def _firmware(raw: bytes, offset: int) -> dict[str, int]:
    return {"major": raw[offset + 2], "minor": raw[offset + 1], "build": raw[offset]}


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def _u64(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], "little")
