"""Verdict properties of the TDX quote verifier: the genuine quote is accepted, and a change to any byte
of it is refused with the reason of the region it falls in -- header and TD report body by the quote
signature, the QE report by the PCK's signature over it, the attestation key and QE auth data by the
QE report's binding, the PCK chain by the chain check (or as unparsable), length and type fields as
malformed or unsupported. Only PEM text that leaves the certificates' DER unchanged may differ.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from tests.verifier import tdx_builder as b
from tests.verifier.verdicts import ACCEPTED, MALFORMED, VERDICTS, flipped, masks
from verifier.errors import VerificationError
from verifier.tdx import TdxVerifier

QUOTE_SIGNATURE = "bad_signature: quote signature"
QE_REPORT_SIGNATURE = "bad_signature: QE report signature"
UNSUPPORTED = "unsupported_quote"

PKI = b.make_pki()
VERIFIER = TdxVerifier(source=None, root=PKI.root, clock=lambda: b.NOW)
VERIFIER.add_collateral(b.collateral(PKI))


@dataclass(frozen=True)
class Layout:
    """Where the parts of a quote built by `tdx_builder` lie (from Intel's quote format, not the parser)."""

    quote: bytes = field(repr=False)
    version: int
    body_end: int

    @property
    def signature_data(self) -> int:
        return self.body_end + 4

    @property
    def qe_report(self) -> int:
        return self.signature_data + 134

    @property
    def auth_data(self) -> int:
        return self.qe_report + 384 + 64 + 2

    @property
    def pck_chain(self) -> int:
        auth_size = int.from_bytes(self.quote[self.auth_data - 2 : self.auth_data], "little")
        return self.auth_data + auth_size + 6

    def regions(self) -> list[tuple[int, int, str]]:
        """(start, end, name) of every part, in order, covering the whole quote."""
        sig, qe, auth, chain = self.signature_data, self.qe_report, self.auth_data, self.pck_chain
        header = [(0, 2, "version"), (2, 8, "key and tee type"), (8, 48, "signed header")]
        if self.version == 5:
            header += [(48, 50, "body type"), (50, 54, "body size")]
        return [
            *header,
            (54 if self.version == 5 else 48, self.body_end, "TD report body"),
            (self.body_end, sig, "signature data length"),
            (sig, sig + 64, "quote signature"),
            (sig + 64, sig + 128, "attestation key"),
            (sig + 128, sig + 130, "certification data type"),
            (sig + 130, qe, "certification data length"),
            (qe, qe + 384, "QE report"),
            (qe + 384, qe + 448, "QE report signature"),
            (qe + 448, auth, "QE auth data length"),
            (auth, chain - 6, "QE auth data"),
            (chain - 6, chain - 4, "PCK chain type"),
            (chain - 4, chain, "PCK chain length"),
            (chain, len(self.quote), "PCK chain"),
        ]

    def region(self, offset: int) -> str:
        return next(name for start, end, name in self.regions() if start <= offset < end)


def _layout(spec: b.QuoteSpec) -> Layout:
    quote = b.make_quote(PKI, spec)
    header = 48 + (6 if spec.version == 5 else 0)
    return Layout(quote, spec.version, header + len(b.td_body(spec)))


LAYOUTS = [_layout(b.QuoteSpec()), _layout(b.QuoteSpec(version=5, body_type=3))]


def verdict(quote: bytes) -> str:
    """ "accepted", or the refusal's reason; a bad signature also says whose signature it was."""
    try:
        VERIFIER.verify_quote(quote)
    except VerificationError as exc:
        if exc.reason == "bad_signature":
            return QE_REPORT_SIGNATURE if "QE report signature" in str(exc) else QUOTE_SIGNATURE
        return exc.reason
    return ACCEPTED


def _chained_certificates(pem: bytes) -> list[bytes] | None:
    """The DER of the certificates a PEM chain holds, less a copy of the trusted root (optional, and
    never trusted for being there), or None when it does not parse."""
    try:
        ders = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]
    except ValueError:
        return None
    return ders[:-1] if ders and ders[-1] == PKI.root.public_bytes(Encoding.DER) else ders


def expected_reasons(layout: Layout, quote: bytes, offset: int) -> set[str]:
    """What a quote changed at `offset` (giving `quote`) may be refused with, by region."""
    region = layout.region(offset)
    if region == "version":
        (version,) = struct.unpack_from("<H", quote, 0)
        # 4 <-> 5 moves every later part: the quote no longer parses
        return {MALFORMED, UNSUPPORTED} if version in (4, 5) else {"unsupported_version"}
    if region in ("key and tee type", "certification data type", "PCK chain type"):
        return {UNSUPPORTED}
    if region == "body type":
        (body_type,) = struct.unpack_from("<H", quote, 48)
        return {MALFORMED} if body_type in (2, 3) else {UNSUPPORTED}  # 2 <-> 3: size mismatch
    if region in ("body size", "signature data length", "certification data length", "PCK chain length"):
        return {MALFORMED}
    if region == "QE auth data length":  # moves the PCK chain header
        return {MALFORMED, UNSUPPORTED}
    if region in ("signed header", "TD report body", "quote signature"):
        return {QUOTE_SIGNATURE}
    if region in ("QE report", "QE report signature"):
        return {QE_REPORT_SIGNATURE}
    if region in ("attestation key", "QE auth data"):
        return {"qe_report_binding"}
    chain, original = quote[layout.pck_chain :], layout.quote[layout.pck_chain :]
    if _chained_certificates(chain.rstrip(b"\0")) == _chained_certificates(original.rstrip(b"\0")):
        return {ACCEPTED}  # PEM text around unchanged certificates, or the root copy spoilt
    return {MALFORMED, "chain_invalid"}


def check_flip(layout: Layout, offset: int, mask: int) -> None:
    """The genuine quote is accepted; with byte `offset` xored by `mask` it is refused as expected."""
    assert verdict(layout.quote) == ACCEPTED
    quote = flipped(layout.quote, offset, mask)
    assert verdict(quote) in expected_reasons(layout, quote, offset), layout.region(offset)


@VERDICTS
@given(st.sampled_from(LAYOUTS), st.data(), masks)
def test_any_changed_byte_of_a_quote_is_refused_for_its_region(
    layout: Layout, data: st.DataObject, mask: int
) -> None:
    check_flip(layout, data.draw(st.integers(min_value=0, max_value=len(layout.quote) - 1)), mask)


@VERDICTS
@given(st.sampled_from(LAYOUTS), st.data(), masks)
def test_any_changed_byte_of_the_signed_parts_is_a_signature_or_binding_failure(
    layout: Layout, data: st.DataObject, mask: int
) -> None:
    """The same property drawn only from the parts signatures cover, which a uniform draw over the
    whole quote (mostly PCK chain) reaches less often."""
    signed = [(s, e) for s, e, name in layout.regions() if name != "PCK chain"]
    start, end = data.draw(st.sampled_from(signed))
    check_flip(layout, data.draw(st.integers(min_value=start, max_value=end - 1)), mask)
