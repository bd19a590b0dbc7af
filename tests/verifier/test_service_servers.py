"""REST and gRPC APIs end to end with the sample TEE on 127.0.0.1 ephemeral ports, and the command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization

from protocols.proto import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc
from verifier.binding import canonical_json
from verifier.server import wire
from verifier.server.grpc_api import start_grpc
from verifier.server.rest import make_app
from verifier.service import AttestationService, RequestError

RUNTIME = {"nonce": "bm9uY2U", "tee-pubkey": {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}}
ALLOW_SAMPLE = """package policy
import rego.v1
default hardware := 97
hardware := 2 if input.sample.svn in query_reference_value("svn")
trust_claims := {"hardware": hardware}
"""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def evidence(runtime: Any = RUNTIME) -> bytes:
    report_data = hashlib.sha384(canonical_json(runtime)).digest()
    return json.dumps({"svn": "1", "report_data": base64.b64encode(report_data).decode()}).encode()


def rv_message(values: dict[str, Any]) -> str:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": payload})


def status_of(token: str, jwks: dict[str, Any]) -> str:
    claims = jwt.decode(
        token, KeySet.import_key_set(cast(KeySetSerialization, jwks)), algorithms=["ES256"]
    ).claims
    result: str = claims["submods"]["cpu0"]["ear.status"]
    return result


# ---- REST


@pytest.fixture
async def rest() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(AttestationService()), host="127.0.0.1", port=0)) as client:
        yield client


def attestation_body(policy_ids: list[str], runtime: Any = RUNTIME) -> dict[str, Any]:
    return {
        "verification_requests": [
            {
                "tee": "sample",
                "evidence": b64url(evidence()),
                "runtime_data": {"structured": runtime},
                "runtime_data_hash_algorithm": "sha384",
            }
        ],
        "policy_ids": policy_ids,
    }


async def test_rest_end_to_end(rest: TestClient[Any, Any]) -> None:
    response = await rest.post("/reference-value", data=rv_message({"svn": ["1"]}))
    assert response.status == 200
    response = await rest.get("/reference-value/svn")
    assert await response.json() == ["1"]
    assert await (await rest.get("/reference-value/absent")).json() is None

    response = await rest.post(
        "/policy", json={"type": "rego", "policy_id": "demo_cpu", "policy": b64url(ALLOW_SAMPLE.encode())}
    )
    assert response.status == 200, await response.text()
    assert await (await rest.get("/policy")).json() == [
        {"policy-id": "default_cpu"},
        {"policy-id": "demo_cpu"},
    ]
    assert await (await rest.get("/policy/demo_cpu")).text() == ALLOW_SAMPLE

    jwks = await (await rest.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "EC" and jwks["keys"][0]["alg"] == "ES256"

    response = await rest.post("/attestation", json=attestation_body(["demo"]))
    assert response.status == 200, await response.text()
    assert status_of(await response.text(), jwks) == "affirming"

    response = await rest.post("/attestation", json=attestation_body([]))  # "default": never trusts sample
    assert status_of(await response.text(), jwks) == "contraindicated"

    assert (await rest.post("/challenge", json={"tee": "sample", "tee_params": ""})).status == 200
    assert (await rest.get("/healthz")).status == 200


async def test_rest_errors(rest: TestClient[Any, Any]) -> None:
    response = await rest.post("/attestation", json=attestation_body([], runtime={**RUNTIME, "nonce": "x"}))
    assert response.status == 403
    assert "report_data_mismatch" in await response.text()

    response = await rest.post("/attestation", data=b"{not json")
    assert response.status == 400
    assert "not JSON" in await response.text()

    body = attestation_body([])
    body["verification_requests"][0]["evidence"] = "%%%"
    response = await rest.post("/attestation", json=body)
    assert (response.status, await response.text()) == (400, "evidence is not base64url")

    body["verification_requests"][0]["evidence"] = b64url(evidence())
    body["verification_requests"][0]["init_data"] = {"init_data_toml": "= not toml"}
    response = await rest.post("/attestation", json=body)
    assert response.status == 400
    assert "initdata is not valid TOML" in await response.text()

    response = await rest.post(
        "/policy", json={"policy_id": "x_cpu", "policy": b64url(b"package policy\nx := \n")}
    )
    assert response.status == 400
    assert "does not compile" in await response.text()

    assert (await rest.get("/policy/none_cpu")).status == 400
    response = await rest.post("/reference-value", data='{"version": "9", "type": "sample", "payload": ""}')
    assert response.status == 400 and "version must be" in await response.text()


# ---- gRPC


async def test_grpc_end_to_end() -> None:
    service = AttestationService()
    server, port = await start_grpc(service, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            rvps = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            attestation = attestation_pb2_grpc.AttestationServiceStub(channel)

            await rvps.RegisterReferenceValue(
                reference_pb2.ReferenceValueRegisterRequest(message=rv_message({"svn": ["1"]}))
            )
            found = await rvps.QueryReferenceValue(
                reference_pb2.ReferenceValueQueryRequest(reference_value_id="svn")
            )
            assert json.loads(found.reference_value_results) == ["1"]
            absent = await rvps.QueryReferenceValue(
                reference_pb2.ReferenceValueQueryRequest(reference_value_id="no")
            )
            assert not absent.HasField("reference_value_results")

            await attestation.SetAttestationPolicy(
                attestation_pb2.SetPolicyRequest(policy_id="demo_cpu", policy=b64url(ALLOW_SAMPLE.encode()))
            )
            item = attestation_pb2.IndividualAttestationRequest(
                tee="sample", evidence=b64url(evidence()), structured_runtime_data=json.dumps(RUNTIME)
            )
            response = await attestation.AttestationEvaluate(
                attestation_pb2.AttestationRequest(verification_requests=[item], policy_ids=["demo"])
            )
            assert status_of(response.attestation_token, service.jwks()) == "affirming"

            challenge = await attestation.GetAttestationChallenge(
                attestation_pb2.ChallengeRequest(inner={"tee": "sample", "tee_params": ""})
            )
            assert challenge.attestation_challenge == ""

            item.structured_runtime_data = json.dumps({**RUNTIME, "nonce": "other"})
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await attestation.AttestationEvaluate(
                    attestation_pb2.AttestationRequest(verification_requests=[item])
                )
            assert info.value.code() == grpc.StatusCode.ABORTED
            assert "report_data_mismatch" in (info.value.details() or "")

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await attestation.SetAttestationPolicy(
                    attestation_pb2.SetPolicyRequest(policy_id="x_cpu", policy="!!")
                )
            assert "policy is not base64url" in (info.value.details() or "")
    finally:
        await server.stop(grace=None)


def test_proto_names_and_numbers_match_upstream() -> None:
    service = attestation_pb2.DESCRIPTOR.services_by_name["AttestationService"]
    assert service.full_name == "attestation.AttestationService"
    assert [m.name for m in service.methods] == [
        "AttestationEvaluate",
        "SetAttestationPolicy",
        "GetAttestationChallenge",
    ]
    fields = {f.name: f.number for f in attestation_pb2.IndividualAttestationRequest.DESCRIPTOR.fields}
    assert fields == {
        "tee": 1,
        "evidence": 3,
        "raw_runtime_data": 4,
        "structured_runtime_data": 5,
        "init_data_digest": 6,
        "init_data_toml": 7,
        "runtime_data_hash_algorithm": 8,
    }
    rvps = reference_pb2.DESCRIPTOR.services_by_name["ReferenceValueProviderService"]
    assert rvps.full_name == "reference.ReferenceValueProviderService"
    assert [m.name for m in rvps.methods] == ["QueryReferenceValue", "RegisterReferenceValue"]


# ---- request parsing


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_rest_bodies_raise_only_request_error(body: bytes | str) -> None:
    for parse in (wire.rest_attestation, wire.rest_set_policy, wire.rest_challenge):
        with contextlib.suppress(RequestError):
            parse(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
request_keys = st.sampled_from(
    ["tee", "evidence", "runtime_data", "init_data", "runtime_data_hash_algorithm"]
)


@given(
    st.dictionaries(
        request_keys, json_values | st.sampled_from([{"raw": "QQ"}, {"init_data_toml": "x"}, "QQ"])
    ),
    json_values,
)
def test_random_rest_request_shapes_raise_only_request_error(item: dict[str, Any], policy_ids: Any) -> None:
    body = json.dumps({"verification_requests": [item], "policy_ids": policy_ids})
    with contextlib.suppress(RequestError):
        wire.rest_attestation(body)


# ---- the command


def test_command_serves_both_apis_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "verifier.server.cli",
        "--socket", "127.0.0.1:0", "--grpc-socket", "127.0.0.1:0", "--work-dir", str(tmp_path),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(2)]
            ports = {line.split()[1]: int(line.rsplit(":", 1)[1]) for line in lines}
            assert set(ports) == {"rest", "grpc"}, lines

            async def exercise() -> None:
                async with ClientSession() as session:
                    base = f"http://127.0.0.1:{ports['rest']}"
                    async with session.post(
                        f"{base}/reference-value", data=rv_message({"svn": ["1"]})
                    ) as response:
                        assert response.status == 200
                    async with session.get(f"{base}/.well-known/jwks.json") as response:
                        assert (await response.json())["keys"]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
                    stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
                    found = await stub.QueryReferenceValue(
                        reference_pb2.ReferenceValueQueryRequest(reference_value_id="svn")
                    )
                    assert json.loads(found.reference_value_results) == ["1"]

            asyncio.run(exercise())
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert json.loads((tmp_path / "reference_values.json").read_text())["svn"]["value"] == ["1"]
    assert (tmp_path / "policies" / "default_cpu.rego").exists()


def test_command_reports_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "as.json"
    config.write_text(json.dumps({"rvps_config": {"type": "GrpcRemote"}}))
    result = subprocess.run(
        [sys.executable, "-m", "verifier.server.cli", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "rvps_config.type 'GrpcRemote' is not supported" in result.stderr


def test_config_file_keys(tmp_path: Path) -> None:
    from verifier.server.config import ConfigError, parse_config

    config = parse_config(
        json.dumps(
            {
                "work_dir": str(tmp_path),
                "rvps_config": {"type": "BuiltIn", "storage_type": "LocalFs"},
                "attestation_token_broker": {"duration_min": 10, "issuer_name": "me", "verbose_token": False},
                "verifier_config": {"dcap_verifier": {"collateral_service": "file:///tmp/x.json"}},
            }
        )
    )
    assert (
        config.token.duration_min == 10
        and config.token.issuer_name == "me"
        and not config.token.verbose_token
    )
    assert config.resolved_policy_dir() == tmp_path / "policies"
    assert config.resolved_rvps_store() == tmp_path / "reference_values.json"
    assert config.verifier_config == {"dcap_verifier": {"collateral_service": "file:///tmp/x.json"}}
    for bad, message in [
        ({"attestation_token_broker": {"duration_min": "5"}}, "duration_min must be a int"),
        ({"attestation_token_broker": {"verbose_token": 1}}, "verbose_token must be a bool"),
        ({"attestation_token_broker": {"signer": {"cert_path": "x"}}}, "signer needs key_path"),
        ({"verifier_config": []}, "verifier_config: must be a table"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(json.dumps(bad))
