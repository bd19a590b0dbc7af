"""Pinned trust anchors shipped with the attestation service (see README.md here for provenance).

Each bundle is package data and every certificate in it is pinned by the SHA-256 of its DER encoding
in the code that uses it, so a modified file fails loudly at start-up instead of silently widening
what the verifiers trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from cryptography import x509

from verifier.x509util import load_pem_certificates, sha256_fingerprint


class PinnedRootError(RuntimeError):
    """A shipped trust anchor is missing or does not match its pinned fingerprint (a broken install)."""


def pinned_certificates(filename: str, fingerprints: Sequence[str]) -> list[x509.Certificate]:
    """The certificates of bundle `filename`, checked in file order against `fingerprints`."""
    try:
        pem = resources.files(__name__).joinpath(filename).read_bytes()
    except OSError as exc:
        raise PinnedRootError(f"pinned bundle {filename} cannot be read: {exc}") from None
    certs = load_pem_certificates(pem, filename)
    found = [sha256_fingerprint(cert) for cert in certs]
    if found != list(fingerprints):
        raise PinnedRootError(
            f"pinned bundle {filename} has fingerprints {found}, expected {list(fingerprints)}"
        )
    return certs
