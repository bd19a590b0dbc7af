"""The PCK certificate chain of a quote and the Intel SGX extension of its leaf.

The extension (OID 1.2.840.113741.1.13.1) names the platform: FMSPC (which TCB info applies),
PCE-ID, the SGX TCB the PCK was issued for (16 component SVNs + PCE SVN) and, for the Platform
CA, the platform instance id and configuration. Verified chains are cached by their PEM bytes: a
platform sends the same chain in every quote, so only the clock is re-checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.dcap.x509chain import Validity, verify_chain
from verifier.errors import EvidenceFormatError, VerificationError
from verifier.lru import LruCache
from verifier.x509util import (
    common_name,
    der_octet_string,
    der_single,
    der_unsigned,
    extension_value,
    load_pem_certificates,
    read_tlv,
)

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_SGX_OID_VALUE = bytes.fromhex("2a864886f84d010d01")  # DER content of the OID above
TAG_BOOLEAN, TAG_OID, TAG_ENUMERATED, TAG_SEQUENCE = 0x01, 0x06, 0x0A, 0x30
PCK_LEAF_CN_PHRASE = "SGX PCK Certificate"
PCK_CA_NAMES = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}
SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "Scalable with Integrity"}


@dataclass(frozen=True, slots=True)
class PckTcb:
    sgx_svns: tuple[int, ...]  # sgxtcbcomp01svn .. sgxtcbcomp16svn
    pce_svn: int
    cpu_svn: bytes


@dataclass(frozen=True, slots=True)
class SgxExtension:
    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class PckInfo:
    """What a verified PCK chain tells the rest of the verifier."""

    public_key: ec.EllipticCurvePublicKey
    ca: str  # "platform" or "processor"
    extension: SgxExtension
    validity: Validity
    earliest_issue: datetime
    leaf_serial: int
    leaf_issuer: x509.Name
    ca_serial: int


def _oid(*arcs: int) -> bytes:
    """DER content of SGX extension member OID 1.2.840.113741.1.13.1.<arcs> (all arcs < 128)."""
    return _SGX_OID_VALUE + bytes(arcs)


def _members(element: bytes, what: str) -> dict[bytes, bytes]:
    """A SEQUENCE OF SEQUENCE {OID, value}: OID content -> whole value element."""
    content = der_single(element, TAG_SEQUENCE, what)
    members: dict[bytes, bytes] = {}
    offset = 0
    while offset < len(content):
        _, _, end = read_tlv(content, offset)
        pair = der_single(content[offset:end], TAG_SEQUENCE, what)
        tag, oid, value_start = read_tlv(pair)
        _, _, value_end = read_tlv(pair, value_start)
        if tag != TAG_OID or value_end != len(pair):
            raise EvidenceFormatError(f"{what}: a member is not an {{OID, value}} pair")
        if oid in members:
            raise EvidenceFormatError(f"{what}: a member OID appears twice")
        members[oid] = pair[value_start:]
        offset = end
    return members


def _need(members: dict[bytes, bytes], *arcs: int) -> bytes:
    element = members.get(_oid(*arcs))
    if element is None:
        raise EvidenceFormatError(f"SGX extension lacks member {'.'.join(map(str, arcs))}")
    return element


def _octets(members: dict[bytes, bytes], size: int, *arcs: int) -> bytes:
    value = der_octet_string(_need(members, *arcs), "SGX extension member")
    if len(value) != size:
        raise EvidenceFormatError(f"SGX extension member {'.'.join(map(str, arcs))} is not {size} bytes")
    return value


def _flag(members: dict[bytes, bytes], arc: int) -> bool | None:
    element = members.get(_oid(7, arc))
    if element is None:
        return None
    value = der_single(element, TAG_BOOLEAN, "SGX configuration flag")
    if value not in (b"\x00", b"\xff"):
        raise EvidenceFormatError("SGX configuration flag is not a DER BOOLEAN")
    return value == b"\xff"


def parse_sgx_extension(value: bytes) -> SgxExtension:
    """Decode the DER value of the SGX extension; any defect is malformed evidence."""
    top = _members(value, "SGX extension")
    tcb = _members(_need(top, 2), "SGX TCB")
    sgx_type = der_single(_need(top, 5), TAG_ENUMERATED, "SGX type")
    if len(sgx_type) != 1 or sgx_type[0] & 0x80:
        raise EvidenceFormatError("SGX type is not a small ENUMERATED")
    config = _members(top[_oid(7)], "SGX configuration") if _oid(7) in top else {}
    return SgxExtension(
        ppid=_octets(top, 16, 1),
        tcb=PckTcb(
            sgx_svns=tuple(der_unsigned(_need(tcb, 2, i), "SGX TCB component") for i in range(1, 17)),
            pce_svn=der_unsigned(_need(tcb, 2, 17), "PCE SVN"),
            cpu_svn=_octets(tcb, 16, 2, 18),
        ),
        pce_id=_octets(top, 2, 3),
        fmspc=_octets(top, 6, 4),
        sgx_type=sgx_type[0],
        platform_instance_id=_octets(top, 16, 6) if _oid(6) in top else None,
        dynamic_platform=_flag(config, 1),
        cached_keys=_flag(config, 2),
        smt_enabled=_flag(config, 3),
    )


def verify_pck_chain(pem: bytes, root: x509.Certificate) -> PckInfo:
    """Verify the quote's PCK chain up to `root` and read the leaf's SGX extension.

    Dates are left to the caller (see `Validity`)."""
    certs = load_pem_certificates(pem, "PCK chain")
    if len(certs) < 2:
        raise VerificationError("chain_invalid", "PCK chain needs the PCK leaf and its CA")
    leaf, ca = certs[0], certs[1]
    if PCK_LEAF_CN_PHRASE not in common_name(leaf):
        raise VerificationError("chain_invalid", f"PCK leaf CN lacks {PCK_LEAF_CN_PHRASE!r}")
    ca_type = PCK_CA_NAMES.get(common_name(ca))
    if ca_type is None:
        raise VerificationError("chain_invalid", "PCK issuer is neither the PCK Platform nor Processor CA")
    validity = verify_chain(certs, root, "PCK chain")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("chain_invalid", "PCK key is not ECDSA P-256")
    raw_extension = extension_value(leaf, SGX_EXTENSION_OID)
    if raw_extension is None:
        raise EvidenceFormatError("PCK certificate has no SGX extension")
    extension = parse_sgx_extension(raw_extension)
    platform_fields = (extension.platform_instance_id, extension.dynamic_platform)
    if (ca_type == "platform") != all(field is not None for field in platform_fields):
        raise EvidenceFormatError(
            "platform instance id and configuration must be present exactly in Platform CA PCKs"
        )
    return PckInfo(
        public_key=key,
        ca=ca_type,
        extension=extension,
        validity=validity,
        earliest_issue=min(c.not_valid_before_utc for c in [*certs, root]),
        leaf_serial=leaf.serial_number,
        leaf_issuer=leaf.issuer,
        ca_serial=ca.serial_number,
    )


class PckChainCache:
    """Verified PCK chains by their exact PEM bytes (bounded LRU)."""

    def __init__(self, root: x509.Certificate, capacity: int = 1024) -> None:
        self._root = root
        self._entries: LruCache[bytes, PckInfo] = LruCache(capacity)

    def get(self, pem: bytes, now: datetime) -> PckInfo:
        info = self._entries.get(pem)
        if info is None:
            info = verify_pck_chain(pem, self._root)
            self._entries.put(pem, info)
        info.validity.check(now, "PCK chain")
        return info
