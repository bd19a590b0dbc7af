"""VCEK/VLEK certificates: chained to AMD's ARK through ASK (or ASVK), with their TCB and HWID claims.

The result of a successful chain check is an `EndorsementKey`, which is all later checks need (the
public key, the extension values, the validity windows). The VCEK/VLEK itself is read at the DER
level (`read_der_certificate`): real ones have serial number 0, which `cryptography` is deprecating.
The result depends only on the certificate bytes, so the verifier caches it by those bytes and a
repeat verification pays only the report signature; validity dates are checked against the clock on
every use, never cached.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.errors import EvidenceFormatError
from verifier.snp.anchors import AmdRoots, TrustAnchors
from verifier.snp.report import Generation, TcbVersion
from verifier.x509util import (
    RSA_PSS_SHA384_SALT48,
    CertificateExpired,
    ChainError,
    DerCertificate,
    common_name,
    der_octet_string,
    der_unsigned,
    extension_value,
    load_der_certificate,
    name_der,
    read_der_certificate,
    verify_der_issued_by,
    verify_issued_by,
)

_AMD_ARC = "1.3.6.1.4.1.3704.1"
OID_HWID = f"{_AMD_ARC}.4"
OID_BOOTLOADER_SPL = f"{_AMD_ARC}.3.1"
OID_TEE_SPL = f"{_AMD_ARC}.3.2"
OID_SNP_SPL = f"{_AMD_ARC}.3.3"
OID_UCODE_SPL = f"{_AMD_ARC}.3.8"
OID_FMC_SPL = f"{_AMD_ARC}.3.9"
HWID_SIZE = 64


class KeyKind(enum.Enum):
    """Which endorsement key signed a report; VLEKs chain through ASVK and carry no HWID."""

    VCEK = "VCEK"
    VLEK = "VLEK"

    def intermediate(self, roots: AmdRoots) -> x509.Certificate:
        return roots.ask if self is KeyKind.VCEK else roots.asvk


@dataclass(frozen=True)
class CertTcb:
    """The security patch levels a VCEK/VLEK was issued for (None when the extension is absent)."""

    bootloader: int | None
    tee: int | None
    snp: int | None
    microcode: int | None
    fmc: int | None

    def mismatches(self, reported: TcbVersion) -> list[str]:
        """The components that differ from the report's reported_tcb, described (empty: all agree)."""
        pairs = [
            ("bootloader", self.bootloader, reported.bootloader),
            ("tee", self.tee, reported.tee),
            ("snp", self.snp, reported.snp),
            ("microcode", self.microcode, reported.microcode),
        ]
        if reported.fmc is not None:
            pairs.append(("fmc", self.fmc, reported.fmc))
        return [f"{name} (certificate {cert}, report {rep})" for name, cert, rep in pairs if cert != rep]


@dataclass(frozen=True)
class EndorsementKey:
    """A VCEK/VLEK whose chain to a trusted ARK has been verified."""

    kind: KeyKind
    generation: Generation
    public_key: ec.EllipticCurvePublicKey
    tcb: CertTcb
    hwid: bytes | None
    chain: tuple[tuple[str, datetime, datetime], ...]  # (what, notBefore, notAfter) of each certificate

    def check_valid_at(self, now: datetime) -> None:
        """Every certificate of the chain (key, intermediate, ARK) must be valid at `now`."""
        for what, not_before, not_after in self.chain:
            if now < not_before:
                raise CertificateExpired(f"{what} is not valid before {not_before.isoformat()}")
            if now > not_after:
                raise CertificateExpired(f"{what} expired at {not_after.isoformat()}")


def verify_endorsement_key(
    vek_der: bytes,
    kind: KeyKind,
    anchors: TrustAnchors,
    *,
    generation: Generation | None,
    intermediate_der: bytes | None = None,
    ark_der: bytes | None = None,
) -> EndorsementKey:
    """Chain a VCEK/VLEK to a trusted ARK; the product line comes from the report or, when it
    cannot tell (report v2), from which trusted ASK/ASVK issued the certificate.

    `intermediate_der`/`ark_der` are certificates the evidence supplied: an ARK is accepted only if
    the trusted ARK's key signed it, an ASK/ASVK only if it carries the trusted one's name and the
    trusted ARK signed it.
    """
    vek = read_der_certificate(vek_der, kind.value)
    generation, roots = _roots_for(vek, kind, anchors, generation)
    if ark_der is not None:
        verify_issued_by(
            load_der_certificate(ark_der, "ARK"), roots.ark, "supplied ARK", scheme=RSA_PSS_SHA384_SALT48
        )
    intermediate = kind.intermediate(roots)
    if intermediate_der is not None:
        supplied = load_der_certificate(intermediate_der, "ASK")
        if supplied.subject != intermediate.subject:
            raise ChainError(
                f"supplied intermediate {supplied.subject.rfc4514_string()!r} is not the product's"
            )
        verify_issued_by(supplied, roots.ark, "supplied intermediate", scheme=RSA_PSS_SHA384_SALT48)
        intermediate = supplied
    verify_der_issued_by(vek, intermediate, kind.value, scheme=RSA_PSS_SHA384_SALT48)
    public_key = vek.public_key
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
        raise ChainError(f"{kind.value} key is not an ECDSA P-384 key")
    return EndorsementKey(
        kind=kind,
        generation=generation,
        public_key=public_key,
        tcb=CertTcb(
            bootloader=_int_extension(vek, OID_BOOTLOADER_SPL),
            tee=_int_extension(vek, OID_TEE_SPL),
            snp=_int_extension(vek, OID_SNP_SPL),
            microcode=_int_extension(vek, OID_UCODE_SPL),
            fmc=_int_extension(vek, OID_FMC_SPL),
        ),
        hwid=hwid_extension(vek),
        chain=(
            (kind.value, vek.not_before, vek.not_after),
            *(
                (common_name(cert), cert.not_valid_before_utc, cert.not_valid_after_utc)
                for cert in (intermediate, roots.ark)
            ),
        ),
    )


def _roots_for(
    vek: DerCertificate, kind: KeyKind, anchors: TrustAnchors, generation: Generation | None
) -> tuple[Generation, AmdRoots]:
    if generation is not None:
        roots = anchors.get(generation)
        if roots is None:
            raise ChainError(f"no trusted AMD roots for {generation.value}")
        return generation, roots
    for candidate, roots in anchors.items():
        if name_der(kind.intermediate(roots)) == vek.issuer:
            return candidate, roots
    raise ChainError(f"{kind.value} issuer is not a trusted AMD CA")


def _int_extension(cert: DerCertificate, oid: str) -> int | None:
    value = extension_value(cert, oid)
    return None if value is None else der_unsigned(value, f"extension {oid}")


def hwid_extension(cert: x509.Certificate | DerCertificate) -> bytes | None:
    """The HWID extension: 64 raw bytes in older VCEKs, a DER OCTET STRING in newer ones."""
    value = extension_value(cert, OID_HWID)
    if value is None or len(value) == HWID_SIZE:
        return value
    hwid = der_octet_string(value, "HWID extension")
    if len(hwid) != HWID_SIZE:
        raise EvidenceFormatError(f"HWID extension holds {len(hwid)} bytes, not {HWID_SIZE}")
    return hwid
