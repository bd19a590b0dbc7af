"""Rewrites the forwarder makes inside the pod VM, as upstream's interceptor does.

CreateContainer joins the container to the pod network namespace; CreateSandbox drops the DNS
entries so the VM's own resolv.conf is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.agent import AGENT_SERVICE
from protocols.proto import agent_pb2, oci_pb2
from protocols.ttrpc.envelope import decode_message
from protocols.ttrpc.relay import Interceptor


def forwarder_interceptors(pod_namespace: str) -> Mapping[tuple[str, str], Interceptor]:
    async def create_container(payload: bytes) -> bytes:
        request = decode_message(agent_pb2.CreateContainerRequest, payload)
        if pod_namespace:
            namespaces = request.OCI.Linux.Namespaces
            if not any(ns.Type == "network" and ns.Path == pod_namespace for ns in namespaces):
                namespaces.append(oci_pb2.LinuxNamespace(Type="network", Path=pod_namespace))
        return request.SerializeToString()

    async def create_sandbox(payload: bytes) -> bytes:
        request = decode_message(agent_pb2.CreateSandboxRequest, payload)
        del request.dns[:]
        return request.SerializeToString()

    return {
        (AGENT_SERVICE, "CreateContainer"): create_container,
        (AGENT_SERVICE, "CreateSandbox"): create_sandbox,
    }
