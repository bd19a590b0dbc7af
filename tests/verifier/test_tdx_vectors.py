"""TDX verifier against real Intel evidence and collateral (../shared/vectors/tdx; skipped when absent).

Expected values are the ones the vectors README states, decoded from the bytes themselves.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.verifier import vectors_dir
from verifier.dcap.pck import verify_pck_chain
from verifier.dcap.x509chain import INTEL_SGX_ROOT_CA_SHA256, load_intel_root
from verifier.errors import VerificationError
from verifier.tdx import CollateralNeeded, RawCollateral, TdxOptions, TdxVerifier
from verifier.tdx.claims import quote_map, td_attributes
from verifier.tdx.eventlog import parse_ccel, replay
from verifier.tdx.quote import parse_quote
from verifier.x509util import load_pem_certificates, sha256_fingerprint

pytestmark = pytest.mark.vectors

# Inside the real PCK chains' validity, after the collateral's nextUpdate (2025-11-26).
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE_NEXT_UPDATE = datetime(2025, 11, 1, tzinfo=UTC)
QUOTE4_MR_TD = (
    "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
)
QUOTE4_REPORT_DATA = (
    "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656ae"
    "b755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
)
QUOTE6_MR_CONFIG_ID = bytes.fromhex(
    "889abf4718f037e38d74464c11e7c91a6e9890b5546409e1e7df9de7a51ca93152bf847bd2440328e90adb18b150ed67"
)
QE_REPORT_OFFSET = 636 + 134  # after header, body, signature-data length, signature, key, cert header


@pytest.fixture(scope="module")
def tdx() -> Path:
    return vectors_dir("tdx")


def read(folder: Path, name: str) -> bytes:
    return (folder / name).read_bytes()


def real_collateral(folder: Path) -> RawCollateral:
    return RawCollateral(
        tcb_info=read(folder, "tcbInfo.json"), qe_identity=read(folder, "enclaveIdentity.json")
    )


def verifier(folder: Path, *, clock: datetime = CLOCK, **options: Any) -> TdxVerifier:
    v = TdxVerifier(source=None, options=TdxOptions(**options), clock=lambda: clock)
    v.add_collateral(real_collateral(folder))
    return v


def reason_of(call) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.reason


def test_quote_v4_parses_to_the_stated_values(tdx: Path) -> None:
    quote = parse_quote(read(tdx, "quote-v4.dat"))
    assert quote.header.version == 4
    assert quote.body.mr_td.hex() == QUOTE4_MR_TD
    assert quote.body.report_data.hex() == QUOTE4_REPORT_DATA
    assert quote.body.td_attributes.hex() == "0100001000000000"
    assert quote.qe_report.isv_svn == 4
    pck = verify_pck_chain(quote.pck_chain_pem, load_intel_root())
    assert pck.extension.fmspc.hex() == "50806f000000"
    assert pck.ca == "platform"
    assert pck.extension.platform_instance_id is not None
    # Stored little-endian in the certificate; upstream's claim shows it big-endian.
    assert pck.extension.platform_instance_id[::-1].hex() == "82548d228d94d5e204a95b354dc61a02"


def test_pinned_root_is_the_root_real_quotes_chain_to(tdx: Path) -> None:
    root = load_intel_root()
    assert sha256_fingerprint(root) == INTEL_SGX_ROOT_CA_SHA256
    for name in ("quote-v4.dat", "quote-v4-fmspc-00a06d080000.dat"):
        chain = load_pem_certificates(parse_quote(read(tdx, name)).pck_chain_pem, name)
        assert chain[-1] == root


def test_quote_v4_chain_and_signatures_verify(tdx: Path) -> None:
    """Chain, QE report signature and binding, and quote signature all pass: the verifier then
    asks for the collateral of its platform, which the vectors do not carry."""
    v = TdxVerifier(source=None, clock=lambda: CLOCK)
    with pytest.raises(CollateralNeeded) as info:
        v.verify_quote(read(tdx, "quote-v4.dat"))
    assert (info.value.fmspc.hex(), info.value.ca) == ("50806f000000", "platform")


def test_quote_matches_real_collateral(tdx: Path) -> None:
    v = verifier(tdx, accept_stale_collateral=True, accept_unverified_collateral=True)
    quote = read(tdx, "quote-v4-fmspc-00a06d080000.dat")
    verified = v.verify_quote(quote)
    assert verified.pck.extension.fmspc.hex() == "00a06d080000"
    assert verified.quote.qe_report.isv_svn == 7
    assert verified.quote.body.tee_tcb_svn.hex().startswith("05030200")
    # The PCK's PCE SVN (11) is below the newest level's 13: the 2018 level matches, OutOfDate.
    assert verified.tcb.status == "OutOfDate"
    assert verified.tcb.tcb_date == datetime(2018, 1, 4, tzinfo=UTC)
    assert verified.tcb.qe_level is not None
    assert (verified.tcb.qe_level.isvsvn, verified.tcb.qe_level.status) == (4, "UpToDate")

    report_data = verified.quote.body.report_data[:48]
    assert verified.quote.body.report_data[48:] == bytes(16)
    evidence = json.dumps({"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}).encode()
    claims = v.evaluate(evidence, report_data, QUOTE6_MR_CONFIG_ID)
    assert claims["init_data"] == QUOTE6_MR_CONFIG_ID.hex()
    assert claims["tcb_status"] == "OutOfDate"
    assert claims["tcb_eval_num"] == 17
    assert claims["collateral_expiration_status"] == "1"
    assert claims["collateral_signature_verified"] is False
    assert claims["earliest_expiration_date"] == "2025-11-26T13:07:17Z"


def test_real_collateral_is_stale_unless_accepted(tdx: Path) -> None:
    quote = read(tdx, "quote-v4-fmspc-00a06d080000.dat")
    assert reason_of(lambda: verifier(tdx, accept_unverified_collateral=True).verify_quote(quote)) == (
        "collateral_stale"
    )
    fresh = verifier(tdx, clock=BEFORE_NEXT_UPDATE, accept_unverified_collateral=True)
    assert fresh.verify_quote(quote).stale is False


def test_real_collateral_signature_cannot_be_checked_without_the_signing_chain(tdx: Path) -> None:
    """Intel's TCB signing certificate comes in a PCS response header, not in the vectors: the
    verifier says so instead of trusting the documents silently."""
    v = verifier(tdx, clock=BEFORE_NEXT_UPDATE)
    with pytest.raises(VerificationError) as info:
        v.verify_quote(read(tdx, "quote-v4-fmspc-00a06d080000.dat"))
    assert info.value.reason == "collateral_signature"
    assert "cannot be checked" in str(info.value)


def test_ccel_ovmf_replays_to_the_stated_rtmrs(tdx: Path) -> None:
    events = parse_ccel(read(tdx, "CCEL_data_ovmf"))
    assert len(events) == 20
    rtmrs = [r.hex() for r in replay(events)]
    assert rtmrs[0].startswith("8566f998") and rtmrs[0].endswith("90abe193")
    assert rtmrs[1].startswith("775b9f6b") and rtmrs[1].endswith("210c13c6")
    assert rtmrs[2].startswith("94eaf7a7") and rtmrs[2].endswith("bf25f34a")
    assert rtmrs[3] == "00" * 48


def test_foreign_event_log_fails_the_rtmr_check(tdx: Path) -> None:
    v = verifier(tdx, accept_stale_collateral=True, accept_unverified_collateral=True)
    quote = read(tdx, "quote-v4-fmspc-00a06d080000.dat")
    evidence = json.dumps(
        {
            "cc_eventlog": base64.b64encode(read(tdx, "CCEL_data_ovmf")).decode(),
            "quote": base64.b64encode(quote).decode(),
        }
    ).encode()
    report_data = parse_quote(quote).body.report_data
    assert reason_of(lambda: v.evaluate(evidence, report_data)) == "rtmr_mismatch"


def flipped(data: bytes, offset: int) -> bytes:
    mutated = bytearray(data)
    mutated[offset] ^= 0x01
    return bytes(mutated)


def test_mutations_are_rejected_with_the_right_reason(tdx: Path) -> None:
    v = TdxVerifier(source=None, clock=lambda: CLOCK)
    quote = read(tdx, "quote-v4.dat")
    assert reason_of(lambda: v.verify_quote(flipped(quote, 48 + 136))) == "bad_signature"  # mr_td
    assert reason_of(lambda: v.verify_quote(flipped(quote, QE_REPORT_OFFSET + 64))) == "bad_signature"
    # A base64 character inside the PCK leaf's serial number: still a certificate, no longer Intel's.
    pem_start = quote.index(b"-----BEGIN CERTIFICATE-----\n") + len(b"-----BEGIN CERTIFICATE-----\n")
    mutated = bytearray(quote)
    mutated[pem_start + 30] = ord("B") if mutated[pem_start + 30] != ord("B") else ord("C")
    assert reason_of(lambda: v.verify_quote(bytes(mutated))) == "chain_invalid"


def test_quote_v4_claims_match_upstreams_rendering(tdx: Path) -> None:
    """Header and body as upstream's parse_tdx_claims_expected.json shows them for this quote."""
    rendered = quote_map(parse_quote(read(tdx, "quote-v4.dat")))
    assert rendered["header"] == {
        "att_key_type": "0200",
        "reserved": "00000000",
        "tee_type": "81000000",
        "user_data": "d099bfec0a477aa85a605dceabf2b10800000000",
        "vendor_id": "939a7233f79c4ca9940a0db3957f0607",
        "version": "0400",
    }
    body = rendered["body"]
    assert body["tcb_svn"] == "03000500000000000000000000000000"
    assert body["mr_seam"] == (
        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
    )
    assert body["rtmr_0"] == (
        "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288"
    )
    assert body["rtmr_1"] == (
        "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596"
    )
    assert (body["xfam"], body["td_attributes"], body["seam_attributes"]) == (
        "e742060000000000",
        "0100001000000000",
        "0000000000000000",
    )
    assert body["mr_td"] == QUOTE4_MR_TD and body["report_data"] == QUOTE4_REPORT_DATA
    assert td_attributes(bytes.fromhex(body["td_attributes"])) == {
        "debug": True,
        "key_locker": False,
        "perfmon": False,
        "protection_keys": False,
        "septve_disable": True,
    }
