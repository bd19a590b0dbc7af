"""The guest's ephemeral TEE key pair: its public half travels in the attestation (`tee-pubkey`) and
ends up in the token; the KBS wraps every resource key for it (upstream `kbs_protocol::TeeKeyPair`).

Upstream's default is EC P-256 with ECDH-ES+A256KW; RSA keys are 2048-bit with RSA-OAEP-256. The
algorithm names are those of the attestation agent's `tee_key_algorithm` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from protocols.kbs import MAX_RSA_BITS, TeePubKey, tee_pubkey_of
from protocols.kbs_client.errors import JweError, TeeKeyError
from protocols.kbs_client.jwe import decrypt_response, ecdh_es_kek, ephemeral_public_key

ALGORITHM_EC_P256 = "ECDH-ES+A256KW-P256"
ALGORITHM_EC_P521 = "ECDH-ES+A256KW-P521"
ALGORITHM_RSA = "RSA-OAEP-256"
DEFAULT_ALGORITHM = ALGORITHM_EC_P256
TEE_KEY_ALGORITHMS = (ALGORITHM_EC_P256, ALGORITHM_EC_P521, ALGORITHM_RSA)
RSA_KEY_BITS = 2048

_CURVE_NAMES = {"secp256r1": "P-256", "secp521r1": "P-521"}

TeePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class TeeKeyPair:
    """A TEE key pair that exports its public JWK and decrypts resource responses made for it."""

    def __init__(self, private_key: TeePrivateKey) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if private_key.curve.name not in _CURVE_NAMES:
                raise TeeKeyError(f"EC curve {private_key.curve.name} is not P-256 or P-521")
        elif private_key.key_size < RSA_KEY_BITS:
            raise TeeKeyError(f"RSA key of {private_key.key_size} bits is shorter than {RSA_KEY_BITS}")
        elif private_key.key_size > MAX_RSA_BITS:
            raise TeeKeyError(f"RSA key of {private_key.key_size} bits is longer than the KBS takes")
        self._key = private_key
        self._pubkey = tee_pubkey_of(private_key.public_key())

    @classmethod
    def generate(cls, algorithm: str = DEFAULT_ALGORITHM) -> TeeKeyPair:
        if algorithm == ALGORITHM_EC_P256:
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == ALGORITHM_EC_P521:
            return cls(ec.generate_private_key(ec.SECP521R1()))
        if algorithm == ALGORITHM_RSA:
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS))
        raise TeeKeyError(f"unknown TEE key algorithm {algorithm[:40]!r}; use one of {TEE_KEY_ALGORITHMS}")

    @classmethod
    def from_pem(cls, pem: str | bytes) -> TeeKeyPair:
        """Load an unencrypted PEM private key (RSA PKCS#1 or PKCS#8, EC PKCS#8 or SEC1)."""
        data = pem.encode("utf-8", errors="replace") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise TeeKeyError("TEE key is not an unencrypted PEM RSA or EC private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TeeKeyError("TEE key is neither RSA nor EC")
        return cls(key)

    def to_pem(self) -> str:
        """Upstream's export format: RSA as PKCS#1, EC as PKCS#8 (the token API hands this out)."""
        fmt = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if isinstance(self._key, rsa.RSAPrivateKey)
            else serialization.PrivateFormat.PKCS8
        )
        return self._key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode(
            "ascii"
        )

    @property
    def public_key(self) -> TeePubKey:
        """The `tee-pubkey` of the attestation's runtime data."""
        return self._pubkey

    def public_jwk(self) -> dict[str, Any]:
        return dict(self._pubkey.to_json())

    def decrypt_response(self, body: bytes | str) -> bytes:
        """The plaintext of a KBS resource response encrypted for this key."""
        return decrypt_response(body, self._unwrap_cek)

    def _unwrap_cek(self, header: Mapping[str, Any], encrypted_key: bytes) -> bytes:
        alg = header["alg"]
        if alg != self._pubkey.alg:
            raise JweError(f"JWE key wrapping {str(alg)[:30]!r} is not this key's {self._pubkey.alg}")
        if isinstance(self._key, rsa.RSAPrivateKey):
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
            try:
                return self._key.decrypt(encrypted_key, oaep)
            except ValueError:
                raise JweError("RSA-OAEP-256 unwrap of the content key failed") from None
        crv, peer = ephemeral_public_key(header)
        if peer.curve.name != self._key.curve.name:
            raise JweError(f"JWE ephemeral key curve {crv[:20]!r} is not this key's curve")
        shared = self._key.exchange(ec.ECDH(), peer)
        try:
            return aes_key_unwrap(ecdh_es_kek(shared, header), encrypted_key)
        except (InvalidUnwrap, ValueError):
            raise JweError("A256KW unwrap of the content key failed") from None
