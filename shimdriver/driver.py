"""Drives the adaptor the way Kata's Go shim does (reference/kata.md §1.3-§1.5).

Hypervisor calls each use a fresh connection with the shim's timeouts; the agent socket is dialled
in a tight loop until the shim's dial timeout, then kept for the pod's life, with blocking calls
(WaitProcess, ReadStdout, GetOOMEvent) in flight beside the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.proto import agent_pb2, health_pb2, hypervisor_pb2, oci_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError

M = TypeVar("M", bound=Message)

HYPERVISOR = "hypervisor.Hypervisor"
START_VM_TIMEOUT_S = 600.0  # max(VmStartTimeout, remote_hypervisor_timeout) with the default config
AGENT_DIAL_TIMEOUT_S = 30.0  # [agent.kata] dial_timeout
CHECK_TIMEOUT_S = 30.0
REMOTE_REQUEST_TIMEOUT_S = 300.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0
CREATE_CONTAINER_TIMEOUT_S = 60.0


def shim_annotations(pod_name: str, namespace: str, **overrides: str) -> dict[str, str]:
    """The nine annotations the shim always sends, with its empty defaults."""
    base = "io.katacontainers.config.hypervisor."
    annotations = {
        "io.kubernetes.cri.sandbox-name": pod_name,
        "io.kubernetes.cri.sandbox-namespace": namespace,
        base + "machine_type": "",
        base + "image": "",
        base + "default_vcpus": "1",
        base + "default_memory": "2048",
        base + "cc_init_data": "",
        base + "default_gpus": "0",
        base + "default_gpu_model": "",
    }
    annotations.update({base + key: value for key, value in overrides.items()})
    return annotations


class HypervisorClient:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def _call(self, method: str, request: Message, response_type: type[M], timeout: float | None) -> M:
        async with await Client.connect_unix(self.socket) as client:
            return await client.unary(HYPERVISOR, method, request, response_type, timeout=timeout)

    async def create_vm(self, sandbox_id: str, annotations: Mapping[str, str], netns: str = "") -> str:
        request = hypervisor_pb2.CreateVMRequest(
            id=sandbox_id, annotations=annotations, networkNamespacePath=netns
        )
        response = await self._call("CreateVM", request, hypervisor_pb2.CreateVMResponse, None)
        if not response.agentSocketPath:
            raise TtrpcError(Code.INTERNAL, "remote hypervisor does not return tunnel socket path")
        return response.agentSocketPath

    async def start_vm(self, sandbox_id: str, timeout: float = START_VM_TIMEOUT_S) -> None:
        await self._call(
            "StartVM", hypervisor_pb2.StartVMRequest(id=sandbox_id), hypervisor_pb2.StartVMResponse, timeout
        )

    async def stop_vm(self, sandbox_id: str, timeout: float | None = None) -> None:
        await self._call(
            "StopVM", hypervisor_pb2.StopVMRequest(id=sandbox_id), hypervisor_pb2.StopVMResponse, timeout
        )

    async def version(self) -> str:
        response = await self._call(
            "Version", hypervisor_pb2.VersionRequest(), hypervisor_pb2.VersionResponse, 10
        )
        return response.version


class AgentClient:
    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    async def dial(cls, path: str, timeout: float = AGENT_DIAL_TIMEOUT_S) -> AgentClient:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls(await Client.connect_unix(path))
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TtrpcError(
                        Code.UNAVAILABLE, f"timed out connecting to remote sock: {exc}"
                    ) from None
                await asyncio.sleep(0.01)

    async def call(self, method: str, request: Message, response_type: type[M], timeout: float | None) -> M:
        return await self.client.unary(AGENT_SERVICE, method, request, response_type, timeout=timeout)

    async def check(self) -> int:
        response = await self.client.unary(
            HEALTH_SERVICE,
            "Check",
            health_pb2.CheckRequest(),
            health_pb2.HealthCheckResponse,
            CHECK_TIMEOUT_S,
        )
        return response.status

    async def read_all(self, method: str, container_id: str, exec_id: str = "") -> bytes:
        """ReadStdout/ReadStderr until the agent reports end of stream, as the shim's copy loop does."""
        chunks: list[bytes] = []
        request = agent_pb2.ReadStreamRequest(container_id=container_id, exec_id=exec_id, len=32 * 1024)
        while True:
            try:
                response = await self.call(method, request, agent_pb2.ReadStreamResponse, None)
            except TtrpcError:
                return b"".join(chunks)
            chunks.append(response.data)

    async def close(self) -> None:
        await self.client.close()


@dataclass
class Timeline:
    """When each step of the pod's life started and how long it took."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float, float]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        begin = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((name, begin - self.started, time.monotonic() - begin))

    def render(self) -> str:
        lines = [f"{'step':<28} {'at (s)':>8} {'took (ms)':>10}"]
        lines += [f"{name:<28} {at:>8.3f} {took * 1000:>10.1f}" for name, at, took in self.steps]
        total = max((at + took for _, at, took in self.steps), default=0.0)
        lines.append(f"{'total':<28} {'':>8} {total * 1000:>10.1f}")
        return "\n".join(lines)


@dataclass
class PodResult:
    stdout: bytes
    stderr: bytes
    exit_status: int
    timeline: Timeline


async def run_pod(
    hypervisor: HypervisorClient,
    sandbox_id: str,
    command: list[str],
    pod_name: str = "demo",
    namespace: str = "default",
    netns: str = "",
) -> PodResult:
    """One pod's whole life, in the shim's order: create, start, health, container, output, stop.
    `netns` is the pod's network namespace, as the shim passes it to CreateVM."""
    timeline = Timeline()
    container_id = sandbox_id[:12] + "-c0"
    async with timeline.step("CreateVM"):
        socket = await hypervisor.create_vm(sandbox_id, shim_annotations(pod_name, namespace), netns)
    try:
        async with timeline.step("StartVM (instance + tunnel)"):
            await hypervisor.start_vm(sandbox_id)
        async with timeline.step("dial agent socket"):
            agent = await AgentClient.dial(socket)
        try:
            async with timeline.step("Health.Check"):
                await agent.check()
            async with timeline.step("CreateSandbox"):
                request = agent_pb2.CreateSandboxRequest(hostname=pod_name, sandbox_id=sandbox_id)
                await agent.call("CreateSandbox", request, Empty, REMOTE_REQUEST_TIMEOUT_S)
            async with timeline.step("GetGuestDetails"):
                details = agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True)
                await agent.call("GetGuestDetails", details, agent_pb2.GuestDetailsResponse, 60)
            async with timeline.step("CreateContainer"):
                spec = oci_pb2.Spec(
                    Process=oci_pb2.Process(Args=command, Env=["PATH=/usr/bin:/bin"], Cwd="/")
                )
                create = agent_pb2.CreateContainerRequest(container_id=container_id, OCI=spec)
                await agent.call("CreateContainer", create, Empty, CREATE_CONTAINER_TIMEOUT_S)
            async with timeline.step("StartContainer"):
                start = agent_pb2.StartContainerRequest(container_id=container_id)
                await agent.call("StartContainer", start, Empty, DEFAULT_REQUEST_TIMEOUT_S)
            oom = asyncio.ensure_future(
                agent.call("GetOOMEvent", agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent, None)
            )
            async with timeline.step("output + WaitProcess"):
                stdout, stderr, waited = await asyncio.gather(
                    agent.read_all("ReadStdout", container_id),
                    agent.read_all("ReadStderr", container_id),
                    agent.call(
                        "WaitProcess",
                        agent_pb2.WaitProcessRequest(container_id=container_id),
                        agent_pb2.WaitProcessResponse,
                        None,
                    ),
                )
            async with timeline.step("RemoveContainer"):
                remove = agent_pb2.RemoveContainerRequest(container_id=container_id)
                await agent.call("RemoveContainer", remove, Empty, DEFAULT_REQUEST_TIMEOUT_S)
            async with timeline.step("DestroySandbox"):
                await agent.call(
                    "DestroySandbox", agent_pb2.DestroySandboxRequest(), Empty, DEFAULT_REQUEST_TIMEOUT_S
                )
            oom.cancel()
            with contextlib.suppress(asyncio.CancelledError, TtrpcError):
                await oom
        finally:
            await agent.close()
    finally:
        async with timeline.step("StopVM"):
            await hypervisor.stop_vm(sandbox_id)
    return PodResult(stdout, stderr, waited.status, timeline)
