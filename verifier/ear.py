"""EAR attestation result tokens (draft-ietf-rats-ear, AR4SI trust vectors) as Trustee issues them.

ES256 JWT; header `{"typ":"JWT","alg":"ES256","jwk":{...}}` where the JWK carries the signer's public
key and, when configured, `x5u` and an `x5c` chain (standard base64 DER) the KBS can check against its
trusted roots. Claims: `eat_profile`, `iat`, `ear.verifier-id`, `submods` (one appraisal per attester:
`ear.status`, `ear.trustworthiness-vector`, `ear.appraisal-policy-id`, `ear.veraison.annotated-evidence`,
policy extensions), `exp`, `iss`. Status is the worst tier over the vector (rust-ear's rule).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from protocols import strictjson

TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
# Appraisal keys a policy extension may not take over.
APPRAISAL_KEYS = frozenset(
    {
        "ear.status",
        "ear.trustworthiness-vector",
        "ear.appraisal-policy-id",
        "ear.veraison.annotated-evidence",
        "ear.veraison.policy-claims",
    }
)
DEFAULT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
DEFAULT_ISSUER = "CoCo-Attestation-Service"
DEFAULT_DEVELOPER = "https://confidentialcontainers.org"
DEFAULT_BUILD = "attestation-service 0.1.0"
_P256_COORDINATE_BYTES = 32


class EarError(Exception):
    """Signing material or appraisal input is unusable."""


class Tier(IntEnum):
    """AR4SI trust tiers, ordered from no claim to worst."""

    NONE = 0
    AFFIRMING = 1
    WARNING = 2
    CONTRAINDICATED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def tier(value: int) -> Tier:
    """Tier of one trust claim value (-128..127): -1..1 none, -32..31 affirming, -96..95 warning."""
    if -1 <= value <= 1:
        return Tier.NONE
    if -32 <= value < 32:
        return Tier.AFFIRMING
    if -96 <= value < 96:
        return Tier.WARNING
    return Tier.CONTRAINDICATED


def status(vector: Mapping[str, int]) -> str:
    """`ear.status` of an appraisal: the worst tier among its trust claims."""
    return max((tier(value) for value in vector.values()), default=Tier.NONE).label


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Upstream's `attestation_token_broker` options (names as in its config file)."""

    duration_min: int = 5
    issuer_name: str = DEFAULT_ISSUER
    developer_name: str = DEFAULT_DEVELOPER
    build_name: str = DEFAULT_BUILD
    profile_name: str = DEFAULT_PROFILE
    verbose_token: bool = True


def appraisal(
    vector: Mapping[str, int],
    policy_id: str,
    annotated_evidence: Mapping[str, Any],
    extensions: Mapping[str, Any],
) -> dict[str, Any]:
    """One submod. `vector` holds only the claims the policy set (as rust-ear serializes it)."""
    for name, value in vector.items():
        if name not in TRUST_CLAIMS:
            raise EarError(f"{name[:60]!r} is not an AR4SI trust claim (one of {', '.join(TRUST_CLAIMS)})")
        if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
            raise EarError(f"trust claim {name!r} must be an integer in -128..127, got {value!r:.40}")
    if not vector:
        raise EarError("at least one trust claim must be set")
    clashes = APPRAISAL_KEYS.intersection(extensions)
    if clashes:
        raise EarError(f"extensions may not replace appraisal fields: {', '.join(sorted(clashes))}")
    submod: dict[str, Any] = {
        "ear.status": status(vector),
        "ear.trustworthiness-vector": {name: vector[name] for name in TRUST_CLAIMS if name in vector},
        "ear.appraisal-policy-id": policy_id,
    }
    if annotated_evidence:
        submod["ear.veraison.annotated-evidence"] = dict(annotated_evidence)
    submod.update(extensions)
    return submod


def ear_claims(submods: Mapping[str, Mapping[str, Any]], settings: TokenSettings, now: int) -> dict[str, Any]:
    """The token body for appraisals `submods` issued at unix time `now`."""
    if not submods:
        raise EarError("an EAR needs at least one submod")
    return {
        "eat_profile": settings.profile_name,
        "iat": now,
        "ear.verifier-id": {"developer": settings.developer_name, "build": settings.build_name},
        "submods": {name: dict(submod) for name, submod in submods.items()},
        "exp": now + settings.duration_min * 60,
        "iss": settings.issuer_name,
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: Any) -> bytes:
    return strictjson.dumps(value)


class EarSigner:
    """A P-256 key (configured, or ephemeral: then the KBS must trust the header `jwk` as is)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        chain: list[x509.Certificate] | None = None,
        cert_url: str | None = None,
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise EarError(f"token signing key must be P-256, not {key.curve.name}")
        if chain and chain[0].public_key() != key.public_key():
            raise EarError("the first certificate of the token signer chain does not hold the signing key")
        self._key = key
        self._jwk = self._public_jwk(key, chain or [], cert_url)
        self._header = _b64url(_compact_json({"typ": "JWT", "alg": "ES256", "jwk": self._jwk}))

    @classmethod
    def ephemeral(cls) -> EarSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_files(
        cls, key_path: Path, cert_path: Path | None = None, cert_url: str | None = None
    ) -> EarSigner:
        """Upstream's `signer` section: `key_path` (PEM), optional `cert_path` (PEM chain, leaf first)."""
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise EarError(f"cannot read token signing key {key_path}: {exc.strerror}") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise EarError(f"token signing key {key_path} is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EarError(f"token signing key {key_path} is not an EC key (P-256 is required)")
        chain = None
        if cert_path is not None:
            try:
                chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
            except OSError as exc:
                raise EarError(f"cannot read token certificate chain {cert_path}: {exc.strerror}") from None
            except ValueError:
                raise EarError(f"token certificate chain {cert_path} is not PEM certificates") from None
        return cls(key, chain, cert_url)

    @staticmethod
    def _public_jwk(
        key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate], cert_url: str | None
    ) -> dict[str, Any]:
        numbers = key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": _b64url(numbers.x.to_bytes(_P256_COORDINATE_BYTES, "big")),
            "y": _b64url(numbers.y.to_bytes(_P256_COORDINATE_BYTES, "big")),
        }
        if cert_url is not None:
            jwk["x5u"] = cert_url
        if chain:
            ders = (cert.public_bytes(serialization.Encoding.DER) for cert in chain)
            jwk["x5c"] = [base64.b64encode(der).decode("ascii") for der in ders]
        return jwk

    @property
    def jwk(self) -> dict[str, Any]:
        return dict(self._jwk)

    def jwks(self) -> dict[str, Any]:
        """The JWK Set served at `/.well-known/jwks.json`."""
        return {"keys": [self.jwk]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Compact JWS (ES256: raw r||s, 32 bytes each)."""
        signing_input = self._header + "." + _b64url(_compact_json(claims))
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(_P256_COORDINATE_BYTES, "big")
        return signing_input + "." + _b64url(signature)
