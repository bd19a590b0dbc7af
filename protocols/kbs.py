"""KBS attestation protocol (RCAR, version 0.4.0): message types, their JSON, and the runtime-data binding.

Sans-IO: bytes in, typed messages out, and back. Field names and shapes are upstream's (`kbs-types`):
`Request {version, tee, extra-params}` -> `Challenge {nonce, extra-params}` -> `Attestation
{init-data?, runtime-data {nonce, tee-pubkey}, tee-evidence {primary_evidence, additional_evidence}}`
-> `{"token": ...}`; resources come back as a flattened JSON JWE (`JweResponse`), errors as
`ErrorInformation {type, detail}`.

The binding both sides must compute identically: the primary TEE's REPORT_DATA is
`H(JCS({"tee-pubkey": jwk, "nonce": nonce, "additional-evidence": additional_evidence}))` (RFC 8785
canonical JSON; H = SHA-384, SHA-512 for IBM SE), zero-padded to the report field (64 bytes for
SNP/TDX). Additional devices use the same object without "additional-evidence". The JWK is hashed as
upstream serializes its `TeePubKey` enum: only `kty`, `alg` and the key members, anything else the
client sent is dropped, so `TeePubKey.to_json()` is what goes into the hash.

Every parse function raises `KbsProtocolError` (only) for bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from protocols import strictjson

PROTOCOL_VERSION = "0.4.0"
API_PREFIX = "/kbs/v0"
SESSION_COOKIE = "kbs-session-id"
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
NONCE_BYTES = 32

# `kbs_types::Tee` as serialized.
TEES = frozenset(
    {
        "az-snp-vtpm",
        "az-tdx-vtpm",
        "nvidia",
        "sgx",
        "snp",
        "tdx",
        "cca",
        "csv",
        "se",
        "hygondcu",
        "tpm",
        "sample",
        "sampledevice",
    }
)

HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
DEFAULT_HASH_ALGORITHM = "sha384"
SUPPORTED_HASH_ALGORITHMS_PARAM = "supported-hash-algorithms"
SELECTED_HASH_ALGORITHM_PARAM = "selected-hash-algorithm"

# JWK `alg` values the KBS wraps resource keys with (and the curves it accepts).
ALG_ECDH_ES_A256KW = "ECDH-ES+A256KW"
ALG_RSA_OAEP_256 = "RSA-OAEP-256"
ALG_RSA1_5 = "RSA1_5"
EC_CURVES = {"P-256": 32, "P-384": 48, "P-521": 66}  # curve -> coordinate bytes
_FIELD_PRIMES = {
    "P-256": 2**256 - 2**224 + 2**192 + 2**96 - 1,
    "P-384": 2**384 - 2**128 - 2**96 + 2**32 - 1,
    "P-521": 2**521 - 1,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_JWK_CURVE_NAMES = {curve().name: name for name, curve in _CURVES.items()}  # "secp256r1" -> "P-256"
MIN_RSA_BITS = 2048
# Upstream's `rsa` crate refuses moduli over 4096 bits and exponents over 2^33 - 1 by default; OpenSSL
# itself cannot encrypt to a modulus over 16384 bits or an even one.
MAX_RSA_BITS = 4096
MAX_RSA_EXPONENT = 2**33 - 1

# Upstream `kbs::Error` variants (the last part of `ErrorInformation.type`).
ERROR_VARIANTS = frozenset(
    {
        "AdminAuthInitialization",
        "AdminAuthAccess",
        "AttestationError",
        "HTTPFailed",
        "HTTPSFailed",
        "InvalidRequestPath",
        "JweError",
        "PluginManagerInitialization",
        "PluginNotFound",
        "PluginInternalError",
        "PolicyDeny",
        "ParsePolicyError",
        "PolicyEngineError",
        "RvpsError",
        "SerdeError",
        "StorageBackendInitialization",
        "TokenNotFound",
        "TokenVerifierError",
        "PrometheusError",
    }
)


class KbsProtocolError(ValueError):
    """A KBS protocol message is malformed, or names a version, TEE or value this side cannot use."""


# ---- JSON helpers


def loads(data: bytes | str, what: str) -> Any:
    """Strict JSON (see `protocols.strictjson`) or `KbsProtocolError` naming `what`."""
    try:
        return strictjson.loads(data)
    except strictjson.StrictJsonError as exc:
        raise KbsProtocolError(f"{what}: {exc}") from None


def dumps(value: Any) -> bytes:
    """Compact JSON, as serde_json writes it."""
    return strictjson.dumps(value)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KbsProtocolError(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _string(doc: Mapping[str, Any], key: str, what: str) -> str:
    if key not in doc:
        raise KbsProtocolError(f"{what}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, str):
        raise KbsProtocolError(f"{what}: field {key!r} must be a string, not {_kind(value)}")
    return value


def _field(doc: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in doc:
        raise KbsProtocolError(f"{what}: missing field {key!r}")
    return doc[key]


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2), strictly: no padding, no other characters."""
    if "=" in text or len(text) % 4 == 1:
        raise KbsProtocolError(f"{what} is not unpadded base64url")
    try:
        raw = text.encode("ascii")
        decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise KbsProtocolError(f"{what} is not unpadded base64url") from None
    if b64url_encode(decoded) != text:  # non-alphabet characters or non-zero trailing bits
        raise KbsProtocolError(f"{what} is not unpadded base64url")
    return decoded


# ---- TEE public key (JWK)


@dataclass(frozen=True, slots=True)
class EcPublicJwk:
    crv: str
    alg: str
    x: str
    y: str

    def to_json(self) -> dict[str, str]:
        return {"kty": "EC", "crv": self.crv, "alg": self.alg, "x": self.x, "y": self.y}

    def coordinates(self) -> tuple[int, int]:
        """(x, y) as integers, each the curve's exact length (RFC 7518 §6.2.1.2)."""
        size = EC_CURVES.get(self.crv)
        if size is None:
            raise KbsProtocolError(
                f"tee-pubkey: curve {self.crv[:20]!r} is not one of {', '.join(EC_CURVES)}"
            )
        x, y = b64url_decode(self.x, "tee-pubkey x"), b64url_decode(self.y, "tee-pubkey y")
        if len(x) != size or len(y) != size:
            raise KbsProtocolError(f"tee-pubkey: {self.crv} coordinates must be {size} bytes each")
        point = int.from_bytes(x, "big"), int.from_bytes(y, "big")
        if max(point) >= _FIELD_PRIMES[self.crv]:  # P-521's 66 bytes could hold y + p for y
            raise KbsProtocolError(
                f"tee-pubkey: a {self.crv} coordinate is not reduced modulo the field prime"
            )
        return point

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key, checked to be a point on the curve."""
        x, y = self.coordinates()
        try:
            return ec.EllipticCurvePublicNumbers(x, y, _CURVES[self.crv]()).public_key()
        except ValueError:
            raise KbsProtocolError(f"tee-pubkey: the point is not on {self.crv}") from None


@dataclass(frozen=True, slots=True)
class RsaPublicJwk:
    alg: str
    n: str
    e: str

    def to_json(self) -> dict[str, str]:
        return {"kty": "RSA", "alg": self.alg, "n": self.n, "e": self.e}

    def numbers(self) -> tuple[int, int]:
        """(modulus, public exponent)."""
        n, e = b64url_decode(self.n, "tee-pubkey n"), b64url_decode(self.e, "tee-pubkey e")
        if not n or not e:
            raise KbsProtocolError("tee-pubkey: empty RSA modulus or exponent")
        return int.from_bytes(n, "big"), int.from_bytes(e, "big")

    def public_key(self) -> rsa.RSAPublicKey:
        """The key, checked to be one RSA-OAEP can encrypt to (a key accepted at /attest must work for
        every later /resource)."""
        n, e = self.numbers()
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
            raise KbsProtocolError(
                f"tee-pubkey: RSA modulus of {n.bit_length()} bits,"
                f" {MIN_RSA_BITS} to {MAX_RSA_BITS} supported"
            )
        if n % 2 == 0:
            raise KbsProtocolError("tee-pubkey: RSA modulus is even")
        if e % 2 == 0 or not 3 <= e <= MAX_RSA_EXPONENT:
            raise KbsProtocolError("tee-pubkey: RSA public exponent must be odd, from 3 to 2^33 - 1")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise KbsProtocolError(f"tee-pubkey: unusable RSA key: {exc}") from None


TeePubKey = EcPublicJwk | RsaPublicJwk


def tee_pubkey_of(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, alg: str | None = None) -> TeePubKey:
    """The JWK a guest sends for its key (default alg: ECDH-ES+A256KW for EC, RSA-OAEP-256 for RSA)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return RsaPublicJwk(alg=alg or ALG_RSA_OAEP_256, n=b64url_encode(n), e=b64url_encode(e))
    crv = _JWK_CURVE_NAMES.get(key.curve.name)
    if crv is None:
        raise KbsProtocolError(f"curve {key.curve.name} is not one of {', '.join(EC_CURVES)}")
    point = key.public_numbers()
    size = EC_CURVES[crv]
    x, y = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
    return EcPublicJwk(crv=crv, alg=alg or ALG_ECDH_ES_A256KW, x=b64url_encode(x), y=b64url_encode(y))


def parse_tee_pubkey(value: Any) -> TeePubKey:
    """`kbs_types::TeePubKey` (tagged by `kty`); members other than upstream's are dropped."""
    what = "tee-pubkey"
    doc = _object(value, what)
    kty = _string(doc, "kty", what)
    if kty == "EC":
        return EcPublicJwk(*(_string(doc, key, what) for key in ("crv", "alg", "x", "y")))
    if kty == "RSA":
        return RsaPublicJwk(*(_string(doc, key, what) for key in ("alg", "n", "e")))
    raise KbsProtocolError(f"tee-pubkey: kty {kty[:20]!r} is not EC or RSA")


# ---- messages


@dataclass(frozen=True, slots=True)
class Request:
    """`POST /auth` body. `extra_params` is any JSON (guests send `supported-hash-algorithms`)."""

    tee: str
    version: str = PROTOCOL_VERSION
    extra_params: Any = ""

    def to_json(self) -> bytes:
        return dumps({"version": self.version, "tee": self.tee, "extra-params": self.extra_params})


def parse_request(data: bytes | str) -> Request:
    what = "Request"
    doc = _object(loads(data, what), what)
    version, tee = _string(doc, "version", what), _string(doc, "tee", what)
    if tee not in TEES:
        raise KbsProtocolError(f"{what}: unknown tee {tee[:40]!r}")
    return Request(tee=tee, version=version, extra_params=_field(doc, "extra-params", what))


_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)


def check_version(version: str) -> None:
    """Upstream requires exactly `=0.4.0` (semver: build metadata ignored, a pre-release does not match)."""
    if not _SEMVER.fullmatch(version):
        raise KbsProtocolError(f"failed to parse KBS version {version[:40]!r}")
    if version.partition("+")[0] != PROTOCOL_VERSION:
        raise KbsProtocolError(
            f"KBS Client Protocol Version Mismatch: expect ={PROTOCOL_VERSION}"
            f" while the request is {version[:40]}"
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """`/auth` response. `extra_params` is the JSON string "" except for IBM SE."""

    nonce: str
    extra_params: Any = ""

    def to_json(self) -> bytes:
        return dumps({"nonce": self.nonce, "extra-params": self.extra_params})

    def hash_algorithm(self) -> str:
        """The runtime-data hash the client must use: `selected-hash-algorithm`, else sha384."""
        if isinstance(self.extra_params, dict) and SELECTED_HASH_ALGORITHM_PARAM in self.extra_params:
            name = self.extra_params[SELECTED_HASH_ALGORITHM_PARAM]
            if not isinstance(name, str) or name.lower() not in HASH_ALGORITHMS:
                raise KbsProtocolError(f"Challenge: unsupported selected-hash-algorithm {str(name)[:20]!r}")
            return name.lower()
        return DEFAULT_HASH_ALGORITHM


def parse_challenge(data: bytes | str) -> Challenge:
    what = "Challenge"
    doc = _object(loads(data, what), what)
    return Challenge(nonce=_string(doc, "nonce", what), extra_params=_field(doc, "extra-params", what))


@dataclass(frozen=True, slots=True)
class RuntimeData:
    nonce: str
    tee_pubkey: TeePubKey

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey.to_json()}


@dataclass(frozen=True, slots=True)
class InitData:
    """`format` is "toml" for the built-in attestation service; `body` the init-data document text."""

    format: str
    body: str

    def to_json(self) -> dict[str, str]:
        return {"format": self.format, "body": self.body}


@dataclass(frozen=True, slots=True)
class CompositeEvidence:
    """`primary_evidence` is the TEE's evidence JSON value; `additional_evidence` a JSON *string* of
    `{tee: evidence}` for extra devices, "" when there are none."""

    primary_evidence: Any
    additional_evidence: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"primary_evidence": self.primary_evidence, "additional_evidence": self.additional_evidence}

    def additional(self) -> dict[str, Any]:
        """The additional evidence as `{tee: evidence}` ({} when there is none)."""
        if not self.additional_evidence:
            return {}
        doc = _object(loads(self.additional_evidence, "additional_evidence"), "additional_evidence")
        unknown = [tee for tee in doc if tee not in TEES]
        if unknown:
            raise KbsProtocolError(f"additional_evidence: unknown tee {unknown[0][:40]!r}")
        return doc


@dataclass(frozen=True, slots=True)
class Attestation:
    """`POST /attest` body."""

    runtime_data: RuntimeData
    tee_evidence: CompositeEvidence
    init_data: InitData | None = None

    def to_json(self) -> bytes:
        return dumps(
            {
                "init-data": self.init_data.to_json() if self.init_data else None,
                "runtime-data": self.runtime_data.to_json(),
                "tee-evidence": self.tee_evidence.to_json(),
            }
        )


def parse_attestation(data: bytes | str) -> Attestation:
    what = "Attestation"
    doc = _object(loads(data, what), what)
    runtime = _object(_field(doc, "runtime-data", what), "runtime-data")
    runtime_data = RuntimeData(
        nonce=_string(runtime, "nonce", "runtime-data"),
        tee_pubkey=parse_tee_pubkey(_field(runtime, "tee-pubkey", "runtime-data")),
    )
    evidence = _object(_field(doc, "tee-evidence", what), "tee-evidence")
    tee_evidence = CompositeEvidence(
        primary_evidence=_field(evidence, "primary_evidence", "tee-evidence"),
        additional_evidence=_string(evidence, "additional_evidence", "tee-evidence"),
    )
    init_data = None
    raw_init = doc.get("init-data")
    if raw_init is not None:
        init = _object(raw_init, "init-data")
        init_data = InitData(
            format=_string(init, "format", "init-data"), body=_string(init, "body", "init-data")
        )
    return Attestation(runtime_data=runtime_data, tee_evidence=tee_evidence, init_data=init_data)


def token_response(token: str) -> bytes:
    """`/attest` response body."""
    return dumps({"token": token})


def parse_token_response(data: bytes | str) -> str:
    what = "attestation response"
    return _string(_object(loads(data, what), what), "token", what)


@dataclass(frozen=True, slots=True)
class ErrorInformation:
    """Upstream's error body; `type` is `ERROR_TYPE_PREFIX + <variant>`."""

    type: str
    detail: str

    @classmethod
    def of(cls, variant: str, detail: str) -> ErrorInformation:
        return cls(type=ERROR_TYPE_PREFIX + variant, detail=detail)

    @property
    def variant(self) -> str:
        return self.type.removeprefix(ERROR_TYPE_PREFIX)

    def to_json(self) -> bytes:
        return dumps({"type": self.type, "detail": self.detail})


def parse_error(data: bytes | str) -> ErrorInformation:
    what = "ErrorInformation"
    doc = _object(loads(data, what), what)
    return ErrorInformation(type=_string(doc, "type", what), detail=_string(doc, "detail", what))


@dataclass(frozen=True, slots=True)
class JweResponse:
    """A resource: flattened JSON JWE (RFC 7516 §7.2.2) with members as upstream emits them.

    `protected` is kept as sent (base64url text): it is the AAD of the content encryption."""

    protected: str
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes

    def header(self) -> dict[str, Any]:
        what = "JWE protected header"
        return _object(loads(b64url_decode(self.protected, what), what), what)

    def to_json(self) -> bytes:
        return dumps(
            {
                "protected": self.protected,
                "encrypted_key": b64url_encode(self.encrypted_key),
                "iv": b64url_encode(self.iv),
                "ciphertext": b64url_encode(self.ciphertext),
                "tag": b64url_encode(self.tag),
            }
        )


def parse_jwe_response(data: bytes | str) -> JweResponse:
    what = "JWE"
    doc = _object(loads(data, what), what)
    parts = {
        k: b64url_decode(_string(doc, k, what), f"JWE {k}")
        for k in ("encrypted_key", "iv", "ciphertext", "tag")
    }
    jwe = JweResponse(protected=_string(doc, "protected", what), **parts)
    jwe.header()  # must decode
    return jwe


# ---- runtime-data binding


def runtime_data_hash_algorithm(tee: str) -> str:
    """What the KBS hashes runtime data with for `tee` (upstream hard-codes SE -> sha512)."""
    return "sha512" if tee == "se" else DEFAULT_HASH_ALGORITHM


def runtime_data_claims(nonce: str, tee_pubkey: TeePubKey, additional_evidence: str | None) -> dict[str, Any]:
    """The object bound into the report: with `additional-evidence` for the primary TEE (even when it
    is ""), without (None) for additional devices."""
    claims: dict[str, Any] = {"tee-pubkey": tee_pubkey.to_json(), "nonce": nonce}
    if additional_evidence is not None:
        claims["additional-evidence"] = additional_evidence
    return claims


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialization."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise KbsProtocolError(f"runtime data cannot be canonicalized: {exc}") from None


def runtime_data_digest(claims: Mapping[str, Any], algorithm: str = DEFAULT_HASH_ALGORITHM) -> bytes:
    if algorithm not in HASH_ALGORITHMS:
        raise KbsProtocolError(
            f"hash algorithm {algorithm[:20]!r} is not one of {', '.join(HASH_ALGORITHMS)}"
        )
    return hashlib.new(algorithm, canonical_json(dict(claims))).digest()


def report_data(digest: bytes, size: int = 64) -> bytes:
    """The digest fitted to a report field as upstream's `regularize_data`: zero-padded, or truncated."""
    return digest[:size].ljust(size, b"\0")
