"""Verifier options from the attestation service's configuration, per call through `api.evaluate`,
and through the KBS's configuration: required VMPL, report versions, debug refusal, DCAP collateral
source and freshness, a fixed clock. Unknown keys name the closest known one."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kbs.config import build_attestation_service
from kbs.config import parse_config as parse_kbs_config
from tests.verifier import sgx_builder, vectors_dir
from verifier import options
from verifier.api import VerifierRegistry
from verifier.errors import VerificationError
from verifier.server.config import ConfigError, parse_config

AT = {"at": "2026-01-01T00:00:00Z"}  # inside the real certificates' validity
GENOA_REPORT_DATA = bytes.fromhex(
    "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
    "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0"
)


def config_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(doc))
    return str(info.value)


def test_unknown_keys_are_errors_naming_the_closest_key() -> None:
    assert "sokcet: unknown key (did you mean 'socket'?)" in config_error({"sokcet": "127.0.0.1:1"})
    message = config_error({"verifier_config": {"snp_verifier": {"requried_vmpl": 1}}})
    assert (
        "verifier_config.snp_verifier.requried_vmpl: unknown key (did you mean 'required_vmpl'?)" in message
    )
    message = config_error({"attestation_token_broker": {"signer": {"keypath": "k"}}})
    assert "attestation_token_broker.signer.keypath: unknown key (did you mean 'key_path'?)" in message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"snp_verifier": {"required_vmpl": 4}}, "required_vmpl must be 0..3 or null"),
        ({"snp_verifier": {"required_vmpl": True}}, "required_vmpl must be 0..3 or null"),
        ({"snp_verifier": {"min_report_version": 6}}, "min_report_version must be an integer 2..5"),
        ({"snp_verifier": {"allow_debug": "no"}}, "allow_debug must be true or false"),
        ({"dcap_verifier": {"accept_stale_collateral": 1}}, "accept_stale_collateral must be true or false"),
        (
            {"dcap_verifier": {"collateral_refetch_after_s": -1}},
            "collateral_refetch_after_s must be 0 or more",
        ),
        ({"dcap_verifier": {"collateral_service": 3}}, "collateral_service must be a string"),
        ({"at": "yesterday"}, "is not an RFC 3339 time"),
    ],
)
def test_option_values_are_checked_when_the_configuration_loads(
    section: dict[str, Any], message: str
) -> None:
    assert message in config_error({"verifier_config": section})


def test_upstream_configuration_keys_are_accepted(tmp_path: Path) -> None:
    config = parse_config(
        json.dumps(
            {
                "storage_backend": {
                    "storage_type": "LocalFs",
                    "backends": {"local_fs": {"dir_path": str(tmp_path)}},
                },
                "rvps_config": {"type": "BuiltIn", "extractors": {"swid_extractor": {}}},
                "attestation_token_broker": {"type": "Ear", "duration_min": 5},
                "verifier_config": {
                    "dcap_verifier": {"collateral_service": "https://pccs.example/", "use_secure_cert": True},
                    "tpm_verifier": {"trusted_ak_keys_dir": "/etc/tpm/trusted_ak_keys"},
                    "snp_verifier": {"vcek_sources": [{"type": "KDS"}], "required_vmpl": 1},
                },
            }
        )
    )
    assert config.work_dir == tmp_path
    assert "Postgres" in config_error({"storage_backend": {"storage_type": "Postgres"}})


def test_option_readers_give_the_verifier_options() -> None:
    section = {
        "snp_verifier": {"required_vmpl": None, "min_report_version": 3, "allow_debug": False},
        "dcap_verifier": {
            "accept_stale_collateral": True,
            "collateral_refetch_after_s": 60,
            "allow_debug": False,
        },
    }
    assert options.snp_options(section) == {
        "required_vmpl": None,
        "min_report_version": 3,
        "allow_debug": False,
    }
    dcap = options.dcap_options(section)
    assert dcap["accept_stale_collateral"] and not dcap["allow_debug"] and dcap["refetch_after"].seconds == 60
    assert options.snp_options({}) == {} and options.dcap_options({}) == {}
    merged = options.merge({"snp_verifier": {"vcek_sources": []}}, {"snp_verifier": {"required_vmpl": 1}})
    assert merged == {"snp_verifier": {"vcek_sources": [], "required_vmpl": 1}}


def test_bad_per_call_options_are_typed_errors() -> None:
    registry = VerifierRegistry()
    for bad in ({"snp_verifier": {"vmpl": 1}}, {"snp_verifier": {"required_vmpl": "1"}}, {"at": 5}):
        with pytest.raises(VerificationError) as info:
            registry.evaluate("snp", b"{}", bytes(64), options=bad)
        assert info.value.reason == "invalid_options"


@pytest.mark.vectors
def test_required_vmpl_from_configuration_and_per_call() -> None:
    evidence = (vectors_dir("snp") / "genoa-evidence.json").read_bytes()  # a VMPL 0 report
    default = VerifierRegistry(AT)
    assert default.evaluate("snp", evidence, GENOA_REPORT_DATA)["report_data"] == GENOA_REPORT_DATA.hex()
    vlek_cloud = VerifierRegistry({**AT, "snp_verifier": {"required_vmpl": 1}})
    with pytest.raises(VerificationError, match="vmpl_mismatch: report VMPL is 0, expected 1"):
        vlek_cloud.evaluate("snp", evidence, GENOA_REPORT_DATA)
    with pytest.raises(VerificationError, match="vmpl_mismatch"):
        default.evaluate("snp", evidence, GENOA_REPORT_DATA, options={"snp_verifier": {"required_vmpl": 1}})
    any_vmpl = {"snp_verifier": {"required_vmpl": None}}
    vlek_cloud.evaluate("snp", evidence, GENOA_REPORT_DATA, options=any_vmpl)


@pytest.mark.vectors
def test_min_report_version_per_call(tmp_path: Path) -> None:
    snp = vectors_dir("snp")
    report = (snp / "milan-report-v2.bin").read_bytes()
    report_data = report[0x50:0x90]
    config = {**AT, "snp_verifier": {"vcek_sources": [{"type": "File", "path": str(snp / "milan-vcek.der")}]}}
    registry = VerifierRegistry(config)
    assert registry.evaluate("snp", report, report_data)["report_data"] == report_data.hex()
    with pytest.raises(VerificationError, match="unsupported_version"):
        registry.evaluate("snp", report, report_data, options={"snp_verifier": {"min_report_version": 3}})


@pytest.mark.vectors
def test_dcap_collateral_source_freshness_and_clock_from_options() -> None:
    tdx = vectors_dir("tdx")
    quote = (tdx / "quote-v4-fmspc-00a06d080000.dat").read_bytes()
    evidence = json.dumps({"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}).encode()
    report_data = quote[568:632]
    offline = {
        **AT,
        "dcap_verifier": {"collateral_service": f"dir://{tdx}", "accept_unverified_collateral": True},
    }
    registry = VerifierRegistry(offline)
    with pytest.raises(VerificationError, match="collateral_stale"):  # nextUpdate 2025-11-26 has passed
        registry.evaluate("tdx", evidence, report_data)
    stale_ok = {"dcap_verifier": {"accept_stale_collateral": True}}
    claims = registry.evaluate("tdx", evidence, report_data, options=stale_ok)
    assert claims["collateral_expiration_status"] == "1"
    before = {"at": "2025-11-01T00:00:00Z"}  # before nextUpdate: fresh, whatever the real clock says
    assert (
        registry.evaluate("tdx", evidence, report_data, options=before)["collateral_expiration_status"] == "0"
    )


@pytest.mark.vectors
def test_kbs_configuration_passes_the_options_through(tmp_path: Path) -> None:
    evidence = (vectors_dir("snp") / "genoa-evidence.json").read_bytes()
    toml = f"""
[http_server]
insecure_http = true

[attestation_service]
type = "coco_as_builtin"

[attestation_service.verifier_config]
at = "{AT["at"]}"

[attestation_service.verifier_config.snp_verifier]
required_vmpl = 1
"""
    service = build_attestation_service(parse_kbs_config(toml))
    with pytest.raises(VerificationError, match="vmpl_mismatch"):
        service.verifiers.evaluate("snp", evidence, GENOA_REPORT_DATA)


@pytest.mark.vectors
def test_debug_refusal_per_call_on_the_real_debug_enclave(tmp_path: Path) -> None:
    """The real SGX quote (a debug enclave) with made-up, unsigned collateral for its platform
    served from a folder: accepted and reported as debug, then refused when a call says so."""
    made_up = sgx_builder.made_up_collateral(
        fmspc=bytes.fromhex("00606a000000"), sgx_svns=(4, 4, 3, 3), pce_svn=11
    )
    (tmp_path / "tcbInfo.json").write_bytes(made_up.tcb_info)
    (tmp_path / "enclaveIdentity.json").write_bytes(made_up.qe_identity)
    quote = (vectors_dir("sgx") / "occlum-quote-v3.dat").read_bytes()
    evidence = json.dumps({"quote": base64.b64encode(quote).decode()}).encode()
    config = {
        "at": "2026-03-01T12:00:00Z",  # inside the made-up collateral's and the PCK chain's validity
        "dcap_verifier": {"collateral_service": f"dir://{tmp_path}", "accept_unverified_collateral": True},
    }
    registry = VerifierRegistry(config)
    claims = registry.evaluate("sgx", evidence, b"test")
    assert claims["body"]["attributes.flags"] == "0700000000000000"
    assert claims["collateral_signature_verified"] is False
    with pytest.raises(VerificationError, match="debug_not_allowed"):
        registry.evaluate("sgx", evidence, b"test", options={"dcap_verifier": {"allow_debug": False}})
