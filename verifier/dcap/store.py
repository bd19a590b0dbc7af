"""Verified DCAP collateral (TDX or SGX), cached per platform, and the error that asks for more.

Collateral arrives as `RawCollateral` (documents, CRLs and the PEM issuer chains PCS sends in
response headers); `load_collateral` parses it and checks every signature it can. A document
whose issuer chain is missing is kept but marked unverified, so the verifier can refuse it or
say so in its claims. The store is plain synchronous state: fetching is done elsewhere (sources),
and the verifier raises `CollateralNeeded` to ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from verifier.dcap.collateral import (
    TDX,
    CollateralError,
    DcapTee,
    QeIdentity,
    SignedDocument,
    TcbInfo,
    parse_qe_identity,
    parse_tcb_info,
    split_document,
)
from verifier.dcap.ecdsa import verify_p256
from verifier.dcap.pck import PCK_CA_NAMES
from verifier.dcap.x509chain import Validity, verify_chain
from verifier.errors import VerificationError
from verifier.lru import LruCache
from verifier.x509util import common_name, load_pem_certificates

TCB_SIGNING_CN_PHRASE = "TCB Signing"
PCK_CAS = tuple(PCK_CA_NAMES.values())


@dataclass(frozen=True, slots=True)
class RawCollateral:
    """Collateral as a PCS/PCCS or an offline file delivers it."""

    tcb_info: bytes  # `{"tcbInfo": {...}, "signature": "..."}` exactly as served
    qe_identity: bytes  # `{"enclaveIdentity": {...}, "signature": "..."}`
    tcb_info_issuer_chain: bytes | None = None  # PEM: TCB Signing cert, Root CA
    qe_identity_issuer_chain: bytes | None = None
    pck_crl: bytes | None = None  # DER
    pck_crl_issuer_chain: bytes | None = None  # PEM: PCK Platform/Processor CA, Root CA
    root_ca_crl: bytes | None = None  # DER


@dataclass(frozen=True, slots=True)
class Crl:
    issuer: x509.Name
    number: int
    last_update: datetime
    next_update: datetime
    revoked: frozenset[int]


@dataclass(frozen=True, slots=True)
class Collateral:
    """Parsed collateral for one FMSPC (and PCK CA when it carries that CA's CRL)."""

    tcb_info: TcbInfo
    qe_identity: QeIdentity
    signature_verified: bool  # both documents' signatures checked against the pinned root
    chains_validity: Validity | None  # of the issuer chains that came along
    pck_crl: Crl | None
    root_ca_crl: Crl | None
    issue_dates: tuple[datetime, ...]
    expiry_dates: tuple[datetime, ...]
    loaded_at: datetime

    @property
    def next_update(self) -> datetime:
        """When the first of its parts goes stale."""
        return min(self.expiry_dates)


class CollateralNeeded(VerificationError):
    """The store has no usable collateral for this platform: fetch it, then verify again."""

    def __init__(self, fmspc: bytes, ca: str, why: str) -> None:
        super().__init__("collateral_unavailable", f"{why} for FMSPC {fmspc.hex()} ({ca} CA)")
        self.fmspc = fmspc
        self.ca = ca


def _verify_document(
    doc: SignedDocument, chain_pem: bytes | None, root: x509.Certificate, root_crl: Crl | None, what: str
) -> Validity | None:
    """Check a document's signature with its issuer chain; None when no chain came with it."""
    if chain_pem is None:
        return None
    chain = load_pem_certificates(chain_pem, f"{what} issuer chain")
    validity = verify_chain(chain, root, f"{what} issuer chain")
    if root_crl is not None and chain[0].serial_number in root_crl.revoked:
        raise VerificationError("cert_revoked", f"the {what} signing certificate is revoked")
    key = chain[0].public_key()
    if TCB_SIGNING_CN_PHRASE not in common_name(chain[0]):
        raise VerificationError("collateral_signature", f"{what} is not signed by a TCB Signing certificate")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not verify_p256(
        key, doc.signature, doc.signed_bytes
    ):
        raise VerificationError("collateral_signature", f"{what} signature does not verify")
    return validity


def _load_crl(der: bytes, issuer: x509.Certificate, what: str) -> Crl:
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("collateral_signature", f"{what} issuer key is not ECDSA")
    try:
        crl = x509.load_der_x509_crl(der)
        valid = crl.is_signature_valid(key) and crl.issuer == issuer.subject
        loaded = Crl(
            issuer=crl.issuer,
            number=crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc or _missing(what),
            revoked=frozenset(r.serial_number for r in crl),
        )
    except (ValueError, TypeError, x509.InvalidVersion, x509.ExtensionNotFound, UnsupportedAlgorithm) as exc:
        raise CollateralError(f"{what}: not a usable CRL ({exc})") from None
    if not valid:
        raise VerificationError(
            "collateral_signature", f"{what} is not signed by {issuer.subject.rfc4514_string()}"
        )
    return loaded


def _missing(what: str) -> datetime:
    raise CollateralError(f"{what} has no nextUpdate")


def _merge(a: Validity | None, b: Validity | None) -> Validity | None:
    if a is None or b is None:
        return a or b
    return Validity(max(a.not_before, b.not_before), min(a.not_after, b.not_after))


def load_collateral(
    raw: RawCollateral, root: x509.Certificate, now: datetime, tee: DcapTee = TDX
) -> Collateral:
    """Parse `raw` as `tee`'s collateral and check every signature whose issuer chain it carries."""
    tcb_obj, tcb_doc = split_document(raw.tcb_info, "tcbInfo")
    qe_obj, qe_doc = split_document(raw.qe_identity, "enclaveIdentity")
    tcb_info, qe_identity = parse_tcb_info(tcb_obj, tee), parse_qe_identity(qe_obj, tee)
    root_crl = _load_crl(raw.root_ca_crl, root, "Root CA CRL") if raw.root_ca_crl is not None else None
    tcb_chain = _verify_document(tcb_doc, raw.tcb_info_issuer_chain, root, root_crl, "TCB info")
    qe_chain = _verify_document(qe_doc, raw.qe_identity_issuer_chain, root, root_crl, "QE identity")
    validity = _merge(tcb_chain, qe_chain)
    pck_crl = None
    if raw.pck_crl is not None:
        if raw.pck_crl_issuer_chain is None:
            raise CollateralError("PCK CRL came without its issuer chain")
        chain = load_pem_certificates(raw.pck_crl_issuer_chain, "PCK CRL issuer chain")
        validity = _merge(validity, verify_chain(chain, root, "PCK CRL issuer chain"))
        pck_crl = _load_crl(raw.pck_crl, chain[0], "PCK CRL")
        if root_crl is not None and chain[0].serial_number in root_crl.revoked:
            raise VerificationError("cert_revoked", "the PCK CRL issuer is revoked by the Root CA CRL")
    crls = [c for c in (pck_crl, root_crl) if c is not None]
    return Collateral(
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        signature_verified=tcb_chain is not None and qe_chain is not None,
        chains_validity=validity,
        pck_crl=pck_crl,
        root_ca_crl=root_crl,
        issue_dates=(tcb_info.issue_date, qe_identity.issue_date, *(c.last_update for c in crls)),
        expiry_dates=(tcb_info.next_update, qe_identity.next_update, *(c.next_update for c in crls)),
        loaded_at=now,
    )


def ca_of(collateral: Collateral) -> str | None:
    """The PCK CA a collateral set is specific to (through its PCK CRL), None if it fits both."""
    if collateral.pck_crl is None:
        return None
    cn = collateral.pck_crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return PCK_CA_NAMES.get(str(cn[0].value)) if cn else None


class CollateralStore:
    """Loaded collateral by (FMSPC, PCK CA); a bounded LRU. Collateral without a PCK CRL fits
    both CAs and is filed under both."""

    def __init__(self, capacity: int = 256) -> None:
        self._entries: LruCache[tuple[bytes, str], Collateral] = LruCache(capacity)

    def put(self, collateral: Collateral) -> None:
        ca = ca_of(collateral)
        for each in (ca,) if ca is not None else PCK_CAS:
            self._entries.put((collateral.tcb_info.fmspc, each), collateral)

    def get(self, fmspc: bytes, ca: str) -> Collateral | None:
        return self._entries.get((fmspc, ca))
