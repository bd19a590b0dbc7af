"""The hypervisor service as the Kata shim sees it, against a real `cloud-api-adaptor local` process."""

from __future__ import annotations

import asyncio
import secrets
import sys

import pytest
from google.protobuf.empty_pb2 import Empty

from protocols.proto import agent_pb2, hypervisor_pb2, oci_pb2, podvminfo_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError
from shimdriver.driver import AgentClient, run_pod, shim_annotations
from tests.adaptor.conftest import LocalAdaptor


async def test_full_pod_lifecycle(adaptor: LocalAdaptor) -> None:
    result = await run_pod(
        adaptor.hypervisor, secrets.token_hex(32), ["sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    assert (result.stdout, result.stderr, result.exit_status) == (b"out\n", b"err\n", 3)
    assert [name for name, _, _ in result.timeline.steps][:3] == [
        "CreateVM",
        "StartVM (instance + tunnel)",
        "dial agent socket",
    ]
    assert adaptor.local_vms() == []


async def test_version_and_podvminfo(adaptor: LocalAdaptor) -> None:
    sandbox = secrets.token_hex(32)
    assert await adaptor.hypervisor.version() == "0.1.0"
    await adaptor.hypervisor.create_vm(sandbox, shim_annotations("web", "shop"))
    async with await Client.connect_unix(adaptor.socket) as client:
        waiting = asyncio.ensure_future(
            client.unary(
                "podvminfo.PodVMInfo",
                "GetInfo",
                podvminfo_pb2.GetInfoRequest(PodName="web", PodNamespace="shop", Wait=True),
                podvminfo_pb2.GetInfoResponse,
                timeout=60,
            )
        )
        await adaptor.hypervisor.start_vm(sandbox)
        assert (await waiting).VMID.startswith("local-")
        with pytest.raises(TtrpcError) as info:
            await client.unary(
                "podvminfo.PodVMInfo",
                "GetInfo",
                podvminfo_pb2.GetInfoRequest(PodName="nobody", PodNamespace="shop"),
                podvminfo_pb2.GetInfoResponse,
            )
        assert info.value.code == Code.NOT_FOUND
    await adaptor.hypervisor.stop_vm(sandbox)


async def test_stop_vm_is_idempotent(adaptor: LocalAdaptor) -> None:
    sandbox = secrets.token_hex(32)
    await adaptor.hypervisor.create_vm(sandbox, shim_annotations("p", "ns"))
    await adaptor.hypervisor.start_vm(sandbox)
    assert len(adaptor.local_vms()) == 1
    await adaptor.hypervisor.stop_vm(sandbox)
    await adaptor.hypervisor.stop_vm(sandbox)
    await adaptor.hypervisor.stop_vm("never-created")
    assert adaptor.local_vms() == []


async def test_create_vm_validates_its_input(adaptor: LocalAdaptor) -> None:
    with pytest.raises(TtrpcError) as missing:
        await adaptor.hypervisor.create_vm(
            secrets.token_hex(8), {"io.kubernetes.cri.sandbox-namespace": "ns"}
        )
    with pytest.raises(TtrpcError) as bad_id:
        await adaptor.hypervisor.create_vm("../etc", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as unknown:
        await adaptor.hypervisor.start_vm("unknown-sandbox")
    assert missing.value.code == bad_id.value.code == Code.INVALID_ARGUMENT
    assert "pod name not found" in missing.value.message
    assert unknown.value.code == Code.NOT_FOUND


async def test_restart_while_a_pod_runs(adaptor: LocalAdaptor) -> None:
    sandbox = secrets.token_hex(32)
    socket = await adaptor.hypervisor.create_vm(sandbox, shim_annotations("long", "ns"))
    await adaptor.hypervisor.start_vm(sandbox)
    agent = await AgentClient.dial(socket)
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=["sleep", "60"]))
    await agent.call(
        "CreateContainer", agent_pb2.CreateContainerRequest(container_id="c", OCI=spec), Empty, 10
    )
    await agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c"), Empty, 10)
    vms = adaptor.local_vms()

    await adaptor.kill()
    with pytest.raises(TtrpcError):
        await agent.check()
    await agent.close()
    await adaptor.start()

    assert adaptor.local_vms() == vms, "the restart lost or leaked the pod VM"
    agent = await AgentClient.dial(socket)
    assert await agent.check() == 1
    exec_request = agent_pb2.ExecProcessRequest(
        container_id="c", exec_id="e", process=oci_pb2.Process(Args=["echo", "still here"])
    )
    await agent.call("ExecProcess", exec_request, Empty, 10)
    output = (
        await agent.read_all("ReadStdout", "c")
        if False
        else await agent.call(
            "ReadStdout",
            agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=100),
            agent_pb2.ReadStreamResponse,
            10,
        )
    )
    assert output.data == b"still here\n"
    await agent.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c", signal=9), Empty, 10)
    status = await agent.call(
        "WaitProcess", agent_pb2.WaitProcessRequest(container_id="c"), agent_pb2.WaitProcessResponse, 10
    )
    assert status.status == 137
    await agent.close()
    await adaptor.hypervisor.stop_vm(sandbox)
    assert adaptor.local_vms() == []


async def test_bad_configuration_stops_the_start(short_dir) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from adaptor.cli import main; main()", "local",
        "--state-dir", str(short_dir), "--proxy-timeout", "soon", "--tls-min-version", "TLS9",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"PROXY_TIMEOUT" in stderr and b"TLS_MIN_VERSION" in stderr


def test_cli_help_lists_providers(capsys: pytest.CaptureFixture[str]) -> None:
    from adaptor.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    assert "local" in capsys.readouterr().out
    assert hypervisor_pb2.CreateVMRequest.DESCRIPTOR.full_name == "hypervisor.CreateVMRequest"
