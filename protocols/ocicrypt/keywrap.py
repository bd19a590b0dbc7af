"""Wrapping the layer options (optsdata) with a 32-byte KEK, as coco_keyprovider and CDH do:
`A256GCM` (12-byte IV, ciphertext||tag, no AAD) or `A256CTR` (16-byte IV, 128-bit big-endian counter,
no integrity of its own: the layer HMAC still authenticates the layer)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.ocicrypt.errors import KeyWrapError

KEK_SIZE = 32
A256GCM = "A256GCM"
A256CTR = "A256CTR"
WRAP_TYPES = (A256GCM, A256CTR)
IV_SIZES = {A256GCM: 12, A256CTR: 16}


def wrap(
    kek: bytes, plaintext: bytes, wrap_type: str = A256GCM, iv: bytes | None = None
) -> tuple[bytes, bytes]:
    """(wrapped data, IV); a random IV unless one is given."""
    _check(kek, wrap_type)
    iv = os.urandom(IV_SIZES[wrap_type]) if iv is None else iv
    _check_iv(iv, wrap_type)
    if wrap_type == A256GCM:
        return AESGCM(kek).encrypt(iv, plaintext, None), iv
    return _ctr(kek, iv, plaintext), iv


def unwrap(kek: bytes, wrapped: bytes, iv: bytes, wrap_type: str) -> bytes:
    _check(kek, wrap_type)
    _check_iv(iv, wrap_type)
    if wrap_type == A256CTR:
        return _ctr(kek, iv, wrapped)
    try:
        return AESGCM(kek).decrypt(iv, wrapped, None)
    except InvalidTag:
        raise KeyWrapError(
            "A256GCM unwrap failed: the KEK is not the one the layer key was wrapped with"
        ) from None


def _ctr(kek: bytes, iv: bytes, data: bytes) -> bytes:
    context = Cipher(algorithms.AES(kek), modes.CTR(iv)).encryptor()
    return context.update(data) + context.finalize()


def _check(kek: bytes, wrap_type: str) -> None:
    if wrap_type not in WRAP_TYPES:
        raise KeyWrapError(
            f"unsupported wrap type {wrap_type[:40]!r}: expected one of {', '.join(WRAP_TYPES)}"
        )
    if len(kek) != KEK_SIZE:
        raise KeyWrapError(f"KEK must be {KEK_SIZE} bytes, got {len(kek)}")


def _check_iv(iv: bytes, wrap_type: str) -> None:
    if len(iv) != IV_SIZES[wrap_type]:
        raise KeyWrapError(f"{wrap_type} IV must be {IV_SIZES[wrap_type]} bytes, got {len(iv)}")
