"""Resources wrapped for the attested TEE key: flattened JSON JWE, as Trustee's `kbs/src/jwe`.

Content: A256GCM under a fresh 32-byte key, 12-byte IV, AAD = the ASCII `protected` member (RFC 7516
§5.1 step 14). Key management by the TEE key's JWK `alg`:
* `ECDH-ES+A256KW` (P-256, P-384, P-521): ephemeral ECDH on the key's curve, Concat KDF (SHA-256,
  AlgorithmID "ECDH-ES+A256KW", empty PartyU/VInfo, 256-bit output, RFC 7518 §4.6.2), AES key wrap of
  the content key; the ephemeral public key is the header `epk`.
* `RSA-OAEP-256`: RSA-OAEP with SHA-256 and MGF1-SHA-256.
Upstream still accepts `RSA1_5` with a warning; here it is refused (PKCS#1 v1.5 key transport is
deprecated, and no current guest sends it).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from protocols.kbs import (
    ALG_ECDH_ES_A256KW,
    ALG_RSA_OAEP_256,
    EcPublicJwk,
    JweResponse,
    KbsProtocolError,
    TeePubKey,
    b64url_encode,
    dumps,
    tee_pubkey_of,
)
from verifier.lru import LruCache

ENC_A256GCM = "A256GCM"
_CEK_BYTES = 32
_IV_BYTES = 12
_TAG_BYTES = 16
_EC_KEYS: LruCache[EcPublicJwk, ec.EllipticCurvePublicKey] = LruCache(1024)
_OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class JweError(ValueError):
    """The TEE key cannot receive a resource (unsupported algorithm or curve, unusable key)."""


def concat_kdf_otherinfo(alg: str, key_bits: int) -> bytes:
    """AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo, each length-prefixed (RFC 7518 §4.6.2)."""
    name = alg.encode("ascii")
    return len(name).to_bytes(4, "big") + name + bytes(4) + bytes(4) + key_bits.to_bytes(4, "big")


def check_key(tee_pubkey: TeePubKey) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The usable public key for `tee_pubkey`, or `JweError` saying why it cannot be used.

    Checked EC keys are remembered: /attest checks the key and the session's /resource requests
    encrypt to it. Only EC keys, whose size is fixed once checked (an RSA JWK could be megabytes)."""
    expected = ALG_ECDH_ES_A256KW if isinstance(tee_pubkey, EcPublicJwk) else ALG_RSA_OAEP_256
    if tee_pubkey.alg != expected:
        kind = "EC" if isinstance(tee_pubkey, EcPublicJwk) else "RSA"
        raise JweError(f"{kind} tee-pubkey alg {tee_pubkey.alg[:30]!r} is not supported (only {expected})")
    if isinstance(tee_pubkey, EcPublicJwk):
        known = _EC_KEYS.get(tee_pubkey)
        if known is not None:
            return known
    try:
        key = tee_pubkey.public_key()
    except KbsProtocolError as exc:
        raise JweError(str(exc)) from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(tee_pubkey, EcPublicJwk):
        _EC_KEYS.put(tee_pubkey, key)
    return key


def _protected(header: dict[str, object]) -> str:
    return b64url_encode(dumps(header))


def encrypt(plaintext: bytes, tee_pubkey: TeePubKey) -> JweResponse:
    """`plaintext` encrypted to `tee_pubkey`."""
    public_key = check_key(tee_pubkey)
    cek = AESGCM.generate_key(bit_length=8 * _CEK_BYTES)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(public_key.curve)
        shared = ephemeral.exchange(ec.ECDH(), public_key)
        kdf = ConcatKDFHash(
            hashes.SHA256(), length=_CEK_BYTES, otherinfo=concat_kdf_otherinfo(ALG_ECDH_ES_A256KW, 256)
        )
        encrypted_key = aes_key_wrap(kdf.derive(shared), cek)
        epk = tee_pubkey_of(ephemeral.public_key()).to_json()
        header: dict[str, object] = {
            "alg": ALG_ECDH_ES_A256KW,
            "enc": ENC_A256GCM,
            "epk": {"crv": epk["crv"], "kty": "EC", "x": epk["x"], "y": epk["y"]},
        }
    else:
        encrypted_key = public_key.encrypt(cek, _OAEP_SHA256)
        header = {"alg": ALG_RSA_OAEP_256, "enc": ENC_A256GCM}
    protected = _protected(header)
    iv = os.urandom(_IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return JweResponse(
        protected=protected,
        encrypted_key=encrypted_key,
        iv=iv,
        ciphertext=sealed[:-_TAG_BYTES],
        tag=sealed[-_TAG_BYTES:],
    )
