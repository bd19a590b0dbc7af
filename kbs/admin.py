"""Admin API authorization, upstream's `[admin]` section.

Modes: `AuthenticatedAuthorization` (an `Authorization: Bearer` JWT signed by a configured identity
provider -- EdDSA/Ed25519, ES256 or ES384 -- unexpired, with a string `role` claim, `iss`/`aud`
checked when the provider names them; then a regex ACL `role -> allowed_endpoints` matched against
the request URI), `DenyAll`, and `InsecureAllowAll`. Upstream defaults to `InsecureAllowAll`; here
the default is `AuthenticatedAuthorization` when identity providers are configured, else `DenyAll`:
the insecure mode must be asked for by name.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from kbs.jwt import JwtError, PublicKey, check_times, load_public_key_pem, parse, verify_signature
from kbs.token import TokenError, load_jwk_set
from protocols.jws import Jws

log = logging.getLogger(__name__)


class AdminConfigError(ValueError):
    """The `[admin]` configuration is invalid."""


class AdminDenied(Exception):
    """The request may not use the admin API; the message says why (never the token itself)."""


class AuthorizationMode(Enum):
    INSECURE_ALLOW_ALL = "InsecureAllowAll"
    DENY_ALL = "DenyAll"
    AUTHENTICATED = "AuthenticatedAuthorization"


@dataclass(frozen=True)
class IdentityProvider:
    keys: tuple[PublicKey, ...]
    issuer: str = ""
    audience: str = ""

    @classmethod
    def from_config(cls, entry: Any) -> IdentityProvider:
        """`{issuer?, audience?, public_key_uri?, jwk_set_uri?}` with local files only."""
        if not isinstance(entry, dict):
            raise AdminConfigError("identity_providers entries must be tables")
        issuer, audience = entry.get("issuer", ""), entry.get("audience", "")
        pem_uri, jwks_uri = entry.get("public_key_uri"), entry.get("jwk_set_uri")
        if not isinstance(issuer, str) or not isinstance(audience, str):
            raise AdminConfigError("identity provider issuer and audience must be strings")
        if pem_uri is None and jwks_uri is None:
            raise AdminConfigError("an identity provider must set public_key_uri and/or jwk_set_uri")
        keys: list[PublicKey] = []
        try:
            if pem_uri is not None:
                path = Path(str(pem_uri).removeprefix("file://"))
                keys.append(load_public_key_pem(path.read_bytes(), f"admin public key {path}"))
            if jwks_uri is not None:
                keys += load_jwk_set(str(jwks_uri)).values()
        except OSError as exc:
            raise AdminConfigError(f"cannot read admin public key: {exc.strerror}") from None
        except (JwtError, TokenError) as exc:
            raise AdminConfigError(str(exc)) from None
        return cls(tuple(keys), issuer, audience)


@dataclass(frozen=True)
class AclRule:
    role: str
    allowed_endpoints: re.Pattern[str]

    @classmethod
    def from_config(cls, entry: Any) -> AclRule:
        if not isinstance(entry, dict) or not isinstance(entry.get("role"), str):
            raise AdminConfigError("acls entries need a string role")
        pattern = entry.get("allowed_endpoints", "")
        if not isinstance(pattern, str) or not pattern.startswith("^/kbs") or not pattern.endswith("$"):
            raise AdminConfigError("Admin Role regex must be anchored (start with ^/kbs, end with $).")
        try:
            return cls(entry["role"], re.compile(pattern))
        except re.error as exc:
            raise AdminConfigError(f"Failed to parse regex: {exc}") from None


@dataclass
class AdminAuth:
    mode: AuthorizationMode
    providers: Sequence[IdentityProvider] = ()
    acls: Sequence[AclRule] = ()
    clock: Callable[[], float] = field(default=time.time)

    def __post_init__(self) -> None:
        if self.mode is AuthorizationMode.INSECURE_ALLOW_ALL:
            log.warning("admin API: InsecureAllowAll -- anyone who can reach the KBS can administer it")
        if self.mode is AuthorizationMode.AUTHENTICATED and not self.providers:
            raise AdminConfigError(
                "AuthenticatedAuthorization needs [admin.authentication.bearer_jwt] providers"
            )

    @classmethod
    def from_config(cls, section: Any) -> AdminAuth:
        """The `[admin]` table (or None)."""
        section = section or {}
        if not isinstance(section, dict):
            raise AdminConfigError("[admin] must be a table")
        bearer = (section.get("authentication") or {}).get("bearer_jwt") or {}
        providers = [IdentityProvider.from_config(e) for e in bearer.get("identity_providers") or []]
        acls = [
            AclRule.from_config(e)
            for e in ((section.get("authorization") or {}).get("regex_acl") or {}).get("acls") or []
        ]
        default = AuthorizationMode.AUTHENTICATED if providers else AuthorizationMode.DENY_ALL
        try:
            mode = AuthorizationMode(section.get("authorization_mode", default.value))
        except ValueError:
            modes = ", ".join(m.value for m in AuthorizationMode)
            raise AdminConfigError(f"authorization_mode must be one of {modes}") from None
        if "authorization_mode" not in section and mode is AuthorizationMode.DENY_ALL:
            log.warning(
                "admin API: no [admin] identity providers and no authorization_mode: DenyAll, every"
                " admin request is refused (upstream's default here is InsecureAllowAll)"
            )
        return cls(mode, providers, acls)

    def check(self, authorization: str | None, uri: str) -> str:
        """The admin's role when allowed for `uri`; else `AdminDenied`."""
        if self.mode is AuthorizationMode.INSECURE_ALLOW_ALL:
            return "insecure"
        if self.mode is AuthorizationMode.DENY_ALL:
            raise AdminDenied("the admin API is disabled (DenyAll)")
        if not authorization:
            raise AdminDenied("no Authorization header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AdminDenied("Failed to parse HTTP Auth Bearer header")
        role = self._role(token.strip())
        if any(ord(char) < 0x20 or char == "\x7f" for char in uri):
            # Python's `$` also matches before a final newline (Rust's, upstream's, does not): a
            # path ending in %0a must not pass a rule anchored with `$`.
            raise AdminDenied("path with control characters")
        for acl in self.acls:
            if acl.role == role and acl.allowed_endpoints.search(uri):
                return role
        raise AdminDenied(f"Role {role[:60]} not allowed for path {uri[:200]}")

    def _role(self, token: str) -> str:
        try:
            jws = parse(token)
        except JwtError as exc:
            raise AdminDenied(f"invalid admin token: {exc}") from None
        last = "no identity provider accepts the token"
        for provider in self.providers:
            try:
                self._accept(jws.claims, provider)
                _verify_with_any(jws, provider.keys)
                check_times(jws.claims, self.clock())
            except JwtError as exc:
                last = str(exc)
                continue
            role = jws.claims.get("role")
            if not isinstance(role, str) or not role:
                raise AdminDenied("the admin token has no role claim")
            return role
        raise AdminDenied(f"invalid admin token: {last}")

    @staticmethod
    def _accept(claims: dict[str, Any], provider: IdentityProvider) -> None:
        if provider.issuer and claims.get("iss") != provider.issuer:
            raise JwtError("token issuer does not match")
        if provider.audience:
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if provider.audience not in audiences:
                raise JwtError("token audience does not match")


def _verify_with_any(jws: Jws, keys: Sequence[PublicKey]) -> None:
    error = JwtError("the identity provider has no keys")
    for key in keys:
        try:
            verify_signature(jws, key)
            return
        except JwtError as exc:
            error = exc
    raise error
