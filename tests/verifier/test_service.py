"""The in-process attestation service with the sample TEE: bindings, claims layout, policy, token."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization

from verifier.api import TeeSpec, VerifierRegistry, import_verifier
from verifier.binding import (
    BindingError,
    InitDataDigest,
    InitDataToml,
    RawRuntimeData,
    StructuredRuntimeData,
    canonical_json,
    expected_init_data,
    expected_report_data,
)
from verifier.ear import TokenSettings
from verifier.errors import VerificationError
from verifier.policy import PolicyError
from verifier.rvps import ReferenceValueStore
from verifier.service import AttestationService, RequestError, ServiceSettings, VerificationRequest

RUNTIME = {"nonce": "bm9uY2U", "tee-pubkey": {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}}
ALLOW_SAMPLE = """package policy
import rego.v1
default hardware := 97
default executables := 33
hardware := 2 if input.sample.svn in query_reference_value("svn")
executables := 3 if input.sample.launch_digest in query_reference_value("launch_digest")
trust_claims := {"hardware": hardware, "executables": executables}
"""
INITDATA = """version = "0.1.0"
algorithm = "sha384"

[data]
"cdh.toml" = '''
[kbc]
name = "cc_kbc"
url = "http://127.0.0.1:8080"
'''
"policy.rego" = '''
package agent_policy
default CreateContainerRequest := false
policy_data := {
  "containers": [{"OCI": {
    "Annotations": {"io.kubernetes.cri.image-name": "nginx"}, "Process": {"User": {"UID": 101}}
  }}]
}
'''
"""


def sample_evidence(report_data: bytes, svn: str = "1") -> bytes:
    return json.dumps({"svn": svn, "report_data": base64.b64encode(report_data).decode()}).encode()


def bound_evidence(runtime: Any = RUNTIME, algorithm: str = "sha384") -> bytes:
    return sample_evidence(hashlib.new(algorithm, canonical_json(runtime)).digest())


def claims_of(service: AttestationService, token: str) -> dict[str, Any]:
    decoded = jwt.decode(
        token, KeySet.import_key_set(cast(KeySetSerialization, service.jwks())), algorithms=["ES256"]
    )
    return dict(decoded.claims)


def register(service: AttestationService, values: dict[str, Any]) -> None:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    service.register_reference_value(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))


@pytest.fixture
def service() -> AttestationService:
    return AttestationService()


def test_upstream_structured_runtime_data_vector() -> None:
    digest, claims = expected_report_data(StructuredRuntimeData({"b": 1, "a": "test", "c": {"d": "e"}}))
    assert digest.hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    )
    assert claims == {"b": 1, "a": "test", "c": {"d": "e"}}


def test_default_policy_token_for_sample_is_contraindicated(service: AttestationService) -> None:
    register(
        service, {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1}
    )
    token = service.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME))
    claims = claims_of(service, token)
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "contraindicated"
    assert cpu0["ear.appraisal-policy-id"] == "default"
    evidence = cpu0["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"] == RUNTIME
    assert evidence["report_data"] == json.loads(bound_evidence())["report_data"]
    assert evidence["sample"]["launch_digest"] == "abcde"
    assert "report_data" not in evidence["sample"]
    assert "init_data" not in evidence
    assert cpu0["ear.trustee.identifiers"] == {"validated": {}}
    assert claims["exp"] - claims["iat"] == 300


def test_policy_that_accepts_sample_gives_affirming(service: AttestationService) -> None:
    register(service, {"svn": ["1"], "launch_digest": ["abcde"]})
    service.set_policy("demo_cpu", ALLOW_SAMPLE)
    token = service.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME), policy_ids=["demo"])
    cpu0 = claims_of(service, token)["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"] == {"executables": 3, "hardware": 2}
    assert cpu0["ear.appraisal-policy-id"] == "demo"
    assert "ear.trustee.identifiers" not in cpu0  # this policy has no extensions


def test_replicas_sharing_storage_appraise_with_each_others_policies_and_values(tmp_path: Path) -> None:
    """Two services on one policy directory and reference value file (KBS replicas): what is set
    through one, while both run, is what the other appraises with."""
    first, second = (
        AttestationService(rvps=ReferenceValueStore(tmp_path / "rv.json"), policy_dir=tmp_path / "policies")
        for _ in range(2)
    )

    def status() -> str:
        token = second.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME), policy_ids=["demo"])
        return str(claims_of(second, token)["submods"]["cpu0"]["ear.status"])

    first.set_policy("demo_cpu", ALLOW_SAMPLE)
    assert status() == "contraindicated"  # no reference values yet
    register(first, {"svn": ["1"], "launch_digest": ["abcde"]})
    assert status() == "affirming"
    register(first, {"launch_digest": ["other"]})
    assert status() == "warning"  # executables no longer match: 33


def test_expired_or_missing_reference_values_do_not_count(service: AttestationService) -> None:
    service.set_policy("demo_cpu", ALLOW_SAMPLE)
    token = service.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME), policy_ids=["demo"])
    assert claims_of(service, token)["submods"]["cpu0"]["ear.status"] == "contraindicated"


def test_init_data_toml_is_bound_and_shown(service: AttestationService) -> None:
    digest = hashlib.sha384(INITDATA.encode()).digest()
    token = service.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME), InitDataToml(INITDATA))
    cpu0 = claims_of(service, token)["submods"]["cpu0"]
    evidence = cpu0["ear.veraison.annotated-evidence"]
    assert evidence["init_data"] == base64.b64encode(digest).decode()  # the sample TEE shows base64
    assert evidence["init_data_claims"]["cdh.toml"] == {
        "kbc": {"name": "cc_kbc", "url": "http://127.0.0.1:8080"}
    }
    assert "policy.rego" not in evidence["init_data_claims"]
    containers = evidence["init_data_claims"]["agent_policy_claims"]["containers"]
    assert containers[0]["OCI"]["Process"]["User"]["UID"] == 101
    assert cpu0["ear.trustee.identifiers"] == {
        "validated": {"container_images": ["nginx"], "container_uids": [101]}
    }


def test_init_data_digest_passes_through(service: AttestationService) -> None:
    token = service.attest(
        "sample", bound_evidence(), StructuredRuntimeData(RUNTIME), InitDataDigest(b"\x01" * 32)
    )
    evidence = claims_of(service, token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["init_data"] == base64.b64encode(b"\x01" * 32).decode()
    assert evidence["init_data_claims"] is None


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_runtime_data_hash_algorithms(service: AttestationService, algorithm: str) -> None:
    evidence = bound_evidence(algorithm=algorithm)
    service.attest("sample", evidence, StructuredRuntimeData(RUNTIME), runtime_data_hash_algorithm=algorithm)
    with pytest.raises(RequestError, match="not one of sha256, sha384, sha512"):
        service.attest("sample", evidence, StructuredRuntimeData(RUNTIME), runtime_data_hash_algorithm="md5")


def test_raw_runtime_data_is_compared_as_is(service: AttestationService) -> None:
    token = service.attest("sample", sample_evidence(b"exact bytes"), RawRuntimeData(b"exact bytes"))
    evidence = claims_of(service, token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"] is None


def test_wrong_report_data_is_rejected(service: AttestationService) -> None:
    with pytest.raises(VerificationError) as info:
        service.attest("sample", bound_evidence(), StructuredRuntimeData({**RUNTIME, "nonce": "other"}))
    assert info.value.reason == "report_data_mismatch"


def test_runtime_data_is_required(service: AttestationService) -> None:
    with pytest.raises(RequestError, match="runtime data is required"):
        service.evaluate([VerificationRequest("sample", bound_evidence(), None)])
    with pytest.raises(RequestError, match="no verification requests"):
        service.evaluate([])


def test_unknown_and_unavailable_tees() -> None:
    with pytest.raises(VerificationError) as info:
        AttestationService().attest("sev", b"{}", RawRuntimeData(b""))
    assert info.value.reason == "unsupported_tee"
    registry = VerifierRegistry(
        tees={
            "future": TeeSpec(lambda config: import_verifier("verifier.not_written_yet", "FutureVerifier")())
        }
    )
    with pytest.raises(VerificationError) as info:
        AttestationService(verifiers=registry).attest("future", b"{}", RawRuntimeData(b""))
    assert info.value.reason == "verifier_unavailable"
    assert "not available in this build" in str(info.value)


def test_missing_policy_and_bad_policy_results(service: AttestationService) -> None:
    args = ("sample", bound_evidence(), StructuredRuntimeData(RUNTIME))
    with pytest.raises(PolicyError, match="'nope_cpu' not found"):
        service.attest(*args, policy_ids=["nope"])
    service.set_policy("bad_cpu", 'package policy\nimport rego.v1\ntrust_claims := {"hardware": "2"}\n')
    with pytest.raises(PolicyError, match="'hardware' must be an integer"):
        service.attest(*args, policy_ids=["bad"])
    service.set_policy("empty_cpu", "package policy\nimport rego.v1\ntrust_claims := {}\n")
    with pytest.raises(PolicyError, match="at least one trust claim"):
        service.attest(*args, policy_ids=["empty"])
    service.set_policy("silent_cpu", "package policy\nimport rego.v1\nother := 1\n")
    token = service.attest(*args, policy_ids=["silent"])  # no trust_claims: every claim 0, as upstream
    cpu0 = claims_of(service, token)["submods"]["cpu0"]
    assert cpu0["ear.status"] == "none"
    assert set(cpu0["ear.trustworthiness-vector"].values()) == {0}


def test_several_attesters_get_numbered_submods(service: AttestationService) -> None:
    request = VerificationRequest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME))
    claims = claims_of(service, service.evaluate([request, request]))
    assert sorted(claims["submods"]) == ["cpu0", "cpu1"]


def test_non_verbose_token_drops_additional_evidence() -> None:
    runtime = {**RUNTIME, "additional-evidence": "{}"}
    quiet = AttestationService(settings=ServiceSettings(token=TokenSettings(verbose_token=False)))
    token = quiet.attest("sample", bound_evidence(runtime), StructuredRuntimeData(runtime))
    evidence = claims_of(quiet, token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"] == RUNTIME


def test_policies_list_get_and_challenge(service: AttestationService) -> None:
    service.set_policy("demo_cpu", ALLOW_SAMPLE)
    assert service.list_policies() == ["default_cpu", "demo_cpu"]
    assert service.get_policy("demo_cpu") == ALLOW_SAMPLE
    assert service.challenge("sample", "") == ""
    with pytest.raises(VerificationError):
        service.challenge("nope", "")


def test_bad_init_data_toml_is_a_request_error(service: AttestationService) -> None:
    with pytest.raises(RequestError, match="sample: initdata is not valid TOML"):
        service.attest("sample", bound_evidence(), StructuredRuntimeData(RUNTIME), InitDataToml("= nope"))


@given(st.text(max_size=200))
def test_random_init_data_toml_raises_only_binding_error(text: str) -> None:
    with contextlib.suppress(BindingError):
        expected_init_data(InitDataToml(text))


@given(st.dictionaries(st.sampled_from(["cdh.toml", "aa.toml", "policy.rego", "x"]), st.text(max_size=80)))
def test_random_init_data_entries_raise_nothing(data: dict[str, str]) -> None:
    toml = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n' + "".join(
        f"{json.dumps(name)} = {json.dumps(value)}\n" for name, value in data.items()
    )
    with contextlib.suppress(BindingError):  # json.dumps escapes are not all valid TOML escapes
        expected_init_data(InitDataToml(toml))


class FetchingVerifier:
    """A TEE whose synchronous path lacks collateral and whose async path fetches it (as TDX does)."""

    tee = "fetching"

    def evaluate(
        self, evidence: bytes, expected_report_data: bytes, expected_init_data_hash: bytes | None = None
    ):
        raise VerificationError("collateral_unavailable", "no collateral cached")

    async def evaluate_async(
        self, evidence: bytes, expected_report_data: bytes, expected_init_data_hash: bytes | None = None
    ) -> dict[str, Any]:
        return {"report_data": expected_report_data.hex(), "fetched": True}


async def test_async_path_lets_verifiers_fetch_collateral() -> None:
    registry = VerifierRegistry(tees={"fetching": TeeSpec(lambda config: FetchingVerifier())})
    service = AttestationService(verifiers=registry)
    with pytest.raises(VerificationError, match="collateral_unavailable"):
        service.attest("fetching", b"{}", RawRuntimeData(b"rd"))
    token = await service.attest_async("fetching", b"{}", RawRuntimeData(b"rd"))
    evidence = claims_of(service, token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence == {
        "report_data": b"rd".hex(),
        "runtime_data_claims": None,
        "fetching": {"fetched": True},
    }


async def test_async_path_with_sample(service: AttestationService) -> None:
    token = await service.attest_async("sample", bound_evidence(), StructuredRuntimeData(RUNTIME))
    assert claims_of(service, token)["submods"]["cpu0"]["ear.status"] == "contraindicated"


def test_verifier_configuration_errors_are_verification_errors() -> None:
    def broken(config: Any) -> Any:
        raise ValueError(f"unknown VCEK source type {config['snp_verifier']['vcek_sources'][0]['type']!r}")

    registry = VerifierRegistry(
        {"snp_verifier": {"vcek_sources": [{"type": "Nope"}]}}, tees={"snp": TeeSpec(broken)}
    )
    with pytest.raises(VerificationError, match="configuration is invalid: unknown VCEK source type 'Nope'"):
        registry.evaluate("snp", b"{}", b"")
