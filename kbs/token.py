"""Attestation-token checks before a resource is released (upstream `kbs/src/token`).

A token is accepted when its signature verifies under a trusted key and it has not expired. Its key is
found as upstream does: a header `jwk` is used when it is one of the trusted keys (the built-in
attestation service's own signer, keys of `trusted_jwk_sets`), when its `x5c` chain leads to a
certificate of `trusted_certs_paths`, or, only with `insecure_header_jwk`, as is; a header `kid` is
looked up in `trusted_jwk_sets`. The TEE key the resource will be encrypted to comes from the claims
(`extra_teekey_paths` first, then upstream's known paths), so a token is only ever useful to the
holder of that key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from kbs.jwt import (
    JwtError,
    PublicKey,
    check_times,
    der_from_b64,
    key_id,
    parse,
    public_key_from_jwk,
    verify_signature,
)
from protocols.jws import Jws
from protocols.kbs import (
    DEFAULT_HASH_ALGORITHM,
    KbsProtocolError,
    TeePubKey,
    loads,
    parse_tee_pubkey,
    runtime_data_digest,
    runtime_data_hash_algorithm,
)
from protocols.kbs import report_data as report_data_field
from verifier.errors import VerificationError
from verifier.lru import LruCache
from verifier.x509util import check_validity, load_der_certificate, load_pem_certificates, verify_issued_by

ANNOTATED_EVIDENCE_PATH = "/submods/cpu0/ear.veraison.annotated-evidence"
EAR_TEE_KEY_PATH = ANNOTATED_EVIDENCE_PATH + "/runtime_data_claims/tee-pubkey"
TEE_KEY_PATHS = (
    "/tdx/attester_runtime_data/tee-pubkey",
    "/tdx/attester_user_data/tee-pubkey",
    "/customized_claims/runtime_data/tee-pubkey",
    EAR_TEE_KEY_PATH,
    "/tee-pubkey",
)
INIT_DATA_CLAIMS_PATH = ANNOTATED_EVIDENCE_PATH + "/init_data_claims"
_ANNOTATION_KEYS = frozenset({"report_data", "init_data", "runtime_data_claims", "init_data_claims"})
_MAX_CHAIN = 8
_STORED_TOKENS = 256  # sessions between /attest and their /resource requests, per replica


class TokenError(ValueError):
    """The attestation token is not acceptable; the message says why."""


@dataclass(frozen=True)
class TokenSettings:
    """Upstream's `[attestation_token]` section (JWKS sources are local files here)."""

    trusted_jwk_sets: tuple[str, ...] = ()
    trusted_certs_paths: tuple[str, ...] = ()
    extra_teekey_paths: tuple[str, ...] = ()
    insecure_header_jwk: bool = False


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    tee_pubkey: TeePubKey
    init_data_claims: Any = field(default=None)


def json_pointer(doc: Any, pointer: str) -> Any | None:
    """RFC 6901 lookup; None when any step is missing."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        return None
    for raw in pointer[1:].split("/"):
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict) and step in doc:
            doc = doc[step]
        elif isinstance(doc, list) and step.isdigit() and int(step) < len(doc):
            doc = doc[int(step)]
        else:
            return None
    return doc


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        return Path(source.removeprefix("file://"))
    if "://" in source:
        raise TokenError(f"{source[:80]!r}: only local files (path or file://) are supported")
    return Path(source)


def load_jwk_set(source: str) -> dict[str, PublicKey]:
    """kid -> key of a JWKS file (`{"keys": [...]}`); keys without `kid` are named by fingerprint."""
    path = _local_path(source)
    try:
        doc = loads(path.read_bytes(), f"JWKS {path}")
    except OSError as exc:
        raise TokenError(f"cannot read JWKS {path}: {exc.strerror}") from None
    except KbsProtocolError as exc:
        raise TokenError(str(exc)) from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise TokenError(f"JWKS {path} has no 'keys' list")
    out: dict[str, PublicKey] = {}
    for jwk in keys:
        try:
            key = public_key_from_jwk(jwk)
        except JwtError as exc:
            raise TokenError(f"JWKS {path}: {exc}") from None
        kid = jwk.get("kid")
        out[kid if isinstance(kid, str) else key_id(key)] = key
    return out


class TokenVerifier:
    def __init__(
        self,
        settings: TokenSettings | None = None,
        own_keys: Iterable[PublicKey] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`own_keys`: the built-in attestation service's signing keys, trusted without configuration."""
        self.settings = settings or TokenSettings()
        self._clock = clock
        self._by_kid: dict[str, PublicKey] = {}
        for source in self.settings.trusted_jwk_sets:
            self._by_kid.update(load_jwk_set(source))
        self._trusted = {key_id(key) for key in [*own_keys, *self._by_kid.values()]}
        self._anchors: list[x509.Certificate] = []
        for source in self.settings.trusted_certs_paths:
            path = _local_path(source)
            try:
                self._anchors += load_pem_certificates(path.read_bytes(), f"trusted certificate {path}")
            except OSError as exc:
                raise TokenError(f"cannot read trusted certificates {path}: {exc.strerror}") from None
            except VerificationError as exc:
                raise TokenError(str(exc)) from None
        self._paths = (*self.settings.extra_teekey_paths, *TEE_KEY_PATHS)
        self._stored: LruCache[str, VerifiedToken] = LruCache(_STORED_TOKENS)

    def verify(self, token: str) -> VerifiedToken:
        try:
            jws = parse(token)
            verify_signature(jws, self._signing_key(jws))
            check_times(jws.claims, self._clock())
        except JwtError as exc:
            raise TokenError(str(exc)) from None
        return self._verified(jws)

    def stored(self, token: str) -> VerifiedToken:
        """A token read back from the session store, where this KBS's own attestation service put it;
        kept parsed for its next reads (the session's resource requests).

        Its signature is not checked again: the store lives beside the token signing key (same
        directory, same access), so whoever could alter a stored token could as well sign a new
        one -- a second check would cost a signature verification per resource and prove nothing.
        Expiry and the TEE key are read as for any token."""
        verified = self._stored.get(token)
        try:
            if verified is None:
                jws = parse(token)
                check_times(jws.claims, self._clock())
                verified = self._verified(jws, check_key_binding=False)
                self._stored.put(token, verified)  # /attest just stored it: /resource comes next
            else:
                check_times(verified.claims, self._clock())
        except JwtError as exc:
            raise TokenError(str(exc)) from None
        return verified

    def _verified(self, jws: Jws, *, check_key_binding: bool = True) -> VerifiedToken:
        return VerifiedToken(
            claims=jws.claims,
            tee_pubkey=self.tee_pubkey(jws.claims, check_key_binding),
            init_data_claims=json_pointer(jws.claims, INIT_DATA_CLAIMS_PATH),
        )

    def _signing_key(self, jws: Jws) -> PublicKey:
        jwk, kid = jws.header.get("jwk"), jws.header.get("kid")
        if jwk is not None:
            key = public_key_from_jwk(jwk)
            if key_id(key) in self._trusted:
                return key
            x5c = jwk.get("x5c") if isinstance(jwk, dict) else None
            if x5c is not None and self._anchors:
                self._check_chain(key, x5c)
                return key
            if self.settings.insecure_header_jwk:
                return key
            raise JwtError("the token's header jwk is not a trusted key and has no trusted x5c chain")
        if isinstance(kid, str):
            found = self._by_kid.get(kid)
            if found is None:
                raise JwtError(f"token kid {kid[:60]!r} is not in the trusted JWK sets")
            return found
        raise JwtError("token header has neither jwk nor kid")

    def _check_chain(self, key: PublicKey, x5c: Any) -> None:
        if not isinstance(x5c, list) or not 1 <= len(x5c) <= _MAX_CHAIN:
            raise JwtError(f"header jwk x5c must be a list of 1 to {_MAX_CHAIN} certificates")
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            chain = [load_der_certificate(der_from_b64(c, "x5c entry"), "x5c certificate") for c in x5c]
            if key_id(chain[0].public_key()) != key_id(key):  # type: ignore[arg-type]
                raise JwtError("the x5c leaf certificate does not hold the header jwk")
            for cert in chain:
                check_validity(cert, now, "x5c certificate")
            for cert, issuer in itertools.pairwise(chain):
                verify_issued_by(cert, issuer, "x5c certificate")
            self._check_anchor(chain[-1], now)
        except (VerificationError, TypeError) as exc:
            raise JwtError(f"x5c chain: {exc}") from None

    def _check_anchor(self, top: x509.Certificate, now: datetime) -> None:
        for anchor in self._anchors:
            if top == anchor:
                return
            if top.issuer == anchor.subject:
                check_validity(anchor, now, "trusted certificate")
                verify_issued_by(top, anchor, "x5c certificate")
                return
        raise JwtError("x5c chain does not lead to a trusted certificate")

    def tee_pubkey(self, claims: Mapping[str, Any], check_key_binding: bool = True) -> TeePubKey:
        """The key resources are encrypted to; from an EAR it must be the one the hardware bound."""
        for path in self._paths:
            value = json_pointer(claims, path)
            if value is not None:
                try:
                    key = parse_tee_pubkey(value)
                except KbsProtocolError as exc:
                    raise TokenError(f"Failed to parse Tee public key: {exc}") from None
                if path == EAR_TEE_KEY_PATH and check_key_binding:
                    check_binding(json_pointer(claims, ANNOTATED_EVIDENCE_PATH))
                return key
        raise TokenError("Tee public key not found in Attestation Token")


def _decodings(report_data: str) -> list[bytes]:
    """A report_data claim as the verifiers write it: hex (SNP, TDX, vTPM) or base64 (sample)."""
    out = []
    with contextlib.suppress(ValueError):
        out.append(bytes.fromhex(report_data))
    with contextlib.suppress(ValueError, binascii.Error):
        out.append(base64.b64decode(report_data, validate=True))
    return out


def check_binding(annotated: Any) -> None:
    """The token's `runtime_data_claims` must hash to the verified `report_data` (zero-padded as the
    TEE pads it), so the tee-pubkey in the token is the one the TEE's report bound -- a token whose key
    was swapped, by a buggy or lenient issuer, is refused. A token without the claims to check this
    (e.g. `verbose_token = false` with additional devices) is refused too."""
    if not isinstance(annotated, dict):
        raise TokenError("token has no annotated evidence to check the tee-pubkey binding against")
    runtime, report_data = annotated.get("runtime_data_claims"), annotated.get("report_data")
    if not isinstance(runtime, dict) or not isinstance(report_data, str):
        raise TokenError("token lacks runtime_data_claims or report_data: the tee-pubkey binding is unproven")
    tees = [key for key in annotated if key not in _ANNOTATION_KEYS]
    algorithm = runtime_data_hash_algorithm(tees[0]) if len(tees) == 1 else DEFAULT_HASH_ALGORITHM
    claims = dict(runtime)
    claims.setdefault("additional-evidence", "")  # left out of non-verbose tokens
    try:
        digest = runtime_data_digest(claims, algorithm)
    except KbsProtocolError as exc:
        raise TokenError(str(exc)) from None
    for bound in _decodings(report_data):
        if len(bound) >= len(digest) and bound == report_data_field(digest, len(bound)):
            return
    raise TokenError("the token's tee-pubkey is not the key bound into the TEE report (report_data mismatch)")


def own_keys_of(jwks: Mapping[str, Any]) -> Sequence[PublicKey]:
    """The public keys of a JWK Set document (e.g. the attestation service's `jwks()`)."""
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise TokenError("JWK set has no 'keys' list")
    try:
        return [public_key_from_jwk(jwk) for jwk in keys]
    except JwtError as exc:
        raise TokenError(str(exc)) from None
