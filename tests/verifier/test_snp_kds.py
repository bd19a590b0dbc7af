"""VCEK sources: the KDS client against a fake KDS on 127.0.0.1, the offline store and the cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.verifier import snp_builder as b
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.snp.kds import KdsFetcher, parse_retry_after, vcek_url
from verifier.snp.report import Generation, TcbVersion
from verifier.snp.vcek import OfflineStore, VcekCache, VcekKey, VcekUnavailable

CHIP = bytes(range(0x40, 0x80))
MILAN_KEY = VcekKey(Generation.MILAN, CHIP, TcbVersion(bootloader=3, tee=0, snp=8, microcode=115))


@dataclass
class FakeKds:
    """Answers each request with the next scripted (status, headers, body); repeats the last one."""

    url: str = ""
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def kds() -> Iterator[FakeKds]:
    fake = FakeKds()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(self.path)
            status, headers, body = fake.script[min(len(fake.requests), len(fake.script)) - 1]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


def fetcher(kds: FakeKds, sleeps: list[float], **options: float) -> KdsFetcher:
    return KdsFetcher(kds.url, sleep=sleeps.append, timeout=5, **options)  # type: ignore[arg-type]


def test_url_format_matches_kds() -> None:
    assert vcek_url("https://kdsintf.amd.com", MILAN_KEY) == (
        f"https://kdsintf.amd.com/vcek/v1/Milan/{CHIP.hex()}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    )
    turin = VcekKey(Generation.TURIN, bytes(range(8)) + bytes(56), TcbVersion(3, 1, 8, 15, fmc=5))
    assert vcek_url("https://kds.example/", turin) == (
        "https://kds.example/vcek/v1/Turin/0001020304050607?fmcSPL=05&blSPL=03&teeSPL=01&snpSPL=08&ucodeSPL=15"
    )
    assert turin.tcb_stem == "bl03_tee01_snp08_ucode15_fmc05"
    assert replace(MILAN_KEY, tcb=TcbVersion(2, 0, 6, 21)).tcb_stem == "bl02_tee00_snp06_ucode21"


def test_fetch_success(kds: FakeKds) -> None:
    kds.script = [(200, {"Content-Type": "application/x-x509-ca-cert"}, b"vcek-bytes")]
    assert fetcher(kds, []).fetch(MILAN_KEY) == b"vcek-bytes"
    assert kds.requests == [f"/vcek/v1/Milan/{CHIP.hex()}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"]


def test_429_honours_retry_after_then_succeeds(kds: FakeKds) -> None:
    kds.script = [(429, {"Retry-After": "7"}, b""), (200, {}, b"vcek-bytes")]
    sleeps: list[float] = []
    assert fetcher(kds, sleeps).fetch(MILAN_KEY) == b"vcek-bytes"
    assert sleeps == [7.0]
    assert len(kds.requests) == 2


def test_backoff_is_exponential_and_bounded(kds: FakeKds) -> None:
    kds.script = [(503, {}, b"")]
    sleeps: list[float] = []
    with pytest.raises(VcekUnavailable) as info:
        fetcher(kds, sleeps, attempts=5, initial_backoff=0.5, max_backoff=3.0).fetch(MILAN_KEY)
    assert info.value.reason == "vcek_unavailable"
    assert sleeps == [0.5, 1.0, 2.0, 3.0]
    assert len(kds.requests) == 5


def test_404_is_unavailable_without_retrying(kds: FakeKds) -> None:
    kds.script = [(404, {}, b"not found")]
    sleeps: list[float] = []
    with pytest.raises(VerificationError) as info:
        fetcher(kds, sleeps).fetch(MILAN_KEY)
    assert info.value.reason == "vcek_unavailable"
    assert (len(kds.requests), sleeps) == (1, [])


def test_masked_chip_id_is_never_sent(kds: FakeKds) -> None:
    with pytest.raises(VcekUnavailable):
        fetcher(kds, []).fetch(replace(MILAN_KEY, chip_id=bytes(64)))
    assert kds.requests == []


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("\u0663", now) is None  # a digit, but not an ASCII one
    assert parse_retry_after(None, now) is None


@given(st.text(max_size=60))
def test_retry_after_takes_any_header_value(value: str) -> None:
    delay = parse_retry_after(value, datetime(2026, 1, 1, tzinfo=UTC))
    assert delay is None or delay >= 0


def test_only_http_base_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        KdsFetcher("file:///etc")


def test_verifier_fetches_once_then_uses_its_cache(kds: FakeKds, tmp_path: Path) -> None:
    case = b.make_case()
    kds.script = [(200, {}, case.vek_der)]
    cache = VcekCache(directory=tmp_path)
    verifier = SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[fetcher(kds, [])], vcek_cache=cache)
    evidence = case.evidence(with_chain=False)
    report_data = case.spec.report_data
    assert verifier.evaluate(evidence, report_data)["chip_id"] == case.spec.effective_chip_id.hex()
    assert verifier.evaluate(evidence, report_data)
    assert len(kds.requests) == 1
    # The cache directory is in offline-store layout: an air-gapped verifier can use it as is.
    offline = SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[OfflineStore(tmp_path)])
    assert offline.evaluate(evidence, report_data)


def test_a_vcek_that_does_not_chain_is_not_cached(kds: FakeKds) -> None:
    case = b.make_case()
    impostor = b.make_case(pki=b.make_pki(label="impostor"))
    kds.script = [(200, {}, impostor.vek_der), (200, {}, case.vek_der)]
    verifier = SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[fetcher(kds, [])])
    evidence = case.evidence(with_chain=False)
    with pytest.raises(VerificationError) as info:
        verifier.evaluate(evidence, case.spec.report_data)
    assert info.value.reason == "chain_invalid"
    assert verifier.evaluate(evidence, case.spec.report_data)
    assert len(kds.requests) == 2


def test_sources_are_tried_in_order(kds: FakeKds, tmp_path: Path) -> None:
    case = b.make_case()
    kds.script = [(200, {}, case.vek_der)]
    verifier = SnpVerifier(
        anchors=case.pki.anchors(), vcek_sources=[OfflineStore(tmp_path), fetcher(kds, [])]
    )
    assert verifier.evaluate(case.evidence(with_chain=False), case.spec.report_data)
    assert len(kds.requests) == 1
    nothing = SnpVerifier(anchors=case.pki.anchors(), vcek_sources=[OfflineStore(tmp_path)])
    with pytest.raises(VcekUnavailable, match="offline store"):
        nothing.evaluate(case.evidence(with_chain=False), case.spec.report_data)


def test_offline_store_prefers_the_tcb_specific_file(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path)
    folder = tmp_path / "vcek" / CHIP.hex()
    folder.mkdir(parents=True)
    (folder / "vcek.der").write_bytes(b"any tcb")
    assert store.fetch(MILAN_KEY) == b"any tcb"
    (folder / "bl03_tee00_snp08_ucode115_vcek.der").write_bytes(b"exact tcb")
    assert store.fetch(MILAN_KEY) == b"exact tcb"
    with pytest.raises(VcekUnavailable):
        store.fetch(replace(MILAN_KEY, chip_id=bytes(64)))
