"""Byte fields in ocicrypt's JSON: Go writes standard base64 strings, the Rust side (serde's default
for `Vec<u8>`) writes arrays of integers. Readers accept both; writers emit base64 like Go."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from protocols.ocicrypt.errors import MessageFormatError

MAX_DOCUMENT_BYTES = 1024 * 1024


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(value: object, what: str) -> bytes:
    """A byte field given as a standard base64 string or as an array of integers 0..255."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MessageFormatError(f"{what} is not standard base64") from None
    if isinstance(value, list):
        if not all(type(item) is int and 0 <= item <= 255 for item in value):
            raise MessageFormatError(f"{what} is an array but not of byte values 0..255")
        return bytes(value)
    raise MessageFormatError(
        f"{what} must be a base64 string or an array of bytes, not {type(value).__name__}"
    )


def decode_optional(doc: Mapping[str, Any], key: str, what: str) -> bytes | None:
    """A byte field that may be absent or null (Go's nil slice)."""
    value = doc.get(key)
    return None if value is None else decode(value, what)


def load_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object of bounded size, or `MessageFormatError`."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise MessageFormatError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise MessageFormatError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise MessageFormatError(f"{what} must be a JSON object")
    return doc


def optional_object(doc: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    """A member that must be an object when present; absent or null reads as empty."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageFormatError(f"{what} must be a JSON object")
    return value


def optional_string(doc: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str | None:
    value = doc.get(key, default)
    if value is None or isinstance(value, str):
        return value
    raise MessageFormatError(f"{what} must be a string")


def dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
