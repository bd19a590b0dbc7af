"""Decoding a DCAP quote out of upstream's evidence JSON, and upstream's `regularize_data`."""

from __future__ import annotations

import binascii
import contextlib

from verifier.errors import EvidenceFormatError
from verifier.lru import LruCache


def fit(value: bytes, size: int) -> bytes:
    """Upstream's `regularize_data`: zero-pad to `size`, or keep the first `size` bytes."""
    return value[:size].ljust(size, b"\x00")


def b64(value: object, what: str) -> bytes:
    """Strict standard base64 (as upstream's `base64::engine::general_purpose::STANDARD`)."""
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{what} is not a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error as exc:
        raise EvidenceFormatError(f"{what} is not standard base64: {exc}") from None


# Base64 characters (774 bytes) past the quote signature of every DCAP quote layout: what follows
# is the platform's certification data (QE report, PCK chain), the same in each of its quotes.
QUOTE_HEAD_CHARS = 1032


class QuoteDecoder:
    """Base64 decoding of quotes with the certification-data part memoized by its text: decoding
    those ~4 KB again for every quote would be the largest Python cost of a verification."""

    def __init__(self, capacity: int = 256) -> None:
        self._tails: LruCache[str, bytes] = LruCache(capacity)

    def __call__(self, value: object, what: str) -> bytes:
        if isinstance(value, str) and len(value) > QUOTE_HEAD_CHARS:
            head_text, tail_text = value[:QUOTE_HEAD_CHARS], value[QUOTE_HEAD_CHARS:]
            tail = self._tails.get(tail_text)
            if tail is None:
                with contextlib.suppress(binascii.Error):
                    tail = binascii.a2b_base64(tail_text, strict_mode=True)
                    self._tails.put(tail_text, tail)
            if tail is not None and "=" not in head_text:  # padding belongs at the very end
                with contextlib.suppress(binascii.Error):
                    return binascii.a2b_base64(head_text, strict_mode=True) + tail
        return b64(value, what)  # one piece: exactly strict decoding's verdict on bad input
