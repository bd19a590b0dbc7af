"""Attesters: sample, configfs-tsm (fake tree), SNP evidence shaping and the /dev/sev-guest encoding,
TDX, TEE detection."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podvm.attestation_agent import sev_guest
from podvm.attestation_agent.attester import SampleAttester, fit_report_data
from podvm.attestation_agent.detect import Platform, detect_attester
from podvm.attestation_agent.errors import AttesterError, InitDataError
from podvm.attestation_agent.snp import SevGuestSource, SnpAttester, TsmSnpSource, snp_source
from podvm.attestation_agent.snp_report import (
    SnpReportError,
    parse_cert_table,
    report_to_json,
    snp_evidence,
)
from podvm.attestation_agent.tdx import TdxAttester, TdxQuoteError, quote_fields, trim_ccel
from podvm.attestation_agent.tsm import PROVIDER_SEV, PROVIDER_TDX, TsmReportClient, TsmReportError
from tests.podvm.aa_fakes import FakeConfigfs, snp_report, td_quote
from tests.verifier import vectors_dir
from verifier.snp.evidence import encode_report, parse_evidence

DIGEST = bytes(range(48))
PADDED = DIGEST + bytes(16)
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")


def cert_table(*entries: tuple[uuid.UUID, bytes]) -> bytes:
    """A GHCB certificate table: 24-byte entries, the terminator, then the certificates."""
    header_size = 24 * (len(entries) + 1)
    table, blobs, offset = b"", b"", header_size
    for guid, der in entries:
        table += guid.bytes + struct.pack("<II", offset, len(der))
        blobs += der
        offset += len(der)
    return table + bytes(24) + blobs


def tsm_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


# ---- sample


async def test_sample_evidence_is_upstreams_shape() -> None:
    attester = SampleAttester()
    assert attester.tee == "sample"
    assert await attester.get_evidence(DIGEST) == {
        "svn": "1",
        "report_data": base64.b64encode(DIGEST).decode(),
    }
    assert await attester.bind_init_data(bytes(32)) is False


def test_report_data_is_padded_never_truncated() -> None:
    assert fit_report_data(DIGEST) == PADDED
    with pytest.raises(AttesterError, match="at most 64"):
        fit_report_data(bytes(65))


# ---- configfs-tsm


def test_tsm_report_round_trip_on_a_fake_tree(tmp_path: Path) -> None:
    fake = FakeConfigfs(PROVIDER_SEV, lambda: b"REPORT", auxblob=b"CERTS")
    client = TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), fake)
    report = client.get_report(PADDED, privlevel=0, want_auxblob=True)
    assert (report.outblob, report.auxblob) == (b"REPORT", b"CERTS")
    assert fake.inblobs == [PADDED]
    assert fake.privlevels == [b"0"]
    assert fake.removed == fake.created and len(fake.created) == 1
    assert fake.created[0].parent == client.root and fake.created[0].name.startswith("peerpods-")
    assert not any(client.root.iterdir())


def test_tsm_without_auxblob(tmp_path: Path) -> None:
    fake = FakeConfigfs(PROVIDER_TDX, lambda: b"QUOTE")
    report = TsmReportClient(PROVIDER_TDX, tsm_tree(tmp_path), fake).get_report(PADDED, want_auxblob=True)
    assert (report.outblob, report.auxblob) == (b"QUOTE", None)


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        (FakeConfigfs(PROVIDER_TDX, lambda: b"Q"), "provider is 'tdx_guest'"),
        (FakeConfigfs(PROVIDER_SEV, lambda: b"Q", generation=2), "another writer"),
        (FakeConfigfs(PROVIDER_SEV, lambda: b""), "empty outblob"),
    ],
)
def test_tsm_refusals_still_remove_the_entry(tmp_path: Path, fake: FakeConfigfs, message: str) -> None:
    client = TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), fake)
    with pytest.raises(TsmReportError, match=message):
        client.get_report(PADDED)
    assert fake.removed == fake.created
    assert not any(client.root.iterdir())


def test_tsm_garbled_generation(tmp_path: Path) -> None:
    fake = FakeConfigfs(PROVIDER_SEV, lambda: b"Q")
    client = TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), fake)
    original = fake.create

    def create(path: Path) -> None:
        original(path)
        (path / "generation").write_text("parseerror\n")

    fake.create = create  # type: ignore[method-assign]
    with pytest.raises(TsmReportError, match="not a number"):
        client.get_report(PADDED)


def test_tsm_absent_and_bad_inblob(tmp_path: Path) -> None:
    client = TsmReportClient(PROVIDER_SEV, tmp_path / "missing")
    assert not client.available()
    with pytest.raises(TsmReportError, match="no configfs-tsm"):
        client.get_report(PADDED)
    real = TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), FakeConfigfs(PROVIDER_SEV, lambda: b"Q"))
    for bad in (b"", bytes(65)):
        with pytest.raises(TsmReportError, match="inblob"):
            real.get_report(bad)


def test_tsm_plain_directory_is_not_configfs(tmp_path: Path) -> None:
    """Without configfs behind it a created entry has no `provider`: refused, and cleaned up."""
    client = TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path))
    assert not client.available()
    with pytest.raises(TsmReportError, match="provider"):
        client.get_report(PADDED)
    assert not any(client.root.iterdir())


# ---- SNP


async def test_snp_attester_over_configfs_tsm(tmp_path: Path) -> None:
    vcek = b"\x30\x82fake-vcek-der"
    fake = FakeConfigfs(PROVIDER_SEV, lambda: snp_report(PADDED), auxblob=cert_table((VCEK_GUID, vcek)))
    source = snp_source(tsm_tree(tmp_path), tmp_path / "no-sev-guest", fake)
    assert isinstance(source, TsmSnpSource)
    evidence = await SnpAttester(source).get_evidence(DIGEST)
    assert evidence["cert_chain"] == [{"cert_type": "VCEK", "data": list(vcek)}]
    assert bytes(evidence["attestation_report"]["report_data"]) == PADDED
    parsed = parse_evidence(json.dumps(evidence).encode())  # the KBS side's parser takes it as is
    assert parsed.report.report_data == PADDED
    assert parsed.certificate("VCEK") == vcek
    assert fake.inblobs == [PADDED] and fake.privlevels == [b"0"]


async def test_snp_attester_refuses_a_report_for_other_data(tmp_path: Path) -> None:
    fake = FakeConfigfs(PROVIDER_SEV, lambda: snp_report(bytes(64)))
    attester = SnpAttester(TsmSnpSource(TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), fake)))
    with pytest.raises(AttesterError, match="requested report data"):
        await attester.get_evidence(DIGEST)


async def test_snp_init_data_binding_against_host_data(tmp_path: Path) -> None:
    digest = bytes(range(32))
    fake = FakeConfigfs(PROVIDER_SEV, lambda: snp_report(host_data=digest))
    attester = SnpAttester(TsmSnpSource(TsmReportClient(PROVIDER_SEV, tsm_tree(tmp_path), fake)))
    assert await attester.bind_init_data(digest) is True
    assert fake.inblobs == [bytes(64)]
    with pytest.raises(InitDataError, match="HOST_DATA"):
        await attester.bind_init_data(bytes(32))
    # a SHA-384 digest is compared on its first 32 bytes, as upstream pads/truncates
    assert await attester.bind_init_data(digest + b"\xaa" * 16) is True


def test_snp_source_falls_back_to_the_ioctl_device(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    assert snp_source(tmp_path / "no-tsm", device) is None
    device.touch()
    assert isinstance(snp_source(tmp_path / "no-tsm", device), SevGuestSource)


def test_report_json_round_trips_real_reports() -> None:
    folder = vectors_dir("snp")
    doc = json.loads((folder / "genoa-evidence.json").read_text())["attestation_report"]
    assert report_to_json(encode_report(doc)) == doc
    milan = (folder / "milan-report-v2.bin").read_bytes()
    shaped = report_to_json(milan)
    assert shaped["cpuid_fam_id"] is None and shaped["version"] == 2
    assert encode_report(shaped) == milan


def test_report_json_turin_and_v5_fields() -> None:
    raw = bytearray(snp_report(version=5, family=0x1A))
    raw[0x180:0x188] = bytes([5, 3, 1, 8, 0, 0, 0, 77])
    raw[0x1F8:0x200] = (7).to_bytes(8, "little")
    doc = report_to_json(bytes(raw))
    assert doc["reported_tcb"] == {"fmc": 5, "bootloader": 3, "tee": 1, "snp": 8, "microcode": 77}
    assert doc["launch_mit_vector"] == 7 and doc["current_mit_vector"] == 0
    assert encode_report(doc) == bytes(raw)
    with pytest.raises(SnpReportError, match="1184"):
        report_to_json(bytes(100))


def test_cert_table_entries_and_unknown_guids() -> None:
    other = uuid.UUID("11111111-2222-3333-4444-555555555555")
    ark = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
    table = cert_table((VCEK_GUID, b"vcek"), (ark, b"ark"), (other, b"x"))
    assert parse_cert_table(table) == [("VCEK", b"vcek"), ("ARK", b"ark"), ({"OTHER": str(other)}, b"x")]
    # GUID bytes are in RFC 4122 (string) order, not the mixed-endian Microsoft form
    assert table[:4] == bytes.fromhex("63da758d")
    assert snp_evidence(snp_report(), None)["cert_chain"] is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (b"", "terminating"),
        (VCEK_GUID.bytes + struct.pack("<II", 48, 10), "outside"),
        (VCEK_GUID.bytes + struct.pack("<II", 24, 10) + bytes(10), "terminating"),
        (VCEK_GUID.bytes + struct.pack("<II", 48, 100) + bytes(24), "outside"),
        (VCEK_GUID.bytes + struct.pack("<II", 48, 0) + bytes(24), "outside"),
    ],
)
def test_bad_cert_tables(table: bytes, message: str) -> None:
    with pytest.raises(SnpReportError, match=message):
        parse_cert_table(table)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_cert_table_parser_only_raises_its_error(blob: bytes) -> None:
    try:
        entries = parse_cert_table(blob)
    except SnpReportError:
        return
    assert all(len(der) > 0 for _, der in entries)


# ---- /dev/sev-guest encoding (the ioctl itself needs an SNP guest)


def test_sev_guest_ioctl_encoding() -> None:
    assert sev_guest.SNP_GET_REPORT == 0xC0205300
    assert sev_guest.GUEST_REQUEST.size == 32
    request = sev_guest.encode_report_request(PADDED, vmpl=1)
    assert len(request) == 96 and request[:64] == PADDED
    assert request[64:68] == (1).to_bytes(4, "little") and request[68:] == bytes(28)
    guest = sev_guest.encode_guest_request(0x1122334455667788, 0x99AABBCCDDEEFF00)
    assert guest[0] == 1 and guest[1:8] == bytes(7)
    assert guest[8:16] == (0x1122334455667788).to_bytes(8, "little")
    assert guest[16:24] == (0x99AABBCCDDEEFF00).to_bytes(8, "little")
    assert guest[24:] == bytes(8)
    written = guest[:24] + ((2 << 32) | 0x16).to_bytes(8, "little")
    assert sev_guest.decode_exitinfo2(written) == (0x16, 2)
    with pytest.raises(AttesterError):
        sev_guest.encode_report_request(DIGEST)
    with pytest.raises(AttesterError):
        sev_guest.encode_report_request(PADDED, vmpl=4)


def test_sev_guest_response_decoding() -> None:
    report = snp_report(PADDED)
    response = struct.pack("<II", 0, 1184) + bytes(24) + report + bytes(4000 - 32 - 1184)
    assert sev_guest.decode_report_response(response) == report
    with pytest.raises(AttesterError, match="status 0x16"):
        sev_guest.decode_report_response(struct.pack("<II", 0x16, 1184) + response[8:])
    with pytest.raises(AttesterError, match="1000-byte"):
        sev_guest.decode_report_response(struct.pack("<II", 0, 1000) + response[8:])
    with pytest.raises(AttesterError, match="only"):
        sev_guest.decode_report_response(response[:100])


def test_sev_guest_missing_device(tmp_path: Path) -> None:
    with pytest.raises(AttesterError, match="cannot open"):
        sev_guest.get_report(PADDED, device=tmp_path / "sev-guest")


# ---- TDX


async def test_tdx_attester_over_configfs_tsm(tmp_path: Path) -> None:
    quote = td_quote(PADDED)
    fake = FakeConfigfs(PROVIDER_TDX, lambda: quote)
    ccel = tmp_path / "CCEL"
    attester = TdxAttester(
        TsmReportClient(PROVIDER_TDX, tsm_tree(tmp_path), fake), ccel, tmp_path / "measurements"
    )
    assert await attester.get_evidence(DIGEST) == {
        "cc_eventlog": None,
        "quote": base64.b64encode(quote).decode(),
    }
    assert fake.inblobs == [PADDED]


async def test_tdx_evidence_refuses_a_quote_for_other_data(tmp_path: Path) -> None:
    fake = FakeConfigfs(PROVIDER_TDX, lambda: td_quote(bytes(64), version=5))
    attester = TdxAttester(
        TsmReportClient(PROVIDER_TDX, tsm_tree(tmp_path), fake), tmp_path / "c", tmp_path / "m"
    )
    with pytest.raises(AttesterError, match="requested report data"):
        await attester.get_evidence(DIGEST)


async def test_tdx_init_data_binding(tmp_path: Path) -> None:
    digest = bytes(range(48))
    fake = FakeConfigfs(PROVIDER_TDX, lambda: td_quote(mr_config_id=digest, version=5))
    measurements = tmp_path / "measurements"
    attester = TdxAttester(
        TsmReportClient(PROVIDER_TDX, tsm_tree(tmp_path), fake), tmp_path / "c", measurements
    )
    assert await attester.bind_init_data(digest) is True  # from a quote
    measurements.mkdir()
    (measurements / "mrconfigid").write_bytes(bytes(48))  # sysfs (Linux >= 6.16) wins when present
    with pytest.raises(InitDataError, match="MR_CONFIG_ID"):
        await attester.bind_init_data(digest)


def test_tdx_quote_fields_on_real_quotes() -> None:
    folder = vectors_dir("tdx")
    _, report_data = quote_fields((folder / "quote-v4.dat").read_bytes())
    assert report_data.hex().startswith("7c71fe2c86eff65a")
    config, report_data = quote_fields((folder / "quote-v4-fmspc-00a06d080000.dat").read_bytes())
    assert config.hex().startswith("889abf4718f037e3")
    assert report_data[48:] == bytes(16)
    for bad in (b"", td_quote()[:300], b"\x03\x00" + bytes(700)):
        with pytest.raises(TdxQuoteError):
            quote_fields(bad)


def test_ccel_trimmed_to_its_events() -> None:
    ccel = (vectors_dir("tdx") / "CCEL_data_ovmf").read_bytes()
    trimmed = trim_ccel(ccel)
    assert 0 < len(trimmed) < len(ccel)
    assert ccel[len(trimmed) : len(trimmed) + 8] == b"\xff" * 8
    assert trim_ccel(trimmed + bytes(8)) == trimmed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_ccel_parser_only_raises_its_error(blob: bytes) -> None:
    try:
        trimmed = trim_ccel(blob)
    except TdxQuoteError:
        return
    assert blob.startswith(trimmed)


# ---- detection


def test_detection_order_on_fake_trees(tmp_path: Path) -> None:
    root = tsm_tree(tmp_path)
    none = Platform(
        tsm_root=tmp_path / "none", sev_guest_device=tmp_path / "none", dmi_sys_vendor=tmp_path / "none"
    )
    assert isinstance(detect_attester(none), SampleAttester)
    sev = FakeConfigfs(PROVIDER_SEV, snp_report)
    snp = detect_attester(Platform(tsm_root=root, tsm_entries=sev, dmi_sys_vendor=tmp_path / "none"))
    assert isinstance(snp, SnpAttester)
    tdx = FakeConfigfs(PROVIDER_TDX, td_quote)
    found = detect_attester(Platform(tsm_root=root, tsm_entries=tdx, dmi_sys_vendor=tmp_path / "none"))
    assert isinstance(found, TdxAttester)
    assert not any(root.iterdir())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_firmware_answers_only_raise_attester_errors(blob: bytes) -> None:
    for parse in (sev_guest.decode_report_response, quote_fields, report_to_json):
        with contextlib.suppress(AttesterError):
            parse(blob)
