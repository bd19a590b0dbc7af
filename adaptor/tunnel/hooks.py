"""Rewrites the worker-side proxy applies to agent requests before they reach the pod VM.

They follow upstream's proxy: a pod that asked for GPUs gets the CDI annotation that makes the
pod VM expose them, and CreateSandbox always names the sandbox it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping

from adaptor.annotations import DEFAULT_GPUS, count
from protocols.agent import AGENT_SERVICE
from protocols.proto import agent_pb2
from protocols.ttrpc.envelope import decode_message
from protocols.ttrpc.relay import Interceptor

CDI_ANNOTATION = "cdi.k8s.io/peer-pods"
CDI_ALL_GPUS = "nvidia.com/gpu=all"


def worker_interceptors(sandbox_id: str, gpus: int) -> Mapping[tuple[str, str], Interceptor]:
    async def create_container(payload: bytes) -> bytes:
        request = decode_message(agent_pb2.CreateContainerRequest, payload)
        annotations = request.OCI.Annotations
        if gpus > 0 or count(annotations.get(DEFAULT_GPUS, "")) > 0:
            annotations[CDI_ANNOTATION] = CDI_ALL_GPUS
        return request.SerializeToString()

    async def create_sandbox(payload: bytes) -> bytes:
        request = decode_message(agent_pb2.CreateSandboxRequest, payload)
        if not request.sandbox_id:
            request.sandbox_id = sandbox_id
        return request.SerializeToString()

    return {
        (AGENT_SERVICE, "CreateContainer"): create_container,
        (AGENT_SERVICE, "CreateSandbox"): create_sandbox,
    }
