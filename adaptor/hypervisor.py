"""The ttrpc services on the hypervisor socket: hypervisor.Hypervisor and podvminfo.PodVMInfo."""

from __future__ import annotations

from google.protobuf.message import Message

from adaptor.logcontext import about_sandbox
from adaptor.metrics import START_VM_SECONDS, STOP_VM_SECONDS, timed
from adaptor.sandbox import SandboxManager
from protocols.daemon import log_fields
from protocols.proto import hypervisor_pb2, podvminfo_pb2
from protocols.ttrpc.envelope import Call
from protocols.ttrpc.server import Services, unary

HYPERVISOR_SERVICE = hypervisor_pb2.DESCRIPTOR.services_by_name["Hypervisor"].full_name
PODVMINFO_SERVICE = podvminfo_pb2.DESCRIPTOR.services_by_name["PodVMInfo"].full_name
VERSION = "0.1.0"


def hypervisor_services(manager: SandboxManager) -> Services:
    async def create_vm(request: hypervisor_pb2.CreateVMRequest, call: Call) -> Message:
        with about_sandbox(request.id, annotations=request.annotations):
            netns = request.networkNamespacePath
            path = await manager.create_vm(request.id, dict(request.annotations), netns)
        return hypervisor_pb2.CreateVMResponse(agentSocketPath=path)

    async def start_vm(request: hypervisor_pb2.StartVMRequest, call: Call) -> Message:
        with about_sandbox(request.id, manager.store.get(request.id)), timed(START_VM_SECONDS):
            await manager.start_vm(request.id, call.remaining())
        return hypervisor_pb2.StartVMResponse()

    async def stop_vm(request: hypervisor_pb2.StopVMRequest, call: Call) -> Message:
        with about_sandbox(request.id, manager.store.get(request.id)), timed(STOP_VM_SECONDS):
            await manager.stop_vm(request.id)
        return hypervisor_pb2.StopVMResponse()

    async def version(request: hypervisor_pb2.VersionRequest, call: Call) -> Message:
        return hypervisor_pb2.VersionResponse(version=VERSION)

    async def get_info(request: podvminfo_pb2.GetInfoRequest, call: Call) -> Message:
        with log_fields(pod_name=request.PodName, pod_namespace=request.PodNamespace):
            vm_id = await manager.instance_of(request.PodName, request.PodNamespace, request.Wait)
        return podvminfo_pb2.GetInfoResponse(VMID=vm_id)

    return {
        HYPERVISOR_SERVICE: {
            "CreateVM": unary(hypervisor_pb2.CreateVMRequest, create_vm),
            "StartVM": unary(hypervisor_pb2.StartVMRequest, start_vm),
            "StopVM": unary(hypervisor_pb2.StopVMRequest, stop_vm),
            "Version": unary(hypervisor_pb2.VersionRequest, version),
        },
        PODVMINFO_SERVICE: {"GetInfo": unary(podvminfo_pb2.GetInfoRequest, get_info)},
    }
