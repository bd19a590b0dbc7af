"""Policy engine (regorus behind our interface), policy store, and the default CPU policy's decisions."""

from __future__ import annotations

import base64
import gc
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from verifier.ear import status
from verifier.policy import Budget, PolicyBudgetError, PolicyError, PolicyStore, RegorusEngine, builtin_policy
from verifier.rvps import ReferenceValueStore

RULES = ["data.policy.trust_claims", "data.policy.extensions"]
DEFAULT = builtin_policy("default_cpu.rego")


def register(rvps: ReferenceValueStore, values: dict[str, Any]) -> None:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    rvps.register(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))


@pytest.fixture
def rvps() -> ReferenceValueStore:
    return ReferenceValueStore()


@pytest.fixture
def engine(rvps: ReferenceValueStore) -> RegorusEngine:
    return RegorusEngine({"query_reference_value": (1, rvps.query)})


def vector(engine: RegorusEngine, claims: dict[str, Any], policy: str = DEFAULT) -> dict[str, int]:
    result: dict[str, int] = engine.evaluate(policy, claims, RULES)[RULES[0]]
    return result


# ---- engine


def test_compile_error_names_line_and_problem(engine: RegorusEngine) -> None:
    with pytest.raises(PolicyError) as info:
        engine.check("package policy\nimport rego.v1\n\ntrust_claims := {\n")
    message = str(info.value)
    assert message.startswith("policy does not compile:")
    assert "policy.rego:" in message
    assert "Stack backtrace" not in message


def test_rego_v0_syntax_is_rejected(engine: RegorusEngine) -> None:
    with pytest.raises(PolicyError, match="`if` keyword is required"):
        engine.check("package policy\nallow { true }\n")


def test_host_function_gets_the_name_and_its_result_is_used(rvps: ReferenceValueStore) -> None:
    asked: list[str] = []

    def query(name: str) -> Any:
        asked.append(name)
        return rvps.query(name)

    engine = RegorusEngine({"query_reference_value": (1, query)})
    register(rvps, {"svn": ["1", "2"]})
    policy = 'package policy\nimport rego.v1\nok if input.svn in query_reference_value("svn")\n'
    assert engine.evaluate(policy, {"svn": "2"}, ["data.policy.ok"]) == {"data.policy.ok": True}
    assert engine.evaluate(policy, {"svn": "3"}, ["data.policy.ok"]) == {"data.policy.ok": None}
    assert set(asked) == {"svn"}


def test_host_function_error_is_a_policy_error(engine: RegorusEngine) -> None:
    policy = "package policy\nimport rego.v1\nx := query_reference_value(1)\n"
    with pytest.raises(PolicyError, match="query_reference_value"):
        RegorusEngine({"query_reference_value": (1, lambda name: name.upper())}).evaluate(
            policy, {}, ["data.policy.x"]
        )


def test_unknown_function_fails_at_evaluation(engine: RegorusEngine) -> None:
    with pytest.raises(PolicyError, match="could not find function"):
        engine.evaluate("package policy\nimport rego.v1\nx := nope(1)\n", {}, ["data.policy.x"])


def test_missing_and_undefined_rules_are_none(engine: RegorusEngine) -> None:
    policy = 'package policy\nimport rego.v1\nodd := "<undefined>"\nmaybe if input.a\n'
    result = engine.evaluate(policy, {}, ["data.policy.maybe", "data.policy.absent", "data.policy.odd"])
    assert result == {"data.policy.maybe": None, "data.policy.absent": None, "data.policy.odd": "<undefined>"}


def test_sets_come_back_as_json_lists(engine: RegorusEngine) -> None:
    result = engine.evaluate("package policy\nimport rego.v1\ns := {3, 1, 2}\n", {}, ["data.policy.s"])
    assert result == {"data.policy.s": [1, 2, 3]}


@pytest.fixture
def unsendable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What regorus reports when an engine is freed on another thread than its own (it leaks)."""
    reports: list[str] = []

    def hook(report: Any) -> None:
        if "unsendable" in str(report.exc_value):
            reports.append(str(report.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return reports


def test_engine_can_be_used_from_other_threads(engine: RegorusEngine, unsendable: list[str]) -> None:
    """regorus engines are bound to their thread; ours caches one compiled engine per thread, freed
    on that thread when it ends."""
    engine.evaluate(DEFAULT, {}, RULES)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(engine.evaluate(DEFAULT, {}, RULES)[RULES[0]]))
    worker.start()
    worker.join()
    assert results and results[0]["hardware"] == 97
    gc.collect()
    assert unsendable == []


def test_evaluations_on_one_cached_policy_do_not_leak_into_each_other(engine: RegorusEngine) -> None:
    policy = "package policy\nimport rego.v1\nx := input.a\ny := count(input)\n"
    rules = ["data.policy.x", "data.policy.y"]
    assert engine.evaluate(policy, {"a": 1, "b": 2}, rules) == {"data.policy.x": 1, "data.policy.y": 2}
    assert engine.evaluate(policy, {}, rules) == {"data.policy.x": None, "data.policy.y": 0}
    assert engine.evaluate(policy, {"a": [3]}, rules) == {"data.policy.x": [3], "data.policy.y": 1}


BAD_POLICY = "package policy\nthis is not rego\n"
FAILING_HOST_CALL = "package policy\nimport rego.v1\nx := query_reference_value(1)\n"


@pytest.mark.parametrize(
    "fail",
    [
        lambda engine: engine.check(BAD_POLICY),
        lambda engine: engine.evaluate(FAILING_HOST_CALL, {}, ["data.policy.x"]),
        lambda engine: engine.evaluate(BAD_POLICY, {}, RULES),
    ],
    ids=["compile", "evaluate", "evaluate-uncompilable"],
)
def test_a_failure_does_not_carry_an_engine_to_another_thread(
    fail: Callable[[RegorusEngine], object], unsendable: list[str]
) -> None:
    """The error of a failed call, dropped on another thread, must not hold a regorus engine."""
    engine = RegorusEngine({"query_reference_value": (1, lambda name: name.upper())})
    errors: list[PolicyError] = []

    def work() -> None:
        try:
            fail(engine)
        except PolicyError as exc:
            errors.append(exc)
        engine.evaluate(DEFAULT, {}, RULES)  # more work for the engine's thread(s) after the failure

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert len(errors) == 1
    errors.clear()  # the error's last reference goes, on this thread
    gc.collect()
    assert unsendable == []


def test_a_policy_regorus_compiles_in_exponential_time_is_refused_by_its_budget() -> None:
    explosive = "package policy\nallow := " + "[" * 40 + "]" * 40 + "\n"  # compiles for hours
    engine = RegorusEngine(budget=Budget(cpu_seconds=0.2))
    with pytest.raises(PolicyBudgetError, match=r"more than 0\.2 s of CPU"):
        engine.check(explosive)  # in a child process, ended by the kernel at its CPU budget


def test_a_policy_over_the_size_budget_or_not_utf8_is_refused() -> None:
    engine = RegorusEngine(budget=Budget(max_bytes=100))
    with pytest.raises(PolicyBudgetError, match="more than the 100 allowed"):
        engine.check("package policy\n" + "# padding\n" * 20)
    with pytest.raises(PolicyError, match="lone surrogate"):
        engine.check('package policy\nx := "\ud800"\n')


# ---- store


def test_store_installs_default_and_checks_on_set(engine: RegorusEngine) -> None:
    store = PolicyStore(engine)
    assert store.list() == ["default_cpu"]
    assert store.get("default_cpu") == DEFAULT
    with pytest.raises(PolicyError, match="does not compile"):
        store.set("broken_cpu", "package policy\nx := \n")
    assert store.list() == ["default_cpu"]
    with pytest.raises(PolicyError, match="policy id"):
        store.set("../escape", "package policy\n")
    with pytest.raises(PolicyError, match="'missing_cpu' not found"):
        store.get("missing_cpu")


def test_store_directory_keeps_edits_and_does_not_overwrite_them(
    engine: RegorusEngine, tmp_path: Path
) -> None:
    store = PolicyStore(engine, tmp_path)
    edited = 'package policy\nimport rego.v1\ntrust_claims := {"hardware": 2}\n'
    store.set("default_cpu", edited)
    store.set("mine_cpu", edited)
    assert (tmp_path / "mine_cpu.rego").read_text() == edited
    reopened = PolicyStore(engine, tmp_path)
    assert reopened.list() == ["default_cpu", "mine_cpu"]
    assert reopened.get("default_cpu") == edited


def test_store_directory_with_a_broken_policy_fails_clearly(engine: RegorusEngine, tmp_path: Path) -> None:
    (tmp_path / "bad_cpu.rego").write_text("package policy\nnot rego at all\n")
    with pytest.raises(PolicyError, match="stored policy 'bad_cpu'"):
        PolicyStore(engine, tmp_path)


def test_stores_sharing_a_directory_see_each_others_changes(engine: RegorusEngine, tmp_path: Path) -> None:
    """Replicas share the directory: a policy set through one is what the other reads next."""
    first, second = PolicyStore(engine, tmp_path), PolicyStore(engine, tmp_path)
    assert second.get("default_cpu") == DEFAULT
    for hardware in (2, 3):  # changed twice, the second time at once: each write is seen
        edited = f'package policy\nimport rego.v1\ntrust_claims := {{"hardware": {hardware}}}\n'
        first.set("default_cpu", edited)
        assert second.get("default_cpu") == edited
    first.set("new_cpu", DEFAULT)
    assert second.list() == ["default_cpu", "new_cpu"]
    assert second.get("new_cpu") == DEFAULT
    (tmp_path / "new_cpu.rego").unlink()
    with pytest.raises(PolicyError, match="'new_cpu' not found"):
        second.get("new_cpu")


# ---- default policy

SAMPLE = {
    "svn": "1",
    "report_data": "",
    "launch_digest": "abcde",
    "platform_version": {"major": 1, "minor": 4},
    "debug": False,
}
SAMPLE_RVS = {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1}
ALLOW_SAMPLE = """package policy
import rego.v1
default hardware := 97
hardware := 2 if input.sample.svn in query_reference_value("svn")
trust_claims := {"hardware": hardware}
"""


def test_default_policy_never_trusts_sample_even_with_matching_reference_values(
    engine: RegorusEngine, rvps: ReferenceValueStore
) -> None:
    register(rvps, SAMPLE_RVS)
    result = vector(engine, {"sample": SAMPLE})
    assert (result["executables"], result["hardware"], result["configuration"]) == (33, 97, 36)
    assert status(result) == "contraindicated"


def test_a_test_policy_can_accept_sample(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    register(rvps, SAMPLE_RVS)
    result = vector(engine, {"sample": SAMPLE}, ALLOW_SAMPLE)
    assert result == {"hardware": 2}
    assert status(result) == "affirming"


SNP = {
    "measurement": "m1",
    "reported_tcb_bootloader": 4,
    "reported_tcb_microcode": 219,
    "reported_tcb_snp": 22,
    "reported_tcb_tee": 0,
    "policy_debug_allowed": False,
    "policy_migrate_ma": False,
    "platform_smt_enabled": True,
    "platform_tsme_enabled": False,
    "policy_abi_major": 0,
    "policy_abi_minor": 31,
    "policy_single_socket": False,
    "policy_smt_allowed": True,
}
SNP_RVS = {
    "snp_launch_measurement": ["m1"],
    "snp_bootloader": [4],
    "snp_microcode": [219],
    "snp_snp_svn": [22],
    "snp_tee_svn": [0],
    "snp_smt_enabled": True,
    "snp_tsme_enabled": False,
    "snp_guest_abi_major": 0,
    "snp_guest_abi_minor": 31,
    "snp_single_socket": False,
    "snp_smt_allowed": True,
}


def test_snp_without_reference_values_is_contraindicated(engine: RegorusEngine) -> None:
    result = vector(engine, {"snp": SNP})
    # configuration 3: debug and migration agent are off, nothing else could be compared.
    assert (result["executables"], result["hardware"], result["configuration"]) == (33, 97, 3)
    assert status(result) == "contraindicated"


def test_snp_matching_reference_values_is_affirming(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    register(rvps, SNP_RVS)
    result = vector(engine, {"snp": SNP})
    assert (result["executables"], result["hardware"], result["configuration"]) == (3, 2, 2)
    assert status(result) == "affirming"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"measurement": "other"}, (33, 2, 2)),
        ({"reported_tcb_microcode": 200}, (3, 97, 2)),
        ({"platform_smt_enabled": False}, (3, 2, 3)),
        ({"policy_debug_allowed": True}, (3, 2, 36)),
        ({"policy_migrate_ma": True}, (3, 2, 36)),
    ],
)
def test_snp_each_mismatch_lowers_its_claim(
    engine: RegorusEngine, rvps: ReferenceValueStore, change: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    register(rvps, SNP_RVS)
    result = vector(engine, {"snp": {**SNP, **change}})
    assert (result["executables"], result["hardware"], result["configuration"]) == expected


def tdx_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "quote": {
            "header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
            "body": {"mr_td": "td", "rtmr_1": "r1", "rtmr_2": "r2", "xfam": "e742060000000000"},
        },
        "td_attributes": {"debug": False},
        "tcb_status": "UpToDate",
        "collateral_expiration_status": "0",
        "uefi_event_logs": [
            {
                "type_name": "EV_EFI_BOOT_SERVICES_APPLICATION",
                "details": {"device_paths": ["PciRoot(0x0)", "File(kernel)"]},
                "digests": [{"alg": "SHA-384", "digest": "kd"}],
            },
            {
                "type_name": "EV_EVENT_TAG",
                "details": {"string": "LOADED_IMAGE::LoadOptions"},
                "digests": [{"alg": "SHA-384", "digest": "pd"}],
            },
        ],
    }
    claims.update(overrides)
    return claims


TDX_RVS = {
    "rtmr_1": ["r1"],
    "rtmr_2": ["r2"],
    "tdvfkernel": "kd",
    "tdvfkernelparams": "pd",
    "mr_td": ["td"],
    "xfam": ["e742060000000000"],
}


def test_tdx_matching_everything_is_affirming(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    register(rvps, TDX_RVS)
    result = vector(engine, {"tdx": tdx_claims()})
    assert (result["executables"], result["hardware"], result["configuration"]) == (3, 2, 2)


def test_tdx_rtmrs_without_matching_kernel_event_gives_executables_4(
    engine: RegorusEngine, rvps: ReferenceValueStore
) -> None:
    register(rvps, {**TDX_RVS, "tdvfkernel": "other"})
    assert vector(engine, {"tdx": tdx_claims()})["executables"] == 4
    register(rvps, {"rtmr_2": ["nope"]})
    assert vector(engine, {"tdx": tdx_claims()})["executables"] == 33


@pytest.mark.parametrize(
    "overrides",
    [{"tcb_status": "OutOfDate"}, {"collateral_expiration_status": "1"}],
)
def test_tdx_hardware_needs_up_to_date_tcb_and_fresh_collateral(
    engine: RegorusEngine, rvps: ReferenceValueStore, overrides: dict[str, Any]
) -> None:
    register(rvps, TDX_RVS)
    assert vector(engine, {"tdx": tdx_claims(**overrides)})["hardware"] == 97


def test_tdx_debug_td_has_no_approved_configuration(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    register(rvps, TDX_RVS)
    assert vector(engine, {"tdx": tdx_claims(td_attributes={"debug": True})})["configuration"] == 36


def test_az_snp_vtpm(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    claims = {**SNP, "tpm": {"pcr11": "p11"}}
    register(
        rvps,
        {
            "measurement": ["m1"],
            "snp_pcr11": ["p11"],
            "tcb_bootloader": [4],
            "tcb_microcode": [219],
            "tcb_snp": [22],
            "tcb_tee": [0],
            "smt_enabled": [True],
            "tsme_enabled": [False],
            "abi_major": [0],
            "abi_minor": [31],
            "single_socket": [False],
            "smt_allowed": [True],
        },
    )
    result = vector(engine, {"az-snp-vtpm": claims})
    assert (result["executables"], result["hardware"], result["configuration"]) == (3, 2, 2)
    result = vector(engine, {"az-snp-vtpm": {**claims, "tpm": {"pcr11": "other"}}})
    assert result["executables"] == 33


def test_az_tdx_vtpm(engine: RegorusEngine, rvps: ReferenceValueStore) -> None:
    claims = {"quote": tdx_claims()["quote"], "tcb_status": "UpToDate", "tpm": {"pcr11": "t11"}}
    register(rvps, {"tdx_pcr11": ["t11"], "mr_td": ["td"], "xfam": ["e742060000000000"]})
    result = vector(engine, {"az-tdx-vtpm": claims})
    assert (result["executables"], result["hardware"], result["configuration"]) == (3, 2, 2)
    assert vector(engine, {"az-tdx-vtpm": {**claims, "tcb_status": "OutOfDate"}})["hardware"] == 97


def test_default_policy_sets_all_eight_claims(engine: RegorusEngine) -> None:
    assert set(vector(engine, {"snp": SNP})) == {
        "instance-identity",
        "configuration",
        "executables",
        "file-system",
        "hardware",
        "runtime-opaque",
        "storage-opaque",
        "sourced-data",
    }


def test_identifiers_extension_from_agent_policy(engine: RegorusEngine) -> None:
    containers = [
        {
            "OCI": {
                "Annotations": {"io.kubernetes.cri.image-name": "pause"},
                "Process": {"User": {"UID": 65535}},
            }
        },
        {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "nginx"}, "Process": {"User": {"UID": 0}}}},
    ]
    claims = {"snp": SNP, "init_data_claims": {"agent_policy_claims": {"containers": containers}}}
    extensions = engine.evaluate(DEFAULT, claims, RULES)[RULES[1]]
    assert extensions == [
        {
            "name": "ear.trustee.identifiers",
            "key": -18,
            "value": {"validated": {"container_images": ["pause", "nginx"], "container_uids": [65535, 0]}},
        }
    ]
    bare = engine.evaluate(DEFAULT, {"snp": SNP, "init_data_claims": None}, RULES)[RULES[1]]
    assert bare[0]["value"] == {"validated": {}}
