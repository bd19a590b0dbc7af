"""az-snp-vtpm against real Azure SEV-SNP CVM evidence (../shared/vectors/az-snp-vtpm; skipped when absent).

Expected values are the ones the vectors README states; the mutations are the ones it lists.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.verifier import vectors_dir
from verifier.az_snp_vtpm import AzSnpVtpmVerifier
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.vtpm.hcl import parse_hcl_report
from verifier.vtpm.quote import TpmQuote, check_init_data, check_quote, init_data_pcr_value
from verifier.vtpm.vardata import check_user_data, parse_var_data

pytestmark = pytest.mark.vectors

CLOCK = datetime(2026, 1, 1, tzinfo=UTC)  # inside the real VCEK's validity (2023-05-02..2030-05-02)
CHALLENGE = b"challenge"
V2_NONCE = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"
)
PCR0_V0_V1 = "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
PCR0_V2 = "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7"
VERIFIER = AzSnpVtpmVerifier(SnpVerifier(vcek_sources=[], clock=lambda: CLOCK))


@pytest.fixture(scope="module")
def az() -> Path:
    return vectors_dir("az-snp-vtpm")


def reason_of(evidence: bytes, nonce: bytes = CHALLENGE, init_data: bytes | None = None) -> str:
    with pytest.raises(VerificationError) as caught:
        VERIFIER.evaluate(evidence, nonce, init_data)
    return caught.value.reason


@pytest.mark.parametrize(
    ("name", "nonce", "pcr0"),
    [
        ("evidence-v0.json", CHALLENGE, PCR0_V0_V1),
        ("evidence-v1.json", CHALLENGE, PCR0_V0_V1),
        ("evidence-v2.json", V2_NONCE, PCR0_V2),
    ],
)
def test_real_evidence_verifies(az: Path, name: str, nonce: bytes, pcr0: str) -> None:
    claims = VERIFIER.evaluate((az / name).read_bytes(), nonce)
    assert claims["report_data"] == nonce.hex()
    assert claims["tpm"]["pcr00"] == pcr0
    assert len(claims["tpm"]) == 24
    assert claims["init_data"] == bytes(32).hex()  # PCR8
    tcb = [claims[f"reported_tcb_{part}"] for part in ("bootloader", "tee", "snp", "microcode")]
    assert tcb == ["4", "0", "24", "219"]
    measurement = base64.b64decode(claims["measurement"]).hex()
    assert measurement.startswith("5b0ce64a" if name.endswith("v2.json") else "6a063be9")


def test_v2_user_data_must_carry_the_report_data(az: Path) -> None:
    evidence = (az / "evidence-v2.json").read_bytes()
    # The quote's nonce is checked first: a wrong expected value never reaches the user-data.
    assert reason_of(evidence, nonce=bytes.fromhex("123abc")) == "nonce_mismatch"
    hcl = parse_hcl_report(base64.urlsafe_b64decode(json.loads(evidence)["hcl_report"]))
    var_data = parse_var_data(hcl.var_data)
    assert var_data.user_data() == V2_NONCE + bytes(16)
    check_user_data(var_data, V2_NONCE)
    with pytest.raises(VerificationError) as caught:
        check_user_data(var_data, bytes.fromhex("123abc"))
    assert caught.value.reason == "user_data_mismatch"


def test_real_evidence_with_another_init_data_is_rejected(az: Path) -> None:
    evidence = (az / "evidence-v1.json").read_bytes()
    assert reason_of(evidence, init_data=hashlib.sha256(b"init").digest()) == "init_data_mismatch"


# ---- hcl-report.bin + tpm-quote-v1.json + vcek.pem: the parts, and the README's mutations


@pytest.fixture(scope="module")
def parts(az: Path) -> dict[str, Any]:
    quote = json.loads((az / "tpm-quote-v1.json").read_text())
    return {
        "version": 1,
        "tpm_quote": quote,
        "hcl_report": base64.urlsafe_b64encode((az / "hcl-report.bin").read_bytes()).decode(),
        "vcek": _first_der(az / "vcek.pem"),
    }


def _first_der(pem: Path) -> str:
    body = pem.read_text().split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.urlsafe_b64encode(base64.b64decode("".join(body.split()))).decode()


def _evidence(parts: dict[str, Any], hcl: bytes | None = None, **quote: Any) -> bytes:
    doc = dict(parts)
    doc["tpm_quote"] = {**parts["tpm_quote"], **quote}
    if hcl is not None:
        doc["hcl_report"] = base64.urlsafe_b64encode(hcl).decode()
    return json.dumps(doc).encode()


def _hcl_with(az: Path, offset: int, value: int) -> bytes:
    hcl = bytearray((az / "hcl-report.bin").read_bytes())
    hcl[offset] = value
    return bytes(hcl)


def test_the_parts_verify_together(parts: dict[str, Any]) -> None:
    claims = VERIFIER.evaluate(_evidence(parts), CHALLENGE)
    assert claims["report_data"] == CHALLENGE.hex()
    assert base64.b64decode(claims["measurement"]).hex().startswith("9ac48fca")


def test_hcl_report_parts(az: Path) -> None:
    hcl = parse_hcl_report((az / "hcl-report.bin").read_bytes())
    assert hcl.var_data_sha256.hex().startswith("b3fbad65")
    assert hcl.var_data_sha256.hex().endswith("556bafac")
    assert hcl.hw_report[:4] == (2).to_bytes(4, "little")  # SNP report version 2


def test_corrupted_variable_data_fails_its_digest(az: Path, parts: dict[str, Any]) -> None:
    hcl = (az / "hcl-report.bin").read_bytes()
    assert reason_of(_evidence(parts, _hcl_with(az, 0x6E0, hcl[0x6E0] + 1))) == "var_data_mismatch"


def test_corrupted_ak_fails(az: Path, parts: dict[str, Any]) -> None:
    assert reason_of(_evidence(parts, _hcl_with(az, 0x540, ord('"')))) == "malformed_evidence"
    assert reason_of(_evidence(parts, _hcl_with(az, 0x540, ord("A")))) == "bad_quote_signature"


def test_reported_tcb_changed_fails_the_vcek_binding(az: Path, parts: dict[str, Any]) -> None:
    assert reason_of(_evidence(parts, _hcl_with(az, 0x1A6, 0))) == "tcb_mismatch"


def test_quote_signature_bit_flip_fails(parts: dict[str, Any]) -> None:
    signature = bytearray(bytes.fromhex(parts["tpm_quote"]["signature"]))
    signature[0] ^= 0x01
    assert reason_of(_evidence(parts, signature=signature.hex())) == "bad_quote_signature"


def test_reversed_nonce_fails(parts: dict[str, Any]) -> None:
    assert reason_of(_evidence(parts), nonce=CHALLENGE[::-1]) == "nonce_mismatch"


def test_pcr0_bit_flip_fails(parts: dict[str, Any]) -> None:
    pcrs = list(parts["tpm_quote"]["pcrs"])
    pcrs[0] = (int(pcrs[0], 16) ^ 1).to_bytes(32, "big").hex()
    assert reason_of(_evidence(parts, pcrs=pcrs)) == "pcr_digest_mismatch"


def test_quote_checks_on_their_own(az: Path, parts: dict[str, Any]) -> None:
    hcl = parse_hcl_report((az / "hcl-report.bin").read_bytes())
    raw = parts["tpm_quote"]
    quote = TpmQuote(
        bytes.fromhex(raw["signature"]),
        bytes.fromhex(raw["message"]),
        tuple(bytes.fromhex(p) for p in raw["pcrs"]),
    )
    checked = check_quote(quote, parse_var_data(hcl.var_data).ak_public_key(), CHALLENGE)
    assert sorted(checked.pcrs) == list(range(24))
    with pytest.raises(VerificationError) as caught:
        check_quote(
            replace(quote, message=quote.message[:-1] + b"\0"),
            parse_var_data(hcl.var_data).ak_public_key(),
            CHALLENGE,
        )
    assert caught.value.reason == "bad_quote_signature"


def test_upstream_init_data_pcr8_vector() -> None:
    digest = bytes.fromhex("8505e4e25e50a27c5dc8147af88efbece627fbea55291911eff832d9ee127781")
    pcr8 = bytes.fromhex("bddaccb9c52249e97a31baea61b7d91be8221a16e703d92148d04fb8e9c1dfdd")
    assert init_data_pcr_value(digest) == pcr8
    check_init_data({8: pcr8}, digest)
    with pytest.raises(VerificationError) as caught:
        check_init_data({8: pcr8}, bytes([digest[0] ^ 1]) + digest[1:])
    assert caught.value.reason == "init_data_mismatch"
