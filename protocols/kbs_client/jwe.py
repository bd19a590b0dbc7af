"""Resource responses: RFC 7516 flattened-JSON JWE, as the KBS sends them (sans-IO).

The KBS always encrypts the content with A256GCM under a random key, and wraps that key for the
`tee-pubkey` the guest attested with: RSA-OAEP-256, or ECDH-ES+A256KW (Concat KDF, RFC 7518 §4.6).
The additional authenticated data is the `protected` member exactly as received. Anything else
(another `enc`, compression, critical extensions, a key-wrapping algorithm other than the one the
guest asked for) is refused rather than guessed at.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

from protocols.kbs import (
    ALG_ECDH_ES_A256KW,
    EcPublicJwk,
    JweResponse,
    KbsProtocolError,
    b64url_decode,
    parse_jwe_response,
)
from protocols.kbs_client.errors import JweError

CONTENT_ENCRYPTION = "A256GCM"
MAX_JWE_BYTES = 64 * 1024 * 1024
_GCM_IV_BYTES = 12
_GCM_TAG_BYTES = 16
_CEK_BYTES = 32
_A256KW_KEY_BYTES = 32

# Unwraps the content key: (protected header, encrypted_key) -> 32-byte key. Supplied by the TEE key.
KeyUnwrapper = Callable[[Mapping[str, Any], bytes], bytes]


def decrypt_response(body: bytes | str, unwrap: KeyUnwrapper) -> bytes:
    """The plaintext of a resource response, after unwrapping its content key with `unwrap`."""
    if len(body) > MAX_JWE_BYTES:
        raise JweError(f"resource response is larger than {MAX_JWE_BYTES} bytes")
    try:
        jwe = parse_jwe_response(body)
        header = jwe.header()
    except KbsProtocolError as exc:
        raise JweError(f"resource response is not a flattened JWE: {exc}") from None
    _check(jwe, header)
    cek = unwrap(header, jwe.encrypted_key)
    if len(cek) != _CEK_BYTES:
        raise JweError(f"unwrapped content key is {len(cek)} bytes, A256GCM needs {_CEK_BYTES}")
    try:
        return AESGCM(cek).decrypt(jwe.iv, jwe.ciphertext + jwe.tag, jwe.protected.encode("ascii"))
    except InvalidTag:
        raise JweError("JWE authentication tag does not match: wrong key or tampered response") from None


def ecdh_es_kek(shared_secret: bytes, header: Mapping[str, Any]) -> bytes:
    """The AES-256 key-wrapping key of ECDH-ES+A256KW: Concat KDF over SHA-256 (RFC 7518 §4.6.2)."""
    other_info = (
        _length_prefixed(ALG_ECDH_ES_A256KW.encode("ascii"))
        + _length_prefixed(_optional_b64(header, "apu"))
        + _length_prefixed(_optional_b64(header, "apv"))
        + struct.pack(">I", _A256KW_KEY_BYTES * 8)
    )
    kdf = ConcatKDFHash(algorithm=hashes.SHA256(), length=_A256KW_KEY_BYTES, otherinfo=other_info)
    return kdf.derive(shared_secret)


def ephemeral_public_key(header: Mapping[str, Any]) -> tuple[str, ec.EllipticCurvePublicKey]:
    """(curve name, key) of the sender's ephemeral EC key (`epk`), checked to be on its curve."""
    epk = header.get("epk")
    if not isinstance(epk, dict) or epk.get("kty") != "EC":
        raise JweError("ECDH-ES JWE header has no EC 'epk'")
    members = [epk.get(name) for name in ("crv", "x", "y")]
    if not all(isinstance(member, str) for member in members):
        raise JweError("ECDH-ES JWE 'epk' needs string 'crv', 'x' and 'y'")
    crv, x, y = (str(member) for member in members)
    try:
        return crv, EcPublicJwk(crv=crv, alg=ALG_ECDH_ES_A256KW, x=x, y=y).public_key()
    except KbsProtocolError as exc:
        raise JweError(f"ECDH-ES JWE 'epk' is unusable: {exc}") from None


def _check(jwe: JweResponse, header: Mapping[str, Any]) -> None:
    if not isinstance(header.get("alg"), str):
        raise JweError("JWE protected header has no 'alg'")
    if header.get("enc") != CONTENT_ENCRYPTION:
        raise JweError(f"JWE content encryption {str(header.get('enc'))[:20]!r} is not {CONTENT_ENCRYPTION}")
    if "zip" in header:
        raise JweError("compressed JWE payloads are not accepted")
    if "crit" in header:
        raise JweError("JWE critical header extensions are not supported")
    if len(jwe.iv) != _GCM_IV_BYTES:
        raise JweError(f"JWE iv is {len(jwe.iv)} bytes, A256GCM needs {_GCM_IV_BYTES}")
    if len(jwe.tag) != _GCM_TAG_BYTES:
        raise JweError(f"JWE tag is {len(jwe.tag)} bytes, A256GCM needs {_GCM_TAG_BYTES}")


def _optional_b64(header: Mapping[str, Any], name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise JweError(f"JWE header {name!r} is not a string")
    try:
        return b64url_decode(value, f"JWE header {name!r}")
    except KbsProtocolError as exc:
        raise JweError(str(exc)) from None


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data
