"""az-tdx-vtpm against real Azure TDX CVM evidence (../shared/vectors/az-tdx-vtpm; skipped when absent).

What the vectors allow: the whole vTPM half (AK signature, nonce, PCR digest, variable data bound
to the TD quote, init data) and the TD quote up to its collateral (PCK chain to Intel's pinned root,
QE report signature and its binding to the attestation key, quote signature). What they do not:
the TCB level of the platform, since no TCB info / QE identity for FMSPC 00806f050000 is among them
(upstream's own evaluate tests for this evidence are `#[ignore]`d for the same reason). So the
full evaluation is expected to stop exactly at `collateral_unavailable` for that FMSPC.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.verifier import vectors_dir
from verifier.az_tdx_vtpm import AzTdxVtpmVerifier, parse_evidence
from verifier.errors import VerificationError
from verifier.tdx import TdxVerifier
from verifier.tdx.quote import parse_quote
from verifier.vtpm.azure import add_tpm_claims, check_vtpm
from verifier.vtpm.hcl import parse_hcl_report

pytestmark = pytest.mark.vectors

CLOCK = datetime(2026, 1, 1, tzinfo=UTC)  # inside the real PCK chain's validity (PCK: 2023-09-13..2030-09-13)
CHALLENGE = b"challenge"
PCR0 = "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273"
MR_TD = "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b"
VERIFIER = AzTdxVtpmVerifier(TdxVerifier(source=None, clock=lambda: CLOCK))


@pytest.fixture(scope="module")
def az() -> Path:
    return vectors_dir("az-tdx-vtpm")


def reason_of(evidence: bytes, nonce: bytes = CHALLENGE) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        VERIFIER.evaluate(evidence, nonce)
    return caught.value


def test_real_evidence_vtpm_half_verifies(az: Path) -> None:
    parts, td_quote = parse_evidence((az / "evidence-v1.json").read_bytes())
    assert td_quote == (az / "td-quote.bin").read_bytes()
    assert parts.hcl.raw == (az / "hcl-report.bin").read_bytes()
    checked = check_vtpm(parts, CHALLENGE, parse_quote(td_quote).body.report_data, "the TD quote's")
    claims = add_tpm_claims({}, checked)
    assert claims["report_data"] == CHALLENGE.hex()
    assert claims["tpm"]["pcr00"] == PCR0
    assert len(claims["tpm"]) == 24


def test_real_evidence_stops_only_for_want_of_collateral(az: Path) -> None:
    error = reason_of((az / "evidence-v1.json").read_bytes())
    # Every check before the collateral lookup passed: the TD quote's signatures and PCK chain too.
    assert error.reason == "collateral_unavailable"
    assert "00806f050000" in str(error)


def _evidence_with(az: Path, *, td_quote: bytes | None = None, hcl: bytes | None = None) -> bytes:
    doc: dict[str, Any] = json.loads((az / "evidence-v1.json").read_text())
    if td_quote is not None:
        doc["td_quote"] = base64.urlsafe_b64encode(td_quote).decode()
    if hcl is not None:
        doc["hcl_report"] = base64.urlsafe_b64encode(hcl).decode()
    return json.dumps(doc).encode()


def _flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_td_quote_signature_really_ran(az: Path) -> None:
    quote = (az / "td-quote.bin").read_bytes()
    # mr_td (inside the signed body) and the QE report (signed by the PCK): signatures, not collateral, fail.
    assert reason_of(_evidence_with(az, td_quote=_flipped(quote, 48 + 136))).reason == "bad_signature"
    qe_report = 48 + 584 + 4 + 128 + 6
    assert reason_of(_evidence_with(az, td_quote=_flipped(quote, qe_report))).reason == "bad_signature"


def test_td_quote_values(az: Path) -> None:
    body = parse_quote((az / "td-quote.bin").read_bytes()).body
    assert body.mr_td.hex() == MR_TD
    assert body.td_attributes == bytes(8)


def test_variable_data_is_bound_to_the_td_quote(az: Path) -> None:
    hcl = parse_hcl_report((az / "hcl-report.bin").read_bytes())
    report_data = parse_quote((az / "td-quote.bin").read_bytes()).body.report_data
    assert hcl.var_data_sha256.hex().startswith("9734504f")
    assert hcl.var_data_sha256 == report_data[:32]
    corrupted = bytearray(hcl.raw)
    corrupted[0x880] += 1
    assert reason_of(_evidence_with(az, hcl=bytes(corrupted))).reason == "var_data_mismatch"


@pytest.fixture(scope="module")
def parts(az: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "tpm_quote": json.loads((az / "tpm-quote-v1.json").read_text()),
        "hcl_report": base64.urlsafe_b64encode((az / "hcl-report.bin").read_bytes()).decode(),
        "td_quote": base64.urlsafe_b64encode((az / "td-quote.bin").read_bytes()).decode(),
    }


def _with_quote(parts: dict[str, Any], **quote: Any) -> bytes:
    return json.dumps({**parts, "tpm_quote": {**parts["tpm_quote"], **quote}}).encode()


def test_tpm_quote_part_and_its_mutations(parts: dict[str, Any]) -> None:
    assert reason_of(_with_quote(parts)).reason == "collateral_unavailable"  # the vTPM half holds
    signature = bytearray(bytes.fromhex(parts["tpm_quote"]["signature"]))
    signature[5] ^= 0x04
    assert reason_of(_with_quote(parts, signature=signature.hex())).reason == "bad_quote_signature"
    assert reason_of(_with_quote(parts), nonce=CHALLENGE[::-1]).reason == "nonce_mismatch"
    pcrs = list(parts["tpm_quote"]["pcrs"])
    pcrs[0] = (int(pcrs[0], 16) ^ 1).to_bytes(32, "big").hex()
    assert reason_of(_with_quote(parts, pcrs=pcrs)).reason == "pcr_digest_mismatch"
