"""The CC event log (CCEL ACPI table, TCG crypto-agile format) of a TD: parse, replay, render.

The first record is a TCG_PCR_EVENT (SHA-1 layout) holding the "Spec ID Event03" header that
lists the digest algorithms and sizes; every later record is a TCG_PCR_EVENT2. CC measurement
register index 1..4 maps to RTMR0..3; replay extends SHA-384 digests from zero, skipping
EV_NO_ACTION records, which are informational by definition. Parsing stops at the 0xFF (or zero)
padding that fills the rest of the table.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from verifier.errors import EvidenceFormatError

EV_NO_ACTION = 0x3
TPM_ALG_SHA384 = 0x000C
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
RTMR_COUNT = 4

ALGORITHMS = {0x0004: "SHA-1", 0x000B: "SHA-256", 0x000C: "SHA-384", 0x000D: "SHA-512", 0x0012: "SM3"}
_HASHLIB = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}

EVENT_TYPES = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}
# Events whose data is text, and those that start with a one-byte-length description.
_TEXT_EVENTS = frozenset({0x1, 0x5, 0xC, 0xD, 0x12, 0x80000007})
_DESCRIBED_EVENTS = frozenset({0x8000000A, 0x8000000B})


@dataclass(frozen=True, slots=True)
class Event:
    index: int  # CC measurement register index
    event_type: int
    digests: tuple[tuple[int, bytes], ...]  # (TPM algorithm id, digest)
    data: bytes


def _u32(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        raise EvidenceFormatError(f"CCEL truncated at offset {offset}")
    return int.from_bytes(data[offset : offset + 4], "little")


def _u16(data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise EvidenceFormatError(f"CCEL truncated at offset {offset}")
    return int.from_bytes(data[offset : offset + 2], "little")


def _take(data: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(data):
        raise EvidenceFormatError(f"CCEL truncated: {size} bytes needed at offset {offset}")
    return data[offset : offset + size]


def _spec_id(data: bytes) -> tuple[dict[int, int], int]:
    """Digest sizes declared by the leading Spec ID event, and where the next record starts."""
    if _u32(data, 4) != EV_NO_ACTION:
        raise EvidenceFormatError("CCEL does not start with an EV_NO_ACTION Spec ID event")
    size = _u32(data, 28)
    spec = _take(data, 32, size)
    if spec[:16] != SPEC_ID_SIGNATURE:
        raise EvidenceFormatError("CCEL first event is not 'Spec ID Event03'")
    count = _u32(spec, 24)
    sizes: dict[int, int] = {}
    offset = 28
    for _ in range(count):
        alg, digest_size = _u16(spec, offset), _u16(spec, offset + 2)
        offset += 4
        if alg in sizes:
            raise EvidenceFormatError(f"CCEL Spec ID event lists algorithm 0x{alg:x} twice")
        sizes[alg] = digest_size
    vendor_size = _take(spec, offset, 1)[0]
    if offset + 1 + vendor_size != size:
        raise EvidenceFormatError("CCEL Spec ID event size does not match its contents")
    return sizes, 32 + size


def _at_end(data: bytes, offset: int) -> bool:
    rest = data[offset : offset + 8]
    return rest in (b"\xff" * len(rest), b"\x00" * len(rest))


def parse_ccel(data: bytes) -> list[Event]:
    """The records after the Spec ID event; any inconsistency is malformed evidence."""
    sizes, offset = _spec_id(data)
    events: list[Event] = []
    while offset < len(data) and not _at_end(data, offset):
        index, event_type, count = _u32(data, offset), _u32(data, offset + 4), _u32(data, offset + 8)
        offset += 12
        if count > len(sizes):
            raise EvidenceFormatError(f"CCEL event lists {count} digests, the log declares {len(sizes)}")
        digests = []
        for _ in range(count):
            alg = _u16(data, offset)
            if alg not in sizes:
                raise EvidenceFormatError(f"CCEL event digest algorithm 0x{alg:x} is not declared")
            digests.append((alg, _take(data, offset + 2, sizes[alg])))
            offset += 2 + sizes[alg]
        size = _u32(data, offset)
        events.append(Event(index, event_type, tuple(digests), _take(data, offset + 4, size)))
        offset += 4 + size
    return events


def replay(events: list[Event]) -> tuple[bytes, ...]:
    """RTMR0..3 as the log says they must be."""
    rtmrs = [bytes(48)] * RTMR_COUNT
    for event in events:
        if event.event_type == EV_NO_ACTION or not 1 <= event.index <= RTMR_COUNT:
            continue
        digest = next((d for alg, d in event.digests if alg == TPM_ALG_SHA384), None)
        if digest is None:
            raise EvidenceFormatError(f"CCEL event for index {event.index} has no SHA-384 digest")
        rtmrs[event.index - 1] = hashlib.sha384(rtmrs[event.index - 1] + digest).digest()
    return tuple(rtmrs)


def _details(event: Event) -> dict[str, Any]:
    if event.event_type in _TEXT_EVENTS:
        return {"string": event.data.rstrip(b"\x00").decode("utf-8", "replace")}
    if event.event_type in _DESCRIBED_EVENTS and event.data:
        text = event.data[1 : 1 + event.data[0]].rstrip(b"\x00")
        return {"string": text.decode("utf-8", "replace")}
    return {}


def _digest_matches(event: Event) -> bool:
    for alg, digest in event.digests:
        name = _HASHLIB.get(alg)
        if name is None or hashlib.new(name, event.data).digest() != digest:
            return False
    return bool(event.digests)


def event_claims(events: list[Event]) -> list[dict[str, Any]]:
    """`uefi_event_logs` as upstream renders it (event data in base64, digests in hex)."""
    return [
        {
            "index": event.index,
            "type_name": EVENT_TYPES.get(event.event_type, f"EV_UNKNOWN_0x{event.event_type:08X}"),
            "digests": [
                {"alg": ALGORITHMS.get(a, f"0x{a:04X}"), "digest": d.hex()} for a, d in event.digests
            ],
            "event": base64.b64encode(event.data).decode("ascii"),
            "details": _details(event),
            "digest_matches_event": _digest_matches(event),
        }
        for event in events
    ]
