"""Typed errors of the ocicrypt pieces, one per way an encrypted image can be unusable."""

from __future__ import annotations


class OcicryptError(Exception):
    """Base class of every error raised by `protocols.ocicrypt`."""


class MessageFormatError(OcicryptError, ValueError):
    """A key-provider message, annotation packet or options document that is not the expected JSON."""


class KeyWrapError(OcicryptError):
    """A KEK that cannot wrap or unwrap: wrong size, unsupported wrap type, or the wrong key."""


class LayerDecryptionError(OcicryptError):
    """An encrypted layer that does not authenticate (HMAC mismatch) or has unusable options."""
