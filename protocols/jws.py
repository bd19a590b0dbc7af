"""Compact JWS (JWT) splitting, shared by the KBS (which verifies tokens) and the guest (which reads
their validity window): three base64url parts, header and payload JSON objects, bounded size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.kbs import KbsProtocolError, b64url_decode, loads


@dataclass(frozen=True, slots=True)
class Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        alg = self.header.get("alg")
        return alg if isinstance(alg, str) else ""


def split_compact(token: str, max_chars: int) -> tuple[str, str, str]:
    """The three base64url parts of a compact JWS; raises KbsProtocolError."""
    if len(token) > max_chars:
        raise KbsProtocolError(f"token is longer than {max_chars} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise KbsProtocolError("token is not a JWT: not a compact JWS (header.payload.signature)")
    return parts[0], parts[1], parts[2]


def json_object(part: str, what: str) -> dict[str, Any]:
    """A base64url part holding a JSON object; raises KbsProtocolError."""
    value = loads(b64url_decode(part, what), what)
    if not isinstance(value, dict):
        raise KbsProtocolError(f"{what} must be a JSON object")
    return value


def parse_jws(token: str, max_chars: int) -> Jws:
    """Split and decode a compact JWS (not verified); raises KbsProtocolError."""
    header, payload, signature = split_compact(token, max_chars)
    return Jws(
        json_object(header, "token header"),
        json_object(payload, "token payload"),
        (header + "." + payload).encode("ascii"),
        b64url_decode(signature, "token signature"),
    )
