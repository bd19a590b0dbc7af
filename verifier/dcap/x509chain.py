"""Intel certificate chains: the pinned Intel SGX Root CA and ECDSA chain walks up to it.

Both the PCK chain in a quote and the issuer chains of TCB info, QE identity and CRLs end at the
Intel SGX Root CA, so one walk serves them all. A chain may or may not repeat the root; when it
does, the copy must be byte-identical to the pinned one, and nothing else may stand in for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from verifier.errors import VerificationError
from verifier.roots import pinned_certificates
from verifier.x509util import ChainError, verify_issued_by

# SHA-256 of the DER of the Intel SGX Root CA (CN "Intel SGX Root CA", valid 2018-05-21 to
# 2049-12-31), as published at https://certificates.trustedservices.intel.com/IntelSGXRootCA.der.
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def load_intel_root() -> x509.Certificate:
    """The pinned Intel SGX Root CA (verifier/roots/intel_sgx_root_ca.pem, checked by fingerprint)."""
    return pinned_certificates("intel_sgx_root_ca.pem", [INTEL_SGX_ROOT_CA_SHA256])[0]


@dataclass(frozen=True, slots=True)
class Validity:
    """The time window in which every certificate of a chain is valid."""

    not_before: datetime
    not_after: datetime

    def check(self, now: datetime, what: str) -> None:
        if now < self.not_before:
            raise VerificationError("cert_expired", f"{what}: not valid before {self.not_before.isoformat()}")
        if now > self.not_after:
            raise VerificationError("cert_expired", f"{what}: expired on {self.not_after.isoformat()}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def verify_chain(chain: Sequence[x509.Certificate], root: x509.Certificate, what: str) -> Validity:
    """Check that `chain` (leaf first, fully parsed) is signed link by link up to `root`.

    Validity dates are returned, not checked, so that a cached chain is re-checked cheaply against
    the clock on every use.
    """
    certs = list(chain)
    if certs and certs[-1] == root:
        certs.pop()
    if not certs:
        raise ChainError(f"{what}: no certificate below the root")
    for index, cert in enumerate(certs):
        parent = certs[index + 1] if index + 1 < len(certs) else root
        if parent is not root and not _is_ca(parent):
            raise ChainError(f"{what}: certificate {index + 1} is not a CA")
        verify_issued_by(cert, parent, f"{what} certificate {index}")
    everything = [*certs, root]
    return Validity(
        not_before=max(c.not_valid_before_utc for c in everything),
        not_after=min(c.not_valid_after_utc for c in everything),
    )
