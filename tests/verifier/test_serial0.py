"""Certificates with serial number 0 (real AMD VCEKs/VLEKs have one): `cryptography` warns that a future
release will refuse to load them, so the SNP verifier reads the VCEK/VLEK at the DER level. These
tests run the verifier with that loader refusing such certificates, as announced, and with the
deprecation warning as an error."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier import snp_builder as sb
from tests.verifier import vectors_dir
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.snp.report import Generation
from verifier.x509util import read_der_certificate, read_tlv

GENOA_REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def with_serial_zero(der: bytes, signer: rsa.RSAPrivateKey) -> bytes:
    """`der` with its serial number replaced by 0 and re-signed (RSASSA-PSS SHA-384, as AMD)."""
    _, content, _ = read_tlv(der)
    _, tbs_content, tbs_end = read_tlv(content)
    algorithm = content[tbs_end : read_tlv(content, tbs_end)[2]]
    _, _, version_end = read_tlv(tbs_content)  # [0] version
    _, _, serial_end = read_tlv(tbs_content, version_end)
    tbs = _tlv(0x30, tbs_content[:version_end] + b"\x02\x01\x00" + tbs_content[serial_end:])
    signature = signer.sign(tbs, sb.PSS_SHA384_48, hashes.SHA384())
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


Loader = Callable[..., x509.Certificate]


def _refuses_non_positive_serials(loader: Loader) -> Loader:
    def load(data: bytes, *args: object) -> x509.Certificate:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            try:
                return loader(data, *args)
            except CryptographyDeprecationWarning as exc:
                raise ValueError(f"refused: {exc}") from None

    return load


@pytest.fixture
def strict_cryptography(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`cryptography` as it says a future release will behave: serial 0 certificates do not load."""
    monkeypatch.setattr(
        x509, "load_der_x509_certificate", _refuses_non_positive_serials(x509.load_der_x509_certificate)
    )
    monkeypatch.setattr(
        x509, "load_pem_x509_certificate", _refuses_non_positive_serials(x509.load_pem_x509_certificate)
    )
    yield


@pytest.fixture(scope="module")
def case() -> sb.SnpCase:
    built = sb.make_case()
    return sb.SnpCase(
        built.pki, built.vek_key, with_serial_zero(built.vek_der, built.pki.ask_key), built.spec, built.report
    )


def test_the_fixture_does_refuse_serial_zero(strict_cryptography: None, case: sb.SnpCase) -> None:
    with pytest.raises(ValueError, match="refused"):
        x509.load_der_x509_certificate(case.vek_der)


def test_serial_zero_vcek_verifies_without_cryptographys_loader(
    strict_cryptography: None, case: sb.SnpCase
) -> None:
    verifier = SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[])
    claims = verifier.evaluate(case.evidence(), case.spec.report_data)
    assert claims["report_data"] == case.spec.report_data.hex()
    assert read_der_certificate(case.vek_der, "VCEK").serial == 0


@pytest.mark.filterwarnings("error::cryptography.utils.CryptographyDeprecationWarning")
def test_serial_zero_vcek_raises_no_deprecation_warning(case: sb.SnpCase) -> None:
    SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[]).evaluate(case.evidence(), case.spec.report_data)


@pytest.mark.vectors
@pytest.mark.filterwarnings("error::cryptography.utils.CryptographyDeprecationWarning")
def test_real_serial_zero_vceks(strict_cryptography: None) -> None:
    snp = vectors_dir("snp")
    assert read_der_certificate((snp / "milan-vcek.der").read_bytes(), "VCEK").serial == 0
    clock = datetime(2026, 1, 1, tzinfo=UTC)
    evidence = (snp / "genoa-evidence.json").read_bytes()
    claims = SnpVerifier(vcek_sources=[], clock=lambda: clock).evaluate(evidence, GENOA_REPORT_DATA)
    assert claims["reported_tcb_snp"] == 23


def test_der_reader_agrees_with_cryptography(case: sb.SnpCase) -> None:
    _, der = sb.make_vek(sb.make_pki(Generation.GENOA), hwid_encoding="octet")
    parsed, ours = x509.load_der_x509_certificate(der), read_der_certificate(der, "VCEK")
    assert ours.serial == parsed.serial_number and ours.tbs == parsed.tbs_certificate_bytes
    assert ours.signature == parsed.signature
    assert (ours.not_before, ours.not_after) == (parsed.not_valid_before_utc, parsed.not_valid_after_utc)
    assert ours.issuer == parsed.issuer.public_bytes() and ours.subject == parsed.subject.public_bytes()
    assert ours.common_name == "SEV-VCEK" and ours.public_key == parsed.public_key()
    assert ours.extensions == {e.oid.dotted_string: e.value.public_bytes() for e in parsed.extensions}


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(0, 2000),
)
def test_der_reader_gives_typed_errors_only(case: sb.SnpCase, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(case.vek_der)
    for position, value in edits:
        data[position % len(data)] = value
    for candidate in (bytes(data), case.vek_der[:cut]):
        with contextlib.suppress(VerificationError):
            read_der_certificate(candidate, "VCEK")
