"""SNP evidence as guests send it: upstream's JSON document, or a bare 1184-byte report.

The JSON is the `virtee/sev` crate's serde shape (`SnpEvidence {attestation_report, cert_chain}`):
byte arrays as lists of integers, TCB versions as objects, signature as `{"r": [72], "s": [72]}`.
It carries the report's fields but not its reserved bytes, so the report is rebuilt into its binary
form (reserved bytes zero, as the firmware writes them) and the signature is checked over that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from verifier.errors import EvidenceFormatError
from verifier.snp import report as rpt
from verifier.snp.report import SnpReport, TcbVersion, parse_report

# Bounds on untrusted input: the largest real documents (report + ARK + ASK + VCEK as integer
# lists) are ~25 KiB.
MAX_EVIDENCE_SIZE = 256 * 1024
MAX_CERT_ENTRIES = 16

CERT_TYPES = frozenset({"ARK", "ASK", "VCEK", "VLEK", "CRL", "Empty"})

_U32_FIELDS = (
    ("version", rpt.OFF_VERSION),
    ("guest_svn", rpt.OFF_GUEST_SVN),
    ("vmpl", rpt.OFF_VMPL),
    ("sig_algo", rpt.OFF_SIG_ALGO),
    ("key_info", rpt.OFF_KEY_INFO),
)
_U64_FIELDS = (("policy", rpt.OFF_POLICY), ("plat_info", rpt.OFF_PLAT_INFO))
_BYTE_FIELDS = (
    ("family_id", rpt.OFF_FAMILY_ID, 16),
    ("image_id", rpt.OFF_IMAGE_ID, 16),
    ("report_data", rpt.OFF_REPORT_DATA, 64),
    ("measurement", rpt.OFF_MEASUREMENT, 48),
    ("host_data", rpt.OFF_HOST_DATA, 32),
    ("id_key_digest", rpt.OFF_ID_KEY_DIGEST, 48),
    ("author_key_digest", rpt.OFF_AUTHOR_KEY_DIGEST, 48),
    ("report_id", rpt.OFF_REPORT_ID, 32),
    ("report_id_ma", rpt.OFF_REPORT_ID_MA, 32),
    ("chip_id", rpt.OFF_CHIP_ID, 64),
)
_TCB_FIELDS = (
    ("current_tcb", rpt.OFF_CURRENT_TCB),
    ("reported_tcb", rpt.OFF_REPORTED_TCB),
    ("committed_tcb", rpt.OFF_COMMITTED_TCB),
    ("launch_tcb", rpt.OFF_LAUNCH_TCB),
)
_VERSION_FIELDS = (("current", rpt.OFF_CURRENT_VERSION), ("committed", rpt.OFF_COMMITTED_VERSION))
_OPTIONAL_U8_FIELDS = (
    ("cpuid_fam_id", rpt.OFF_CPUID_FAM_ID),
    ("cpuid_mod_id", rpt.OFF_CPUID_MOD_ID),
    ("cpuid_step", rpt.OFF_CPUID_STEP),
)
_OPTIONAL_U64_FIELDS = (
    ("launch_mit_vector", rpt.OFF_LAUNCH_MIT_VECTOR),
    ("current_mit_vector", rpt.OFF_CURRENT_MIT_VECTOR),
)


@dataclass(frozen=True)
class CertEntry:
    """One entry of the extended-report certificate table; `cert_type` is "VCEK", "ASK", ... or
    "OTHER:<guid>" (so that no GUID can pass for one of the named types)."""

    cert_type: str
    data: bytes


@dataclass(frozen=True)
class SnpEvidence:
    report: SnpReport
    cert_table: tuple[CertEntry, ...] | None

    def certificate(self, cert_type: str) -> bytes | None:
        """The first table entry of `cert_type` (as upstream: the first VCEK/VLEK wins)."""
        for entry in self.cert_table or ():
            if entry.cert_type == cert_type:
                return entry.data
        return None


def parse_evidence(data: bytes) -> SnpEvidence:
    """Evidence bytes from a guest: a JSON document (starts with "{") or a raw report."""
    if len(data) > MAX_EVIDENCE_SIZE:
        raise EvidenceFormatError(f"SNP evidence is {len(data)} bytes, more than {MAX_EVIDENCE_SIZE}")
    if data.lstrip()[:1] != b"{":
        return SnpEvidence(report=parse_report(data), cert_table=None)
    try:
        # orjson: strict UTF-8 JSON, bounded nesting, and several times faster than `json` on the
        # integer lists that make up this format (parsing would otherwise rival the ECDSA check).
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EvidenceFormatError(f"SNP evidence is not JSON: {exc}") from None
    doc = _object(doc, "SNP evidence")
    # JSON booleans can only come from these tokens; without them no list needs scanning for bools.
    may_hold_booleans = b"true" in data or b"false" in data
    report_doc = _object(_required(doc, "attestation_report"), "attestation_report")
    report = parse_report(encode_report(report_doc, may_hold_booleans=may_hold_booleans))
    chain = doc.get("cert_chain")
    cert_table = None if chain is None else _cert_table(chain, may_hold_booleans)
    return SnpEvidence(report=report, cert_table=cert_table)


def encode_report(doc: dict[str, Any], *, may_hold_booleans: bool = True) -> bytes:
    """The binary report a sev-crate `AttestationReport` JSON object stands for."""
    out = bytearray(rpt.REPORT_SIZE)
    for name, offset in _U32_FIELDS:
        out[offset : offset + 4] = _uint(_required(doc, name), 32, name).to_bytes(4, "little")
    for name, offset in _U64_FIELDS:
        out[offset : offset + 8] = _uint(_required(doc, name), 64, name).to_bytes(8, "little")
    for name, offset, size in _BYTE_FIELDS:
        out[offset : offset + size] = _byte_array(_required(doc, name), size, name, may_hold_booleans)
    for name, offset in _TCB_FIELDS:
        out[offset : offset + 8] = _tcb(_required(doc, name), name).encode()
    for name, offset in _VERSION_FIELDS:
        version = _object(_required(doc, name), name)
        out[offset] = _uint(_required(version, "build"), 8, f"{name}.build")
        out[offset + 1] = _uint(_required(version, "minor"), 8, f"{name}.minor")
        out[offset + 2] = _uint(_required(version, "major"), 8, f"{name}.major")
    for name, offset in _OPTIONAL_U8_FIELDS:
        value = doc.get(name)
        out[offset] = 0 if value is None else _uint(value, 8, name)
    for name, offset in _OPTIONAL_U64_FIELDS:
        value = doc.get(name)
        out[offset : offset + 8] = (0 if value is None else _uint(value, 64, name)).to_bytes(8, "little")
    signature = _object(_required(doc, "signature"), "signature")
    size = rpt.SIGNATURE_COMPONENT_SIZE
    out[rpt.OFF_SIGNATURE_R : rpt.OFF_SIGNATURE_R + size] = _byte_array(
        _required(signature, "r"), size, "r", may_hold_booleans
    )
    out[rpt.OFF_SIGNATURE_S : rpt.OFF_SIGNATURE_S + size] = _byte_array(
        _required(signature, "s"), size, "s", may_hold_booleans
    )
    return bytes(out)


def _cert_table(value: Any, may_hold_booleans: bool) -> tuple[CertEntry, ...]:
    if not isinstance(value, list):
        raise EvidenceFormatError("cert_chain must be a list or null")
    if len(value) > MAX_CERT_ENTRIES:
        raise EvidenceFormatError(f"cert_chain has {len(value)} entries, more than {MAX_CERT_ENTRIES}")
    entries = []
    for item in value:
        entry = _object(item, "cert_chain entry")
        data = _required(entry, "data")
        if not isinstance(data, list):
            raise EvidenceFormatError("cert_chain data must be a list of bytes")
        entries.append(
            CertEntry(
                _cert_type(_required(entry, "cert_type")),
                _byte_array(data, len(data), "data", may_hold_booleans),
            )
        )
    return tuple(entries)


def _cert_type(value: Any) -> str:
    if isinstance(value, str) and value in CERT_TYPES:
        return value
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("OTHER"), str):
        return f"OTHER:{value['OTHER']}"
    raise EvidenceFormatError(f"unknown cert_type {value!r:.80}")


def _tcb(value: Any, name: str) -> TcbVersion:
    tcb = _object(value, name)
    fmc = tcb.get("fmc")
    return TcbVersion(
        bootloader=_uint(_required(tcb, "bootloader"), 8, f"{name}.bootloader"),
        tee=_uint(_required(tcb, "tee"), 8, f"{name}.tee"),
        snp=_uint(_required(tcb, "snp"), 8, f"{name}.snp"),
        microcode=_uint(_required(tcb, "microcode"), 8, f"{name}.microcode"),
        fmc=None if fmc is None else _uint(fmc, 8, f"{name}.fmc"),
    )


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvidenceFormatError(f"{name} must be a JSON object")
    return value


def _required(doc: dict[str, Any], name: str) -> Any:
    try:
        return doc[name]
    except KeyError:
        raise EvidenceFormatError(f"missing field {name!r}") from None


def _uint(value: Any, bits: int, name: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise EvidenceFormatError(f"{name} must be an unsigned {bits}-bit integer, got {value!r:.40}")
    return value


def _byte_array(value: Any, size: int, name: str, may_hold_booleans: bool) -> bytes:
    """A JSON list of `size` integers 0..255 (serde's byte arrays); JSON booleans are not bytes.

    `bytes()` already rejects everything but integers and booleans; the scan for booleans is skipped
    when the document has none at all (the common case, and the scan costs more than the parse).
    """
    if not isinstance(value, list) or len(value) != size:
        raise EvidenceFormatError(f"{name} must be a list of {size} bytes")
    try:
        out = bytes(value)
    except (TypeError, ValueError):
        raise EvidenceFormatError(f"{name} holds values that are not bytes") from None
    if may_hold_booleans and bool in set(map(type, value)):
        raise EvidenceFormatError(f"{name} holds booleans, not bytes")
    return out
