"""The real SGX DCAP quote v3 (upstream's `occlum_quote.dat`, ../shared/vectors/sgx): it parses to the
vectors README's values, its chain, QE report, binding and signature verify, its claims are upstream's
(names and forms of `parse_sgx_claims`), and without collateral a full verification says so."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.verifier import vectors_dir
from verifier.errors import VerificationError
from verifier.sgx import SgxVerifier, parse_quote
from verifier.sgx.claims import parsed_claims

pytestmark = pytest.mark.vectors

CLOCK = datetime(2026, 1, 1, tzinfo=UTC)  # inside the PCK chain's validity (leaf until 2030-04-26)
ZERO = "00"


@pytest.fixture(scope="module")
def raw() -> bytes:
    folder: Path = vectors_dir("sgx")
    return (folder / "occlum-quote-v3.dat").read_bytes()


def test_parses_to_the_readme_values(raw: bytes) -> None:
    quote = parse_quote(raw)
    assert len(raw) == 4733 and quote.header.version == 3
    assert quote.body.mr_enclave.hex() == "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68"
    assert quote.body.mr_signer.hex() == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    assert quote.body.report_data == b"test" + bytes(60)
    assert quote.body.debug
    assert (
        quote.qe_report.mr_enclave.hex() == "8ce58685be36e46187c233c7e99ed6fe75dbb33f7567ada217b077ecd8cf82f9"
    )


def test_chain_qe_report_binding_and_signature_verify(raw: bytes) -> None:
    verifier = SgxVerifier(source=None, clock=lambda: CLOCK)
    pck = verifier.verify_signatures(parse_quote(raw), CLOCK)  # pinned Intel SGX Root CA
    assert (pck.extension.fmspc.hex(), pck.extension.pce_id.hex(), pck.ca) == (
        "00606a000000",
        "0000",
        "platform",
    )


def test_claims_are_upstreams(raw: bytes) -> None:
    quote = parse_quote(raw)
    pck = SgxVerifier(source=None).verify_signatures(quote, CLOCK)
    assert parsed_claims(quote, pck) == {
        "header": {
            "version": "0300",
            "att_key_type": "0200",
            "att_key_data_0": "00000000",
            "qe_svn": "0800",
            "pce_svn": "0d00",
            "vendor_id": "939a7233f79c4ca9940a0db3957f0607",
            "user_data": "dccde9b31ce8860548173bb4a2a57a1600000000",
        },
        "body": {
            "cpu_svn": "06060c0cffff00000000000000000000",
            "misc_select": "01000000",
            "reserved1": ZERO * 12,
            "isv_ext_prod_id": ZERO * 16,
            "attributes.flags": "0700000000000000",
            "attributes.xfrm": "e700000000000000",
            "mr_enclave": "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68",
            "reserved2": ZERO * 32,
            "mr_signer": "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
            "reserved3": ZERO * 32,
            "config_id": ZERO * 64,
            "isv_prod_id": "0000",
            "isv_svn": "0000",
            "config_svn": "0000",
            "reserved4": ZERO * 42,
            "isv_family_id": ZERO * 16,
            "report_data": "74657374" + ZERO * 60,
        },
        "report_data": "74657374" + ZERO * 60,
        "init_data": ZERO * 64,
        "platform_instance_id": "7a3a6941065cd5060bd93d3db2cfc0c8",
    }


def test_full_verification_reports_collateral_unavailable(raw: bytes) -> None:
    evidence = json.dumps({"quote": base64.b64encode(raw).decode()}).encode()
    verifier = SgxVerifier(source=None, clock=lambda: CLOCK)
    with pytest.raises(VerificationError) as info:
        verifier.evaluate(evidence, b"test")
    assert info.value.reason == "collateral_unavailable"
    assert "00606a000000" in str(info.value)


def test_tampered_quote_fails_its_signature(raw: bytes) -> None:
    tampered = bytearray(raw)
    tampered[112] ^= 1  # MRENCLAVE
    verifier = SgxVerifier(source=None)
    with pytest.raises(VerificationError, match="bad_signature: quote signature"):
        verifier.verify_signatures(parse_quote(bytes(tampered)), CLOCK)
