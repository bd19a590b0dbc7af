"""Azure vTPM evidence: assembly from an HCL report, a TPM quote and IMDS answers, checked against real
Azure evidence (../shared/vectors). The vTPM is a stand-in here: tpm2 commands on /dev/tpmrm0 need an
Azure confidential VM, so `Tpm2ToolsVtpm` is not exercised by these tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from podvm.attestation_agent.azure import (
    AzSnpVtpmAttester,
    AzTdxVtpmAttester,
    AzureEvidenceError,
    AzureImds,
    HclReport,
    TpmQuote,
    az_snp_evidence,
    az_tdx_evidence,
    check_binding,
    parse_hcl_report,
)
from podvm.attestation_agent.detect import Platform, detect_attester
from podvm.attestation_agent.errors import InitDataError
from tests.podvm.aa_fakes import FakeVtpm
from tests.verifier import vectors_dir

pytestmark = pytest.mark.vectors
V2_NONCE = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"
)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text)


def _quote(doc: dict[str, Any]) -> TpmQuote:
    q = doc["tpm_quote"]
    return TpmQuote(
        bytes.fromhex(q["signature"]), bytes.fromhex(q["message"]), tuple(bytes.fromhex(p) for p in q["pcrs"])
    )


@pytest.fixture(scope="module")
def snp_v2() -> dict[str, Any]:
    return dict(json.loads((vectors_dir("az-snp-vtpm") / "evidence-v2.json").read_text()))


@pytest.fixture(scope="module")
def tdx_v1() -> dict[str, Any]:
    return dict(json.loads((vectors_dir("az-tdx-vtpm") / "evidence-v1.json").read_text()))


class FakeImds:
    """The two Azure IMDS endpoints the attesters call, on loopback."""

    def __init__(self, vcek_pem: str, td_quote: bytes) -> None:
        self.vcek_pem = vcek_pem
        self.td_quote = td_quote
        self.reports: list[str] = []
        self.headers: list[str | None] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metadata/THIM/amd/certification", self._certs)
        app.router.add_post("/acc/tdquote", self._quote)
        return app

    async def _certs(self, request: web.Request) -> web.Response:
        self.headers.append(request.headers.get("Metadata"))
        return web.json_response({"vcekCert": self.vcek_pem, "certificateChain": "chain"})

    async def _quote(self, request: web.Request) -> web.Response:
        self.headers.append(request.headers.get("Metadata"))
        self.reports.append((await request.json())["report"])
        return web.json_response({"quote": base64.urlsafe_b64encode(self.td_quote).rstrip(b"=").decode()})


@pytest.fixture
async def imds(snp_v2: dict[str, Any], tdx_v1: dict[str, Any]) -> AsyncIterator[tuple[FakeImds, str]]:
    body = "\n".join(textwrap.wrap(base64.b64encode(_b64(snp_v2["vcek"])).decode(), 64))
    vcek = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
    fake = FakeImds(vcek, _b64(tdx_v1["td_quote"]))
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def test_snp_assembly_reproduces_real_evidence(snp_v2: dict[str, Any]) -> None:
    hcl = parse_hcl_report(_b64(snp_v2["hcl_report"]))
    quote = _quote(snp_v2)
    check_binding(hcl, quote, V2_NONCE)
    assert az_snp_evidence(hcl, quote, _b64(snp_v2["vcek"])) == snp_v2


def test_tdx_assembly_matches_real_evidence(tdx_v1: dict[str, Any]) -> None:
    hcl = parse_hcl_report(_b64(tdx_v1["hcl_report"]))
    assert hcl.report_type == 4 and len(hcl.hw_report) == 1024
    assert hashlib.sha256(hcl.var_data).digest() == hcl.hw_report_data()[:32]
    evidence = az_tdx_evidence(hcl, _quote(tdx_v1), _b64(tdx_v1["td_quote"]))
    assert evidence == {**tdx_v1, "version": 2}
    with pytest.raises(AzureEvidenceError, match="SNP"):
        az_snp_evidence(hcl, _quote(tdx_v1), b"vcek")


def test_quote_nonce_is_read_from_tpms_attest(snp_v2: dict[str, Any], tdx_v1: dict[str, Any]) -> None:
    assert _quote(snp_v2).nonce() == V2_NONCE
    assert _quote(tdx_v1).nonce() == b"challenge"
    for message in (b"", bytes(8), bytes.fromhex("ff544347801800"), bytes.fromhex("ff5443478018ffff")):
        with pytest.raises(AzureEvidenceError):
            TpmQuote(b"", message, ()).nonce()


def test_binding_checks(snp_v2: dict[str, Any], tdx_v1: dict[str, Any]) -> None:
    hcl = parse_hcl_report(_b64(snp_v2["hcl_report"]))
    quote = _quote(snp_v2)
    with pytest.raises(AzureEvidenceError, match="nonce"):
        check_binding(hcl, quote, V2_NONCE[::-1])
    stale = parse_hcl_report(_b64(tdx_v1["hcl_report"]))  # v1: user-data not set
    with pytest.raises(AzureEvidenceError, match="stale"):
        check_binding(stale, _quote(tdx_v1), b"challenge")
    raw = bytearray(hcl.raw)
    raw[0x6E0] ^= 1  # inside the runtime data: the hardware report no longer covers it
    with pytest.raises(AzureEvidenceError, match="cover"):
        check_binding(parse_hcl_report(bytes(raw)), quote, V2_NONCE)
    short = TpmQuote(quote.signature, quote.message, quote.pcrs[:23])
    with pytest.raises(AzureEvidenceError, match="24"):
        check_binding(hcl, short, V2_NONCE)


def test_hcl_report_parsing_refuses_garbage(snp_v2: dict[str, Any]) -> None:
    raw = _b64(snp_v2["hcl_report"])
    for bad in (b"", b"XXXX" + raw[4:], raw[:0x4D0]):
        with pytest.raises(AzureEvidenceError):
            parse_hcl_report(bad)
    wrong_type = bytearray(raw)
    wrong_type[0x4C8] = 3
    with pytest.raises(AzureEvidenceError, match="type 3"):
        parse_hcl_report(bytes(wrong_type))
    with pytest.raises(AzureEvidenceError, match="user-data"):
        HclReport(raw=raw, report_type=2, var_data=b"{}").user_data()


async def test_snp_attester_end_to_end(snp_v2: dict[str, Any], imds: tuple[FakeImds, str]) -> None:
    fake_imds, url = imds
    vtpm = FakeVtpm(_b64(snp_v2["hcl_report"]), _quote(snp_v2))
    attester = AzSnpVtpmAttester(vtpm, AzureImds(url))
    assert await attester.get_evidence(V2_NONCE) == snp_v2
    assert vtpm.writes == [V2_NONCE] and vtpm.nonces == [V2_NONCE]
    assert fake_imds.headers == ["true"]
    with pytest.raises(AzureEvidenceError, match="nonce"):
        await attester.get_evidence(bytes(48))


async def test_tdx_attester_sends_the_td_report(tdx_v1: dict[str, Any], imds: tuple[FakeImds, str]) -> None:
    fake_imds, url = imds
    hcl = parse_hcl_report(_b64(tdx_v1["hcl_report"]))
    # A v1 paravisor's HCL report carries no user-data: refused before the IMDS is asked for a quote.
    vtpm = FakeVtpm(hcl.raw, _quote(tdx_v1))
    attester = AzTdxVtpmAttester(vtpm, AzureImds(url))
    with pytest.raises(AzureEvidenceError, match="stale"):
        await attester.get_evidence(b"challenge")
    assert fake_imds.reports == []


async def test_init_data_goes_into_pcr8(snp_v2: dict[str, Any]) -> None:
    vtpm = FakeVtpm(b"", _quote(snp_v2))
    attester = AzSnpVtpmAttester(vtpm, AzureImds("http://127.0.0.1:9"))
    digest = hashlib.sha256(b"initdata").digest()
    assert await attester.bind_init_data(digest) is True
    assert vtpm.extended == [(8, digest)]
    with pytest.raises(InitDataError, match="SHA-256"):
        await attester.bind_init_data(bytes(48))


async def test_imds_failures_are_evidence_errors() -> None:
    async def not_pem(request: web.Request) -> web.Response:
        return web.json_response({"vcekCert": "nope"})

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/metadata/THIM/amd/certification", not_pem)
    app.router.add_post("/acc/tdquote", unavailable)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        imds = AzureImds(str(server.make_url("")))
        with pytest.raises(AzureEvidenceError, match="PEM"):
            await imds.vcek_der()
        with pytest.raises(AzureEvidenceError, match="503"):
            await imds.td_quote(bytes(1024))
    finally:
        await server.close()
    with pytest.raises(AzureEvidenceError, match="failed"):
        await AzureImds("http://127.0.0.1:9", timeout=5).vcek_der()


def test_detects_azure_snp_from_the_hcl_report(snp_v2: dict[str, Any], tmp_path: Path) -> None:
    vendor = tmp_path / "sys_vendor"
    vendor.write_text("Microsoft Corporation\n")
    tpm = tmp_path / "tpmrm0"
    tpm.touch()
    vtpm = FakeVtpm(_b64(snp_v2["hcl_report"]), _quote(snp_v2))
    platform = Platform(tsm_root=tmp_path / "none", dmi_sys_vendor=vendor, tpm_device=tpm, vtpm=vtpm)
    assert isinstance(detect_attester(platform), AzSnpVtpmAttester)
    assert vtpm.writes == [None]  # detection reads the report, it does not request a new one
    not_cvm = Platform(
        tsm_root=tmp_path / "none", dmi_sys_vendor=vendor, tpm_device=tpm, vtpm=FakeVtpm(b"", _quote(snp_v2))
    )
    assert detect_attester(not_cvm).tee == "sample"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1400))
def test_hcl_parser_only_raises_its_error(raw: bytes) -> None:
    blob = b"HCLA" + raw
    try:
        hcl = parse_hcl_report(blob)
    except AzureEvidenceError:
        return
    with contextlib.suppress(AzureEvidenceError):
        hcl.user_data()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_quote_nonce_parser_only_raises_its_error(tail: bytes) -> None:
    for message in (tail, bytes.fromhex("ff5443478018") + tail):
        with contextlib.suppress(AzureEvidenceError):
            assert len(TpmQuote(b"", message, ()).nonce()) <= len(message)
