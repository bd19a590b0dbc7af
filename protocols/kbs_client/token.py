"""Attestation tokens as the guest sees them: opaque JWTs it cannot verify, but whose `exp`/`nbf` it
reads to know when to attest again (upstream `kbs_protocol::Token`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from protocols.kbs import KbsProtocolError, b64url_decode, loads
from protocols.kbs_client.errors import TokenFormatError

MAX_TOKEN_LENGTH = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Token:
    content: str
    exp: float | None = None
    nbf: float | None = None

    @classmethod
    def parse(cls, content: str) -> Token:
        if len(content) > MAX_TOKEN_LENGTH:
            raise TokenFormatError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        parts = content.split(".")
        if len(parts) != 3:
            raise TokenFormatError("token is not a JWT (header.claims.signature)")
        try:
            claims = loads(b64url_decode(parts[1], "token claims"), "token claims")
        except KbsProtocolError as exc:
            raise TokenFormatError(str(exc)) from None
        if not isinstance(claims, dict):
            raise TokenFormatError("token claims are not a JSON object")
        return cls(content=content, exp=_timestamp(claims, "exp"), nbf=_timestamp(claims, "nbf"))

    def is_valid(self, now: float | None = None) -> bool:
        """Whether the token is inside its validity window (a token without one always is)."""
        moment = time.time() if now is None else now
        if self.exp is not None and self.exp < moment:
            return False
        return not (self.nbf is not None and self.nbf > moment)


def _timestamp(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenFormatError(f"token claim {name!r} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise TokenFormatError(f"token claim {name!r} is out of range") from None
