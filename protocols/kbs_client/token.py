"""Attestation tokens as the guest sees them: opaque JWTs it cannot verify, but whose `exp`/`nbf` it
reads to know when to attest again (upstream `kbs_protocol::Token`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from protocols.jws import json_object, split_compact
from protocols.kbs import KbsProtocolError
from protocols.kbs_client.errors import TokenFormatError

MAX_TOKEN_LENGTH = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Token:
    content: str
    exp: float | None = None
    nbf: float | None = None

    @classmethod
    def parse(cls, content: str) -> Token:
        try:
            # The guest cannot verify the token; it only reads its validity window.
            claims = json_object(split_compact(content, MAX_TOKEN_LENGTH)[1], "token claims")
        except KbsProtocolError as exc:
            raise TokenFormatError(str(exc)) from None
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
