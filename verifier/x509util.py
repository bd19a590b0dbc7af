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
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.utils import CryptographyDeprecationWarning

from verifier.errors import EvidenceFormatError, VerificationError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18
TAG_SEQUENCE = 0x30
TAG_VERSION = 0xA0  # [0] EXPLICIT
TAG_EXTENSIONS = 0xA3  # [3] EXPLICIT
OID_COMMON_NAME = "2.5.4.3"


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


def extension_value(cert: x509.Certificate | DerCertificate, oid: str) -> bytes | None:
    """The raw extnValue bytes of the extension `oid` (dotted), or None when absent."""
    if isinstance(cert, DerCertificate):
        return cert.extensions.get(oid)
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


# --- a certificate read at the DER level ---------------------------------------------------------
#
# Real AMD VCEK/VLEK certificates have serial number 0, which RFC 5280 forbids: `cryptography` warns
# that a future release will refuse to load them. The verifier needs only a few of their fields, so
# it reads those itself (strict DER, as `read_tlv`) and never depends on that loader for them.


@dataclass(frozen=True, slots=True)
class DerCertificate:
    """What the verifiers use of a certificate, read from its DER without `x509.load_*`."""

    der: bytes
    tbs: bytes  # the signed TBSCertificate, exactly as encoded
    serial: int  # may be 0 or negative: not our concern, the signature is
    signature_algorithm: bytes  # AlgorithmIdentifier element
    signature: bytes
    issuer: bytes  # Name element, as encoded
    subject: bytes
    not_before: datetime
    not_after: datetime
    public_key: PublicKeyTypes
    extensions: dict[str, bytes]  # dotted OID -> extnValue content
    common_name: str


def _children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements of a constructed value: (tag, content, whole element)."""
    out: list[tuple[int, bytes, bytes]] = []
    offset = 0
    while offset < len(content):
        tag, value, end = read_tlv(content, offset)
        out.append((tag, value, content[offset:end]))
        offset = end
    return out


def oid_text(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets."""
    if not content or content[-1] & 0x80:
        raise EvidenceFormatError("OID is empty or truncated")
    arcs: list[int] = []
    value = 0
    for byte in content:
        if value == 0 and byte == 0x80:
            raise EvidenceFormatError("OID arc is not minimally encoded")
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def _time(tag: int, value: bytes, what: str) -> datetime:
    formats = {TAG_UTC_TIME: "%y%m%d%H%M%SZ", TAG_GENERALIZED_TIME: "%Y%m%d%H%M%SZ"}
    if tag not in formats:
        raise EvidenceFormatError(f"{what}: validity is not a UTCTime or GeneralizedTime")
    try:
        return datetime.strptime(value.decode("ascii"), formats[tag]).replace(tzinfo=UTC)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceFormatError(f"{what}: validity time {value[:20]!r} is malformed") from None


def _extensions(element: bytes, what: str) -> dict[str, bytes]:
    extensions: dict[str, bytes] = {}
    for tag, content, _ in _children(der_single(element, TAG_SEQUENCE, f"{what} extensions")):
        parts = _children(content) if tag == TAG_SEQUENCE else []
        if len(parts) == 3 and parts[1][0] == TAG_BOOLEAN:
            parts = [parts[0], parts[2]]
        if len(parts) != 2 or parts[0][0] != TAG_OID or parts[1][0] != TAG_OCTET_STRING:
            raise EvidenceFormatError(f"{what}: an extension is not {{OID, [critical,] OCTET STRING}}")
        oid = oid_text(parts[0][1])
        if oid in extensions:
            raise EvidenceFormatError(f"{what}: extension {oid} appears twice")
        extensions[oid] = parts[1][1]
    return extensions


def _common_name(name: bytes) -> str:
    """The CN of a Name element ("" when absent or not a string): for messages, never for trust."""
    for _, rdn, _ in _children(der_single(name, TAG_SEQUENCE, "name")):
        for _, attribute, _ in _children(rdn):
            parts = _children(attribute)
            if len(parts) == 2 and parts[0][0] == TAG_OID and oid_text(parts[0][1]) == OID_COMMON_NAME:
                return parts[1][1].decode("utf-8", "replace")
    return ""


def read_der_certificate(der: bytes, what: str) -> DerCertificate:
    """The fields of an X.509 v3 certificate the verifiers need; malformed DER is malformed evidence."""
    try:
        top = _children(der_single(der, TAG_SEQUENCE, what))
        if [tag for tag, _, _ in top] != [TAG_SEQUENCE, TAG_SEQUENCE, TAG_BIT_STRING]:
            raise EvidenceFormatError(
                f"{what} is not a SEQUENCE {{TBSCertificate, AlgorithmIdentifier, BIT STRING}}"
            )
        (_, tbs_content, tbs), (_, _, algorithm), (_, bits, _) = top
        if not bits or bits[0] != 0:
            raise EvidenceFormatError(f"{what}: signature BIT STRING has unused bits")
        fields = _children(tbs_content)
        if fields and fields[0][0] == TAG_VERSION:
            fields = fields[1:]
        if len(fields) < 6:
            raise EvidenceFormatError(f"{what}: TBSCertificate is missing fields")
        serial, inner_algorithm, issuer, validity, subject, spki = fields[:6]
        if serial[0] != TAG_INTEGER:
            raise EvidenceFormatError(f"{what}: serial number is not an INTEGER")
        if inner_algorithm[2] != algorithm:  # RFC 5280 4.1.1.2: a tampered signature, in effect
            raise ChainError(f"{what}: its two signature algorithm identifiers differ")
        times = _children(der_single(validity[2], TAG_SEQUENCE, f"{what} validity"))
        if len(times) != 2 or issuer[0] != TAG_SEQUENCE or subject[0] != TAG_SEQUENCE:
            raise EvidenceFormatError(f"{what}: validity or names are malformed")
        extensions = next((_extensions(f[1], what) for f in fields[6:] if f[0] == TAG_EXTENSIONS), {})
        try:
            public_key = load_der_public_key(spki[2])
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EvidenceFormatError(f"{what}: public key does not load: {exc}") from None
        return DerCertificate(
            der=der,
            tbs=tbs,
            serial=int.from_bytes(serial[1], "big", signed=True),
            signature_algorithm=algorithm,
            signature=bits[1:],
            issuer=issuer[2],
            subject=subject[2],
            not_before=_time(times[0][0], times[0][1], what),
            not_after=_time(times[1][0], times[1][1], what),
            public_key=public_key,
            extensions=extensions,
            common_name=_common_name(subject[2]),
        )
    except RecursionError:
        raise EvidenceFormatError(f"{what} is nested too deeply") from None


def name_der(cert: x509.Certificate) -> bytes:
    """The DER of a parsed certificate's subject, to compare with a `DerCertificate`'s issuer."""
    return cert.subject.public_bytes()


def verify_der_issued_by(
    cert: DerCertificate, issuer: x509.Certificate, what: str, *, scheme: RsaPss
) -> None:
    """As `verify_issued_by` with a vendor's fixed RSASSA-PSS profile, for a DER-read certificate."""
    if cert.issuer != name_der(issuer):
        raise ChainError(f"{what} is not issued by {issuer.subject.rfc4514_string()!r}")
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainError(f"the issuer of {what} has no RSA key")
    pss = padding.PSS(mgf=padding.MGF1(scheme.hash_algorithm), salt_length=scheme.salt_length)
    try:
        key.verify(cert.signature, cert.tbs, pss, scheme.hash_algorithm)
    except InvalidSignature:
        raise ChainError(f"{what} signature does not verify under {common_name(issuer)!r}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ChainError(f"{what} signature cannot be checked: {exc}") from None


def check_der_validity(cert: DerCertificate, now: datetime, what: str) -> None:
    if now < cert.not_before:
        raise CertificateExpired(f"{what} is not valid before {cert.not_before.isoformat()}")
    if now > cert.not_after:
        raise CertificateExpired(f"{what} expired at {cert.not_after.isoformat()}")
