"""TDX collateral sources: a fake PCCS on 127.0.0.1 and PCS Client Tool files, through the verifier."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.verifier import tdx_builder as b
from verifier.dcap.sources import crl_der, source_from_config
from verifier.errors import VerificationError
from verifier.tdx import OfflineSource, PcsSource, TdxVerifier

PKI = b.make_pki()


class FakePccs:
    """Serves the builder's collateral the way PCS/PCCS v4 does, and records the requests."""

    def __init__(self) -> None:
        self.raw = b.collateral(PKI)
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.failing = False

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.failing:
            return 503, {}, b""
        raw = self.raw
        assert raw.tcb_info_issuer_chain and raw.qe_identity_issuer_chain and raw.pck_crl_issuer_chain
        assert raw.pck_crl is not None and raw.root_ca_crl is not None
        routes = {
            "/tdx/certification/v4/tcb": (
                {"TCB-Info-Issuer-Chain": quote(raw.tcb_info_issuer_chain)},
                raw.tcb_info,
            ),
            "/tdx/certification/v4/qe/identity": (
                {"SGX-Enclave-Identity-Issuer-Chain": quote(raw.qe_identity_issuer_chain)},
                raw.qe_identity,
            ),
            "/sgx/certification/v4/pckcrl": (
                {"SGX-PCK-CRL-Issuer-Chain": quote(raw.pck_crl_issuer_chain)},
                raw.pck_crl,
            ),
            "/sgx/certification/v4/rootcacrl": ({}, raw.root_ca_crl.hex().encode()),  # PCCS answers hex
        }
        if path not in routes:
            return 404, {}, b""
        headers, body = routes[path]
        return 200, headers, body


@pytest.fixture
def pccs() -> Iterator[tuple[FakePccs, str]]:
    fake = FakePccs()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            fake.requests.append((url.path, parse_qs(url.query)))
            status, headers, body = fake.answer(url.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/sgx/certification/v4/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_collateral_is_fetched_once_from_pccs(pccs: tuple[FakePccs, str]) -> None:
    fake, url = pccs
    verifier = TdxVerifier(source=PcsSource(url), root=PKI.root, clock=lambda: b.NOW)
    quote = b.make_quote(PKI, b.QuoteSpec())
    assert verifier.verify_quote(quote).collateral.signature_verified
    assert verifier.verify_quote(quote).tcb.status == "UpToDate"
    assert [path for path, _ in fake.requests] == [
        "/tdx/certification/v4/tcb",
        "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/rootcacrl",
    ]
    assert fake.requests[0][1] == {"fmspc": ["00A06D080000"], "update": ["early"]}
    assert fake.requests[1][1] == {"update": ["early"]}
    assert fake.requests[2][1] == {"ca": ["platform"], "encoding": ["der"]}


def test_stale_collateral_is_refetched(pccs: tuple[FakePccs, str]) -> None:
    fake, url = pccs
    clock = Clock(b.NOW)
    verifier = TdxVerifier(source=PcsSource(url, update="standard"), root=PKI.root, clock=clock)
    quote = b.make_quote(PKI, b.QuoteSpec())
    verifier.verify_quote(quote)
    clock.now = b.NOW + timedelta(days=40)
    newer = b.NOW + timedelta(days=35)
    fake.raw = b.collateral(
        PKI,
        tcb_doc=b.tcb_info(PKI, issue=newer, next_update=newer + timedelta(days=30)),
        qe_doc=b.qe_identity(PKI, issue=newer, next_update=newer + timedelta(days=30)),
        crl_next_update=newer + timedelta(days=30),
    )
    assert verifier.verify_quote(quote).stale is False
    assert len(fake.requests) == 8
    assert fake.requests[4][1]["update"] == ["standard"]


def test_unreachable_pccs(pccs: tuple[FakePccs, str]) -> None:
    fake, url = pccs
    fake.failing = True
    clock = Clock(b.NOW)
    verifier = TdxVerifier(source=PcsSource(url), root=PKI.root, clock=clock)
    quote = b.make_quote(PKI, b.QuoteSpec())
    with pytest.raises(VerificationError) as info:
        verifier.verify_quote(quote)
    assert info.value.reason == "collateral_unavailable" and "503" in str(info.value)

    # With collateral already loaded, an outage leaves the stale rules in charge, and the source
    # is not asked again at once.
    verifier.add_collateral(b.collateral(PKI))
    clock.now = b.NOW + timedelta(days=40)
    with pytest.raises(VerificationError) as info:
        verifier.verify_quote(quote)
    assert info.value.reason == "collateral_stale"
    asked = len(fake.requests)
    with pytest.raises(VerificationError):
        verifier.verify_quote(quote)
    assert len(fake.requests) == asked


def client_tool_file(path: Path, *, with_crl_chain: bool = True) -> Path:
    raw = b.collateral(PKI)
    assert raw.tcb_info_issuer_chain and raw.qe_identity_issuer_chain and raw.pck_crl_issuer_chain
    assert raw.pck_crl is not None and raw.root_ca_crl is not None
    certificates: dict[str, object] = {
        "TCB-Info-Issuer-Chain": quote(raw.tcb_info_issuer_chain),
        "SGX-Enclave-Identity-Issuer-Chain": quote(raw.qe_identity_issuer_chain),
    }
    if with_crl_chain:
        chain = quote(raw.pck_crl_issuer_chain)
        certificates["SGX-PCK-Certificate-Issuer-Chain"] = {"PLATFORM": chain, "PROCESSOR": chain}
    document = {
        "collaterals": {
            "tcbinfos": [{"fmspc": b.FMSPC.hex().upper(), "tdx_tcbinfo": json.loads(raw.tcb_info)}],
            "tdqeidentity": json.loads(raw.qe_identity),
            "certificates": certificates,
            "pckcacrl": {"platformCrl": raw.pck_crl.hex(), "processorCrl": raw.pck_crl.hex()},
            "rootcacrl": raw.root_ca_crl.hex(),
        }
    }
    path.write_text(json.dumps(document, indent=2))  # pretty-printed: signatures must still verify
    return path


def test_offline_pcs_client_tool_file(tmp_path: Path) -> None:
    source = source_from_config(f"file://{client_tool_file(tmp_path / 'collateral.json')}")
    assert isinstance(source, OfflineSource)
    verifier = TdxVerifier(source=source, root=PKI.root, clock=lambda: b.NOW)
    claims = verifier.evaluate(b.evidence(b.make_quote(PKI, b.QuoteSpec())), bytes(64))
    assert claims["collateral_signature_verified"] is True
    assert claims["pck_crl_num"] == 1 and claims["tcb_status"] == "UpToDate"


def test_offline_file_without_crl_chain_skips_the_pck_crl(tmp_path: Path) -> None:
    source = OfflineSource(client_tool_file(tmp_path / "c.json", with_crl_chain=False))
    verifier = TdxVerifier(source=source, root=PKI.root, clock=lambda: b.NOW)
    claims = verifier.evaluate(b.evidence(b.make_quote(PKI, b.QuoteSpec())), bytes(64))
    assert "pck_crl_num" not in claims and claims["root_ca_crl_num"] == 1


def test_offline_file_problems_are_specific(tmp_path: Path) -> None:
    quote = b.make_quote(PKI, b.QuoteSpec())
    missing = TdxVerifier(source=OfflineSource(tmp_path / "absent.json"), root=PKI.root, clock=lambda: b.NOW)
    with pytest.raises(VerificationError) as info:
        missing.verify_quote(quote)
    assert info.value.reason == "collateral_unavailable"
    other_platform = b.make_pki(root_key=PKI.root_key, extension=b.sgx_extension(fmspc=bytes(6)))
    other = b.make_quote(other_platform, b.QuoteSpec(include_root=False))
    source = OfflineSource(client_tool_file(tmp_path / "c.json"))
    with pytest.raises(VerificationError) as info:
        TdxVerifier(source=source, root=PKI.root, clock=lambda: b.NOW).verify_quote(other)
    assert info.value.reason == "collateral_unavailable" and "000000000000" in str(info.value)
    (tmp_path / "bad.json").write_text('{"collaterals": []}')
    bad = TdxVerifier(source=OfflineSource(tmp_path / "bad.json"), root=PKI.root, clock=lambda: b.NOW)
    with pytest.raises(VerificationError) as info:
        bad.verify_quote(quote)
    assert info.value.reason == "collateral_invalid"


def test_source_config_and_crl_encodings() -> None:
    assert isinstance(source_from_config("https://pccs.example:8081/sgx/certification/v4/"), PcsSource)
    with pytest.raises(ValueError):
        source_from_config("ftp://pccs.example/")
    with pytest.raises(ValueError):
        PcsSource(update="sometimes")
    der = b.make_crl(PKI.ca, PKI.ca_key)
    pem = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(der) + b"-----END X509 CRL-----\n"
    assert crl_der(der) == der == crl_der(der.hex().encode()) == crl_der(pem)
    with pytest.raises(VerificationError):
        crl_der(b"not a crl")


def test_default_source_is_not_asked_while_the_store_has_collateral() -> None:
    verifier = TdxVerifier(root=PKI.root, clock=lambda: b.NOW)  # source: Intel PCS
    verifier.add_collateral(b.collateral(PKI))
    assert verifier.verify_quote(b.make_quote(PKI, b.QuoteSpec())).tcb.status == "UpToDate"
