"""AMD's root of trust per product line: ARK (self-signed), ASK (signs VCEKs), ASVK (signs VLEKs).

Production uses the certificates pinned in `verifier/roots`; tests inject their own with
`AmdRoots.checked`. Either way the ARK self-signature and ARK -> ASK/ASVK signatures are checked
once, here, so a verification only has to check the endorsement key below them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509

from verifier.roots import pinned_certificates
from verifier.snp.report import Generation
from verifier.x509util import RSA_PSS_SHA384_SALT48, verify_issued_by

# SHA-256 of the DER of ASK, ARK, ASVK: the file order of verifier/roots/amd_<product>_ask_ark_asvk.pem.
_PINS: dict[Generation, tuple[str, str, str]] = {
    Generation.MILAN: (
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    ),
    Generation.GENOA: (
        "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    ),
    Generation.TURIN: (
        "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    ),
}


@dataclass(frozen=True)
class AmdRoots:
    """One product line's CA certificates, already checked against each other."""

    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate

    @classmethod
    def checked(cls, *, ark: x509.Certificate, ask: x509.Certificate, asvk: x509.Certificate) -> AmdRoots:
        """Accept the three only if ARK is self-signed and signs ASK and ASVK (RSA-PSS SHA-384, salt 48)."""
        verify_issued_by(ark, ark, "ARK", scheme=RSA_PSS_SHA384_SALT48)
        verify_issued_by(ask, ark, "ASK", scheme=RSA_PSS_SHA384_SALT48)
        verify_issued_by(asvk, ark, "ASVK", scheme=RSA_PSS_SHA384_SALT48)
        return cls(ark=ark, ask=ask, asvk=asvk)


TrustAnchors = Mapping[Generation, AmdRoots]


@functools.cache
def pinned_anchors() -> TrustAnchors:
    """AMD's published ARK/ASK/ASVK for Milan, Genoa and Turin, checked against their pins."""
    anchors = {}
    for generation, pins in _PINS.items():
        filename = f"amd_{generation.value.lower()}_ask_ark_asvk.pem"
        ask, ark, asvk = pinned_certificates(filename, pins)
        anchors[generation] = AmdRoots.checked(ark=ark, ask=ask, asvk=asvk)
    return anchors
