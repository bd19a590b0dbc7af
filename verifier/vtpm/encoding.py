"""Byte fields of Azure vTPM evidence as upstream's serde encodes them, decoded strictly.

Three encodings occur: hex strings (`serde_with::hex::Hex`, either case), URL-safe base64
(`Base64<UrlSafe>`, padding optional) and, in v0 evidence, JSON arrays of integers 0..255
(`Vec<u8>`). Anything else, including whitespace, other alphabets and booleans posing as
integers, is malformed evidence.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from verifier.errors import EvidenceFormatError

_HEX = re.compile(r"[0-9a-fA-F]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")


def hex_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) % 2 or _HEX.fullmatch(value) is None:
        raise EvidenceFormatError(f"{what} is not a hex string")
    return bytes.fromhex(value)


def b64url_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or _B64URL.fullmatch(value) is None:
        raise EvidenceFormatError(f"{what} is not URL-safe base64")
    data = value.rstrip("=")
    if len(data) % 4 == 1 or (value != data and len(value) % 4):
        raise EvidenceFormatError(f"{what} has a base64 length that no bytes encode")
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise EvidenceFormatError(f"{what} is not URL-safe base64") from None


def first_pem_certificate(value: Any, what: str) -> bytes:
    """The DER of the first certificate in a PEM text (upstream reads the first and ignores the rest);
    the certificate itself is parsed by whoever verifies it."""
    match = _PEM_CERTIFICATE.search(value) if isinstance(value, str) else None
    if match is None:
        raise EvidenceFormatError(f"{what} is not a PEM certificate")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceFormatError(f"{what} PEM body is not base64") from None


def byte_array(value: Any, what: str, size: int | None = None) -> bytes:
    """A JSON array of integers 0..255 (of exactly `size` items when given)."""
    if not isinstance(value, list) or (size is not None and len(value) != size):
        wanted = "an array of bytes" if size is None else f"an array of {size} bytes"
        raise EvidenceFormatError(f"{what} is not {wanted}")
    if not all(type(item) is int and 0 <= item <= 255 for item in value):
        raise EvidenceFormatError(f"{what} holds something other than integers 0..255")
    return bytes(value)
