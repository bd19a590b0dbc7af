"""Failure paths of the sandbox manager against an in-memory cloud: nothing leaks, reasons reach the shim."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from adaptor import sandbox
from adaptor.state import SandboxRecord, SandboxState
from adaptor.tunnel.hooks import CDI_ALL_GPUS, CDI_ANNOTATION, worker_interceptors
from protocols.agent import AGENT_SERVICE
from protocols.proto import agent_pb2, oci_pb2, podvminfo_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError
from providers.base import CapacityError, Instance, InvalidRequestError
from shimdriver.driver import shim_annotations
from tests.adaptor.conftest import InProcessAdaptor


async def test_cloud_rejection_reaches_the_shim_and_nothing_is_left(memory_adaptor: InProcessAdaptor) -> None:
    memory_adaptor.cloud.fail_create = InvalidRequestError(
        "InvalidAMIID.NotFound: The image id '[ami-0bad]' does not exist"
    )
    socket = await memory_adaptor.hypervisor.create_vm("sb-bad-ami", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as info:
        await memory_adaptor.hypervisor.start_vm("sb-bad-ami")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "InvalidAMIID.NotFound" in info.value.message and "ami-0bad" in info.value.message
    record = memory_adaptor.store.get("sb-bad-ami")
    assert record is not None and record.state == SandboxState.FAILED
    assert memory_adaptor.cloud.instances == {}
    assert not (memory_adaptor.socket.parent / "pods" / "sb-bad-ami" / "agent.ttrpc").exists()
    assert socket.endswith("/sb-bad-ami/agent.ttrpc")
    await memory_adaptor.hypervisor.stop_vm("sb-bad-ami")
    assert memory_adaptor.store.get("sb-bad-ami") is None


async def test_capacity_error_maps_to_resource_exhausted(memory_adaptor: InProcessAdaptor) -> None:
    memory_adaptor.cloud.fail_create = CapacityError(
        "InsufficientInstanceCapacity: no m6a.large in us-east-2a"
    )
    await memory_adaptor.hypervisor.create_vm("sb-capacity", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as info:
        await memory_adaptor.hypervisor.start_vm("sb-capacity")
    assert info.value.code == Code.RESOURCE_EXHAUSTED


async def test_unreachable_pod_vm_fails_start_and_deletes_the_instance(
    memory_adaptor: InProcessAdaptor,
) -> None:
    await memory_adaptor.hypervisor.create_vm("sb-silent", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as info:
        await memory_adaptor.hypervisor.start_vm("sb-silent")
    assert info.value.code == Code.UNAVAILABLE
    assert "cannot reach pod VM" in info.value.message
    assert memory_adaptor.cloud.instances == {} and len(memory_adaptor.cloud.deleted) == 1
    assert not (memory_adaptor.socket.parent / "pods" / "sb-silent" / "agent.ttrpc").exists()


async def test_shim_deadline_still_cleans_up(memory_adaptor: InProcessAdaptor) -> None:
    await memory_adaptor.hypervisor.create_vm("sb-deadline", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as info:
        await memory_adaptor.hypervisor.start_vm("sb-deadline", timeout=0.3)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    # As the shim does after a failed start; it waits for the adaptor's own cleanup to finish.
    await memory_adaptor.hypervisor.stop_vm("sb-deadline")
    assert memory_adaptor.cloud.instances == {} and len(memory_adaptor.cloud.deleted) == 1
    assert memory_adaptor.store.get("sb-deadline") is None


async def test_reconcile_deletes_strays_and_reports_lost(memory_adaptor: InProcessAdaptor) -> None:
    cloud, store = memory_adaptor.cloud, memory_adaptor.store
    address = (ipaddress.ip_address("127.0.0.1"),)
    cloud.instances["i-stray"] = Instance("i-stray", "podvm-x", address, "sb-unknown")
    cloud.instances["i-live"] = Instance("i-live", "podvm-live", address, "sb-live", cloud.port)
    cloud.instances["i-half"] = Instance("i-half", "podvm-half", address, "sb-half")

    def record(sandbox_id: str, state: SandboxState, instance_id: str = "") -> SandboxRecord:
        return SandboxRecord(
            id=sandbox_id,
            pod_name="p",
            pod_namespace="ns",
            instance_name="podvm-" + sandbox_id,
            socket_path=str(memory_adaptor.socket.parent / f"{sandbox_id}.sock"),
            state=state,
            annotations=shim_annotations("p", "ns"),
            instance_id=instance_id,
            ips=("127.0.0.1",) if instance_id else (),
        )

    store.put(record("sb-live", SandboxState.RUNNING, "i-live"))
    store.put(record("sb-gone", SandboxState.RUNNING, "i-gone"))
    store.put(record("sb-half", SandboxState.STARTING))

    await memory_adaptor.manager.reconcile()

    assert sorted(cloud.instances) == ["i-live"]
    states = {record.id: record.state for record in store.all()}
    assert states == {
        "sb-live": SandboxState.RUNNING,
        "sb-gone": SandboxState.LOST,
        "sb-half": SandboxState.FAILED,
    }
    assert "sb-live" in memory_adaptor.manager.proxies


async def test_a_stray_the_cloud_refuses_to_delete_does_not_stop_the_start(
    memory_adaptor: InProcessAdaptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the refusal escaped reconcile and the adaptor exited, taking its live pods' tunnels."""
    monkeypatch.setattr(sandbox, "STRAY_RETRY_S", (0.01, 0.05))
    cloud, store = memory_adaptor.cloud, memory_adaptor.store
    address = (ipaddress.ip_address("127.0.0.1"),)
    cloud.instances["i-stray"] = Instance("i-stray", "podvm-x", address, "sb-unknown")
    cloud.instances["i-live"] = Instance("i-live", "podvm-live", address, "sb-live", cloud.port)
    cloud.refuse_delete.add("i-stray")
    store.put(
        SandboxRecord(
            id="sb-live",
            pod_name="p",
            pod_namespace="ns",
            instance_name="podvm-live",
            socket_path=str(memory_adaptor.socket.parent / "sb-live.sock"),
            state=SandboxState.RUNNING,
            annotations=shim_annotations("p", "ns"),
            instance_id="i-live",
            ips=("127.0.0.1",),
        )
    )

    await memory_adaptor.manager.reconcile()

    assert "sb-live" in memory_adaptor.manager.proxies
    assert "i-stray" in cloud.instances
    cloud.refuse_delete.clear()  # the cloud allows it again: the background retry finishes the job
    async with asyncio.timeout(30):
        while "i-stray" in cloud.instances:
            await asyncio.sleep(0.01)
    assert sorted(cloud.instances) == ["i-live"] and cloud.deleted == ["i-stray"]


async def test_worker_rewrite_hooks() -> None:
    hooks = worker_interceptors("sandbox-1", gpus=1)
    sandbox = agent_pb2.CreateSandboxRequest.FromString(
        await hooks[(AGENT_SERVICE, "CreateSandbox")](
            agent_pb2.CreateSandboxRequest(hostname="h").SerializeToString()
        )
    )
    assert sandbox.sandbox_id == "sandbox-1" and sandbox.hostname == "h"
    request = agent_pb2.CreateContainerRequest(container_id="c", OCI=oci_pb2.Spec(Annotations={"a": "b"}))
    container = agent_pb2.CreateContainerRequest.FromString(
        await hooks[(AGENT_SERVICE, "CreateContainer")](request.SerializeToString())
    )
    assert dict(container.OCI.Annotations) == {"a": "b", CDI_ANNOTATION: CDI_ALL_GPUS}
    no_gpu = worker_interceptors("sandbox-1", gpus=0)
    plain = agent_pb2.CreateContainerRequest.FromString(
        await no_gpu[(AGENT_SERVICE, "CreateContainer")](request.SerializeToString())
    )
    assert dict(plain.OCI.Annotations) == {"a": "b"}


async def test_deadline_during_a_slow_create_still_deletes_what_it_made(
    memory_adaptor: InProcessAdaptor,
) -> None:
    memory_adaptor.cloud.create_delay_s = 0.6
    await memory_adaptor.hypervisor.create_vm("sb-slow-create", shim_annotations("p", "ns"))
    with pytest.raises(TtrpcError) as info:
        await memory_adaptor.hypervisor.start_vm("sb-slow-create", timeout=0.2)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    await memory_adaptor.hypervisor.stop_vm("sb-slow-create")
    assert memory_adaptor.cloud.instances == {} and len(memory_adaptor.cloud.deleted) == 1


async def test_get_info_wait_is_bounded_by_the_proxy_timeout(memory_adaptor: InProcessAdaptor) -> None:
    """A pod that never starts must not hold a GetInfo(Wait=true) without deadline forever."""
    await memory_adaptor.hypervisor.create_vm("sb-never-started", shim_annotations("p", "ns"))
    async with await Client.connect_unix(memory_adaptor.socket) as client, asyncio.timeout(30):
        with pytest.raises(TtrpcError) as info:
            await client.unary(
                "podvminfo.PodVMInfo",
                "GetInfo",
                podvminfo_pb2.GetInfoRequest(PodName="p", PodNamespace="ns", Wait=True),
                podvminfo_pb2.GetInfoResponse,
            )
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert "PROXY_TIMEOUT" in info.value.message


async def test_get_info_waiter_learns_of_a_failed_start(memory_adaptor: InProcessAdaptor) -> None:
    memory_adaptor.cloud.fail_create = CapacityError("no capacity")
    await memory_adaptor.hypervisor.create_vm("sb-fails", shim_annotations("p", "ns"))
    waiter = asyncio.ensure_future(memory_adaptor.manager.instance_of("p", "ns", wait=True))
    with pytest.raises(TtrpcError):
        await memory_adaptor.hypervisor.start_vm("sb-fails")
    with pytest.raises(TtrpcError) as info:
        await waiter
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "pod ns/p has no instance yet")


async def test_calls_on_unknown_sandboxes_leave_no_lock_behind(memory_adaptor: InProcessAdaptor) -> None:
    for index in range(50):
        await memory_adaptor.hypervisor.stop_vm(f"never-created-{index}")
        with pytest.raises(TtrpcError):
            await memory_adaptor.hypervisor.start_vm(f"never-created-{index}")
    await memory_adaptor.hypervisor.create_vm("sb-known", shim_annotations("p", "ns"))
    memory_adaptor.cloud.fail_create = CapacityError("no capacity")
    with pytest.raises(TtrpcError):
        await memory_adaptor.hypervisor.start_vm("sb-known")
    assert memory_adaptor.manager._locks == {}


@pytest.mark.parametrize(
    ("value", "cdi"), [("x", False), ("", False), ("-1", False), ("0", False), ("2", True)]
)
async def test_container_gpu_annotation_is_read_leniently(value: str, cdi: bool) -> None:
    """A malformed count in a container's annotations means "none", as in CreateVM's: no traceback."""
    hook = worker_interceptors("sandbox-1", gpus=0)[(AGENT_SERVICE, "CreateContainer")]
    spec = oci_pb2.Spec(Annotations={"io.katacontainers.config.hypervisor.default_gpus": value})
    request = agent_pb2.CreateContainerRequest(container_id="c", OCI=spec)
    rewritten = agent_pb2.CreateContainerRequest.FromString(await hook(request.SerializeToString()))
    assert (CDI_ANNOTATION in rewritten.OCI.Annotations) == cdi
