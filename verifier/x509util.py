"""Certificate helpers shared by the verifiers: loading, chaining, validity, raw extensions, DER values.

Hardware vendors put their claims (TCB levels, chip ids, FMSPCs) in private X.509 extensions that
`cryptography` hands over as opaque bytes, so a small strict DER reader lives here too. Every failure
is a `VerificationError` with a stable reason: `malformed_evidence` for bytes that do not parse,
`chain_invalid` for a signature or name that does not chain, `cert_expired` outside the validity
window. Nothing here knows about a particular TEE.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from verifier.errors import EvidenceFormatError, VerificationError

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04


class ChainError(VerificationError):
    """A certificate is not signed by, or not named after, the issuer it must chain to."""

    def __init__(self, message: str) -> None:
        super().__init__("chain_invalid", message)


class CertificateExpired(VerificationError):
    """A certificate is used outside its notBefore..notAfter window."""

    def __init__(self, message: str) -> None:
        super().__init__("cert_expired", message)


@dataclass(frozen=True)
class RsaPss:
    """An RSASSA-PSS profile a chain must use (MGF1 with the same hash), e.g. AMD's SHA-384, salt 48."""

    hash_algorithm: hashes.HashAlgorithm
    salt_length: int


RSA_PSS_SHA384_SALT48 = RsaPss(hashes.SHA384(), 48)


_PARSE_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, UnsupportedAlgorithm)


def _fully_parsed(cert: x509.Certificate) -> x509.Certificate:
    """Touch every part `cryptography` parses lazily, so a malformed field fails here, at load time,
    rather than as a stray ValueError in the middle of a chain check."""
    _ = (cert.issuer, cert.subject, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.extensions)
    _ = (cert.signature, cert.tbs_certificate_bytes, cert.signature_algorithm_oid, cert.public_key())
    return cert


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    """Parse one DER certificate; `what` names it in the error ("VCEK", "PCK certificate")."""
    try:
        with warnings.catch_warnings():
            # Some vendor test certificates carry non-positive serials; the signature check decides.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return _fully_parsed(x509.load_der_x509_certificate(der))
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError(f"{what} is not a usable DER X.509 certificate: {exc}") from None


def load_pem_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in file order."""
    try:
        return [_fully_parsed(cert) for cert in x509.load_pem_x509_certificates(pem)]
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError(f"{what} is not a usable PEM certificate bundle: {exc}") from None


def der_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding (the usual pin)."""
    return hashlib.sha256(der_bytes(cert)).hexdigest()


def common_name(cert: x509.Certificate) -> str:
    """The subject CN, or "" when it has none (names are for messages and lookups, not trust)."""
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return ""
    value = attrs[0].value if len(attrs) == 1 else ""
    return value if isinstance(value, str) else ""


def check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    """Reject a certificate outside notBefore..notAfter at `now` (timezone-aware)."""
    if now < cert.not_valid_before_utc:
        raise CertificateExpired(f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise CertificateExpired(f"{what} expired at {cert.not_valid_after_utc.isoformat()}")


def verify_issued_by(
    cert: x509.Certificate, issuer: x509.Certificate, what: str, *, scheme: RsaPss | None = None
) -> None:
    """Check that `issuer` signed `cert` and that the names chain.

    With `scheme`, the signature must be RSASSA-PSS with exactly that profile under an RSA issuer key
    (a vendor's fixed choice, whatever the certificate declares); without it, the algorithm the
    certificate declares is used (RSA PKCS#1 v1.5 or PSS, ECDSA, EdDSA).
    """
    if cert.issuer != issuer.subject:
        raise ChainError(
            f"{what} is issued by {cert.issuer.rfc4514_string()!r}, not {issuer.subject.rfc4514_string()!r}"
        )
    try:
        if scheme is None:
            cert.verify_directly_issued_by(issuer)
            return
        key = issuer.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ChainError(f"the issuer of {what} has no RSA key")
        pss = padding.PSS(mgf=padding.MGF1(scheme.hash_algorithm), salt_length=scheme.salt_length)
        key.verify(cert.signature, cert.tbs_certificate_bytes, pss, scheme.hash_algorithm)
    except InvalidSignature:
        raise ChainError(f"{what} signature does not verify under {common_name(issuer)!r}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ChainError(f"{what} signature cannot be checked: {exc}") from None


def extension_value(cert: x509.Certificate, oid: str) -> bytes | None:
    """The raw extnValue bytes of the extension `oid` (dotted), or None when absent."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError(f"certificate extensions do not parse: {exc}") from None
    return ext.value.public_bytes()


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """One DER element at `offset` (single-byte tag, definite minimal length): (tag, value, end)."""
    if offset + 2 > len(data):
        raise EvidenceFormatError("DER element truncated in its header")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise EvidenceFormatError("DER multi-byte tags are not supported")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise EvidenceFormatError("DER length is indefinite, oversized or truncated")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise EvidenceFormatError("DER length is not minimal")
        pos += count
    end = pos + length
    if end > len(data):
        raise EvidenceFormatError("DER element runs past its container")
    return tag, data[pos:end], end


def der_single(data: bytes, tag: int, what: str) -> bytes:
    """The value of the one element `data` holds, which must carry `tag`."""
    got, value, end = read_tlv(data)
    if got != tag or end != len(data):
        raise EvidenceFormatError(f"{what} is not a single DER element with tag 0x{tag:02x}")
    return value


def der_unsigned(data: bytes, what: str) -> int:
    """A whole DER INTEGER element that must be non-negative and minimally encoded."""
    value = der_single(data, TAG_INTEGER, what)
    if not value or value[0] & 0x80:
        raise EvidenceFormatError(f"{what} is empty or negative")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise EvidenceFormatError(f"{what} is not minimally encoded")
    return int.from_bytes(value, "big")


def der_octet_string(data: bytes, what: str) -> bytes:
    """The content of a whole DER OCTET STRING element."""
    return der_single(data, TAG_OCTET_STRING, what)
