"""SEV-SNP verifier against real AMD evidence (../shared/vectors/snp; skipped when absent).

Expected values are the ones the vectors README states, decoded from the bytes themselves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.verifier import vectors_dir
from verifier.errors import VerificationError
from verifier.snp import SnpOptions, SnpVerifier
from verifier.snp.anchors import pinned_anchors
from verifier.snp.chain import hwid_extension
from verifier.snp.report import Generation, parse_report
from verifier.snp.vcek import OfflineStore, VcekKey
from verifier.x509util import common_name, load_der_certificate

pytestmark = pytest.mark.vectors

# Inside every real certificate's validity window, so the tests do not age.
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)

MILAN_MEASUREMENT = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
)
MILAN_REPORT_DATA = bytes.fromhex("ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2")
MILAN_CHIP_ID = (
    "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f"
    "8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
)
GENOA_MEASUREMENT = (
    "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e"
)
GENOA_REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)


@pytest.fixture(scope="module")
def snp() -> Path:
    return vectors_dir("snp")


def verifier(options: SnpOptions | None = None, **kwargs: object) -> SnpVerifier:
    return SnpVerifier(options, vcek_sources=[], clock=lambda: CLOCK, **kwargs)  # type: ignore[arg-type]


def flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0xFF
    return bytes(out)


def reason_of(call) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.reason


def test_shipped_roots_are_the_vector_bundles(snp: Path) -> None:
    anchors = pinned_anchors()
    for generation in Generation:
        roots = anchors[generation]
        assert [common_name(c) for c in (roots.ask, roots.ark, roots.asvk)] == [
            f"SEV-{generation.value}",
            f"ARK-{generation.value}",
            f"SEV-VLEK-{generation.value}",
        ]
        bundle = (snp / f"{generation.value.lower()}_ask_ark_asvk.pem").read_bytes()
        shipped = Path(__file__).resolve().parents[2] / "verifier" / "roots"
        assert (shipped / f"amd_{generation.value.lower()}_ask_ark_asvk.pem").read_bytes() == bundle


def test_genoa_evidence_verifies_to_the_stated_values(snp: Path) -> None:
    evidence = (snp / "genoa-evidence.json").read_bytes()
    claims = verifier().evaluate(evidence, GENOA_REPORT_DATA, bytes(32))
    assert claims["measurement"] == GENOA_MEASUREMENT
    assert claims["report_data"] == GENOA_REPORT_DATA.hex()
    assert (claims["reported_tcb_bootloader"], claims["reported_tcb_tee"]) == (10, 0)
    assert (claims["reported_tcb_snp"], claims["reported_tcb_microcode"]) == (23, 25)
    assert claims["policy_smt_allowed"] is True and claims["policy_debug_allowed"] is False
    assert claims["init_data"] == "00" * 32
    assert claims["chip_id"].startswith("371c55d6") and claims["chip_id"].endswith("de8718e8")
    doc = json.loads(evidence)["attestation_report"]
    assert (doc["version"], doc["policy"], doc["vmpl"]) == (3, 0x30000, 0)


def test_genoa_evidence_rejections(snp: Path) -> None:
    evidence = (snp / "genoa-evidence.json").read_bytes()
    assert reason_of(lambda: verifier().evaluate(evidence, bytes(64))) == "report_data_mismatch"
    assert (
        reason_of(lambda: verifier().evaluate(evidence, GENOA_REPORT_DATA, b"\x01")) == "init_data_mismatch"
    )
    doc = json.loads(evidence)
    doc["attestation_report"]["measurement"][0] ^= 1
    tampered = json.dumps(doc).encode()
    assert reason_of(lambda: verifier().evaluate(tampered, GENOA_REPORT_DATA)) == "bad_signature"
    doc = json.loads(evidence)
    doc["cert_chain"][0]["data"][42] ^= 0xFF
    tampered = json.dumps(doc).encode()
    assert reason_of(lambda: verifier().evaluate(tampered, GENOA_REPORT_DATA)) == "chain_invalid"
    doc = json.loads(evidence)
    doc["cert_chain"] = None
    no_chain = json.dumps(doc).encode()
    assert reason_of(lambda: verifier().evaluate(no_chain, GENOA_REPORT_DATA)) == "vcek_unavailable"


def test_milan_v2_report_verifies_to_the_stated_values(snp: Path) -> None:
    report = parse_report((snp / "milan-report-v2.bin").read_bytes())
    vcek = (snp / "milan-vcek.der").read_bytes()
    assert (report.version, report.guest_svn, report.policy, report.vmpl) == (2, 4, 0x3001F, 0)
    assert report.raw[0x180:0x188] == (0x7308000000000003).to_bytes(8, "little")
    claims = verifier().verify_report(report, vcek)
    assert claims["measurement"] == MILAN_MEASUREMENT
    assert claims["report_data"] == (MILAN_REPORT_DATA + bytes(32)).hex()
    assert claims["chip_id"] == MILAN_CHIP_ID
    assert [claims[f"reported_tcb_{c}"] for c in ("bootloader", "tee", "snp", "microcode")] == [3, 0, 8, 115]
    assert claims["policy_abi_minor"] == 31
    # Upstream's minimum: the same report is refused by version alone.
    strict = verifier(SnpOptions(min_report_version=3))
    assert reason_of(lambda: strict.verify_report(report, vcek)) == "unsupported_version"


def test_milan_raw_report_verifies_from_an_offline_store(snp: Path, tmp_path: Path) -> None:
    raw = (snp / "milan-report-v2.bin").read_bytes()
    report = parse_report(raw)
    key = VcekKey(Generation.MILAN, report.chip_id, report.reported_tcb(Generation.MILAN))
    store = OfflineStore(tmp_path)
    assert store.path_for(key).name == "bl03_tee00_snp08_ucode115_vcek.der"
    store.path_for(key).parent.mkdir(parents=True)
    store.path_for(key).write_bytes((snp / "milan-vcek.der").read_bytes())
    store_verifier = SnpVerifier(vcek_sources=[store], clock=lambda: CLOCK)
    claims = store_verifier.evaluate(raw, MILAN_REPORT_DATA)
    assert claims["measurement"] == MILAN_MEASUREMENT


def test_milan_mutations_fail_with_their_reasons(snp: Path) -> None:
    raw = (snp / "milan-report-v2.bin").read_bytes()
    vcek = (snp / "milan-vcek.der").read_bytes()
    v = verifier()
    assert reason_of(lambda: v.verify_report(parse_report(raw), flipped(vcek, 42))) == "chain_invalid"
    assert reason_of(lambda: v.verify_report(parse_report(flipped(raw, 42)), vcek)) == "bad_signature"
    assert reason_of(lambda: v.verify_report(parse_report(flipped(raw, 384)), vcek)) == "tcb_mismatch"


@pytest.mark.parametrize("name", ["fabricated-vcek-legacy-hwid.der", "fabricated-vcek-new-hwid.der"])
def test_fabricated_vceks_parse_but_do_not_chain(snp: Path, name: str) -> None:
    der = (snp / name).read_bytes()
    assert hwid_extension(load_der_certificate(der, "VCEK")) == bytes(range(64))
    report = parse_report((snp / "milan-report-v2.bin").read_bytes())
    assert reason_of(lambda: verifier().verify_report(report, der)) == "chain_invalid"


def test_real_vcek_hwid_is_the_raw_form(snp: Path) -> None:
    cert = load_der_certificate((snp / "milan-vcek.der").read_bytes(), "VCEK")
    assert hwid_extension(cert) == bytes.fromhex(MILAN_CHIP_ID)
