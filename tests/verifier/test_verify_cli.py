"""`attestation-service verify` on every file of ../shared/vectors: evidence verifies to the vectors
README's values (or stops with the reason the README gives), collateral and certificates serve as
`--collateral`, parts and roots given as evidence are refused with a typed reason, and a tampered
file gives its reason with exit status 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.verifier import vectors_dir
from verifier.server import cli

pytestmark = pytest.mark.vectors

AT = "2026-01-01T00:00:00Z"  # inside every real certificate's validity
MILAN_REPORT_DATA = "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2" + "00" * 32
GENOA_REPORT_DATA = (
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)
CHALLENGE = b"challenge".hex()
V2_NONCE = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"
TD_QUOTE_00A06D_REPORT_DATA = (
    "26cae1c77185617fb6a03fc29bf1f924596e52352b9b7594940b576ae126cd4a570cc3202a900c5d19a6eb0a95b32cfd"
    + "00" * 16
)
AZ_TD_QUOTE_REPORT_DATA = "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839" + "00" * 32
STALE_AND_UNSIGNED = [
    "--option",
    "dcap_verifier.accept_stale_collateral=true",
    "--option",
    "dcap_verifier.accept_unverified_collateral=true",
]


@pytest.fixture(scope="module")
def vectors() -> Path:
    return vectors_dir("snp").parent


def verify(
    capsys: pytest.CaptureFixture[str], vectors: Path, tee: str, evidence: str, *args: str
) -> tuple[int, Any]:
    argv = ["verify", "--tee", tee, "--evidence", str(vectors / evidence), "--at", AT]
    argv += [str(vectors / a) if a[:1].isalpha() and (vectors / a).exists() else a for a in args]
    status = cli.main(argv)
    return status, json.loads(capsys.readouterr().out)


def error_reason(result: Any) -> str:
    reason: str = result["error"]["reason"]
    return reason


# (tee, evidence, arguments, (exit status, claim path -> value or error reason))
CASES: dict[str, tuple[str, str, tuple[str, ...], Any]] = {
    "milan-report-v2.bin": (
        "snp",
        "snp/milan-report-v2.bin",
        ("--report-data", MILAN_REPORT_DATA, "--collateral", "snp/milan-vcek.der"),
        {
            "measurement": "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
            "23500644e0e692e6be917f9050d3d38c",
            "reported_tcb_microcode": 115,
            "chip_id": "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f"
            "8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e",
        },
    ),
    "genoa-evidence.json": (
        "snp",
        "snp/genoa-evidence.json",
        ("--report-data", GENOA_REPORT_DATA, "--collateral", "snp"),
        {
            "measurement": "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4"
            "ae62a36d75c837974dd50b315506e73e",
            "reported_tcb_snp": 23,
        },
    ),
    "evidence-v0.json": (
        "az-snp-vtpm",
        "az-snp-vtpm/evidence-v0.json",
        ("--report-data", CHALLENGE),
        {"tpm.pcr00": "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"},
    ),
    "evidence-v1.json": (
        "az-snp-vtpm",
        "az-snp-vtpm/evidence-v1.json",
        ("--report-data", CHALLENGE, "--collateral", "az-snp-vtpm/vcek.pem"),
        {"tpm.pcr00": "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"},
    ),
    "evidence-v2.json": (
        "az-snp-vtpm",
        "az-snp-vtpm/evidence-v2.json",
        ("--report-data", V2_NONCE),
        {"tpm.pcr00": "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7"},
    ),
    "az-tdx evidence-v1.json": (
        "az-tdx-vtpm",
        "az-tdx-vtpm/evidence-v1.json",
        ("--report-data", CHALLENGE, "--collateral", "tdx"),
        "collateral_unavailable",  # its FMSPC has no collateral in the vectors (README)
    ),
    "td-quote.bin": (
        "tdx",
        "az-tdx-vtpm/td-quote.bin",
        ("--report-data", AZ_TD_QUOTE_REPORT_DATA, "--collateral", "tdx"),
        "collateral_unavailable",
    ),
    "quote-v4-fmspc-00a06d080000.dat": (
        "tdx",
        "tdx/quote-v4-fmspc-00a06d080000.dat",
        ("--report-data", TD_QUOTE_00A06D_REPORT_DATA, "--collateral", "tdx", *STALE_AND_UNSIGNED),
        {"collateral_expiration_status": "1", "collateral_signature_verified": False},
    ),
    "quote-v4.dat": (
        "tdx",
        "tdx/quote-v4.dat",
        (
            "--report-data",
            "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656ae"
            "b755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429",
            "--collateral",
            "tdx",
        ),
        "collateral_unavailable",  # FMSPC 50806f000000: no collateral in the vectors
    ),
    "occlum-quote-v3.dat": (
        "sgx",
        "sgx/occlum-quote-v3.dat",
        ("--report-data", b"test".hex(), "--collateral", "sgx"),
        "collateral_unavailable",  # README: no TCB info or QE identity for its FMSPC
    ),
    "fabricated-vcek-legacy-hwid.der": (
        "snp",
        "snp/milan-report-v2.bin",
        ("--report-data", MILAN_REPORT_DATA, "--collateral", "snp/fabricated-vcek-legacy-hwid.der"),
        "chain_invalid",
    ),
    "fabricated-vcek-new-hwid.der": (
        "snp",
        "snp/milan-report-v2.bin",
        ("--report-data", MILAN_REPORT_DATA, "--collateral", "snp/fabricated-vcek-new-hwid.der"),
        "chain_invalid",
    ),
    # Parts of evidence and trust anchors are not evidence: refused with a typed reason.
    "az-snp hcl-report.bin": (
        "az-snp-vtpm",
        "az-snp-vtpm/hcl-report.bin",
        ("--report-data", CHALLENGE),
        "malformed_evidence",
    ),
    "az-snp tpm-quote-v1.json": (
        "az-snp-vtpm",
        "az-snp-vtpm/tpm-quote-v1.json",
        ("--report-data", CHALLENGE),
        "malformed_evidence",
    ),
    "az-tdx hcl-report.bin": (
        "az-tdx-vtpm",
        "az-tdx-vtpm/hcl-report.bin",
        ("--report-data", CHALLENGE),
        "malformed_evidence",
    ),
    "az-tdx tpm-quote-v1.json": (
        "az-tdx-vtpm",
        "az-tdx-vtpm/tpm-quote-v1.json",
        ("--report-data", CHALLENGE),
        "malformed_evidence",
    ),
    "CCEL_data_ovmf": ("tdx", "tdx/CCEL_data_ovmf", ("--report-data", "00"), "unsupported_version"),
    "tcbInfo.json": ("tdx", "tdx/tcbInfo.json", ("--report-data", "00"), "malformed_evidence"),
    "enclaveIdentity.json": (
        "tdx",
        "tdx/enclaveIdentity.json",
        ("--report-data", "00"),
        "malformed_evidence",
    ),
    "milan_ask_ark_asvk.pem": (
        "snp",
        "snp/milan_ask_ark_asvk.pem",
        ("--report-data", "00"),
        "malformed_evidence",
    ),
    "genoa_ask_ark_asvk.pem": (
        "snp",
        "snp/genoa_ask_ark_asvk.pem",
        ("--report-data", "00"),
        "malformed_evidence",
    ),
    "turin_ask_ark_asvk.pem": (
        "snp",
        "snp/turin_ask_ark_asvk.pem",
        ("--report-data", "00"),
        "malformed_evidence",
    ),
}


def test_every_vector_file_has_a_case(vectors: Path) -> None:
    files = {
        p.relative_to(vectors).as_posix() for p in vectors.rglob("*") if p.is_file() and p.name != "README.md"
    }
    used = {a for _, evidence, args, _ in CASES.values() for a in (evidence, *args) if "/" in a}
    used |= {f"{d}/{f}" for d, f in (("tdx", "tcbInfo.json"), ("tdx", "enclaveIdentity.json"))}
    assert files <= used, f"vector files without a CLI case: {sorted(files - used)}"


@pytest.mark.parametrize("case", list(CASES))
def test_cli_on_the_vectors(capsys: pytest.CaptureFixture[str], vectors: Path, case: str) -> None:
    tee, evidence, args, expected = CASES[case]
    status, result = verify(capsys, vectors, tee, evidence, *args)
    if isinstance(expected, str):
        assert (status, error_reason(result)) == (1, expected), result
        return
    assert status == 0, result
    claims = result["claims"]
    for path, value in expected.items():
        found = claims
        for part in path.split("."):
            found = found[part]
        assert found == value, path
    assert result["appraisal"]["ear.status"] in ("affirming", "warning", "contraindicated")


def test_options_and_policy(capsys: pytest.CaptureFixture[str], vectors: Path, tmp_path: Path) -> None:
    args = ("--report-data", MILAN_REPORT_DATA, "--collateral", "snp/milan-vcek.der")
    status, result = verify(
        capsys,
        vectors,
        "snp",
        "snp/milan-report-v2.bin",
        *args,
        "--option",
        "snp_verifier.min_report_version=3",
    )
    assert (status, error_reason(result)) == (1, "unsupported_version")
    policy = tmp_path / "policy.rego"
    policy.write_text(
        'package policy\nimport rego.v1\ntrust_claims := {"hardware": 2} if input.snp.reported_tcb_snp == 8\n'
    )
    status, result = verify(capsys, vectors, "snp", "snp/milan-report-v2.bin", *args, "--policy", str(policy))
    assert status == 0
    assert result["appraisal"]["ear.trustworthiness-vector"] == {"hardware": 2}
    assert result["appraisal"]["ear.appraisal-policy-id"] == "verify"


def test_tampered_file_gives_its_reason_and_exit_status_1(vectors: Path, tmp_path: Path) -> None:
    report = bytearray((vectors / "snp/milan-report-v2.bin").read_bytes())
    report[42] ^= 1
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(report))
    argv = ["verify", "--tee", "snp", "--evidence", str(tampered), "--report-data", MILAN_REPORT_DATA]
    argv += ["--collateral", str(vectors / "snp/milan-vcek.der"), "--at", AT]
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from verifier.server.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["error"]["reason"] == "bad_signature"


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], vectors: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["verify", "--tee", "snp", "--evidence", "x", "--report-data", "zz"])
    assert info.value.code == 2
    assert (
        cli.main(["verify", "--tee", "snp", "--evidence", str(tmp_path / "none"), "--report-data", "00"]) == 2
    )
    assert "cannot read" in capsys.readouterr().err
