"""The stand-in agent's handlers for grpc.AgentService and grpc.Health (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from podvm.standin_agent.images import IMAGE_NAME_ANNOTATION, in_rootfs, pull_image
from podvm.standin_agent.processes import Process
from podvm.standin_agent.volumes import mount_encrypted_storages
from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.proto import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc.envelope import Call
from protocols.ttrpc.server import Handler, Services, unary
from protocols.ttrpc.status import Code, TtrpcError

VERSION = "peerpods-standin-agent 0.1"
EMPTY = empty_pb2.Empty()

log = logging.getLogger(__name__)


@dataclass
class Container:
    spec: oci_pb2.Spec
    directory: Path
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def network_namespace(self) -> str:
        """The network namespace the spec asks for (the forwarder adds the pod's), else "". Unlike
        kata-agent, the stand-in runs the process in its own namespace when that one does not exist
        (a forwarder left at its default /run/netns/podns on a machine without one), and says so."""
        paths = [ns.Path for ns in self.spec.Linux.Namespaces if ns.Type == "network" and ns.Path]
        if not paths:
            return ""
        if not Path(paths[-1]).exists():
            log.warning("network namespace %s does not exist: the process stays in the agent's", paths[-1])
            return ""
        return paths[-1]


class StandinAgent:
    """State of one pod: its containers and their processes, under `root`."""

    def __init__(self, root: Path, cdh_socket: Path | None = None) -> None:
        self.root = root
        self.cdh_socket = cdh_socket
        self.containers: dict[str, Container] = {}
        self.sandbox: agent_pb2.CreateSandboxRequest | None = None
        self.shutdown = asyncio.Event()

    def container(self, container_id: str) -> Container:
        try:
            return self.containers[container_id]
        except KeyError:
            raise TtrpcError(Code.NOT_FOUND, f"container {container_id} not found") from None

    def process(self, container_id: str, exec_id: str) -> Process:
        container = self.container(container_id)
        key = "" if exec_id in ("", container_id) else exec_id
        try:
            return container.processes[key]
        except KeyError:
            raise TtrpcError(Code.NOT_FOUND, f"process {exec_id!r} of {container_id} not found") from None

    def guest_path(self, path: str) -> Path:
        """Map an absolute guest path under `root`, refusing anything that would escape it."""
        parts = PurePosixPath(path).parts
        if not path.startswith("/") or ".." in parts:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"refusing path {path!r}")
        return self.root.joinpath("rootfs", *parts[1:])

    # sandbox

    async def create_sandbox(self, request: agent_pb2.CreateSandboxRequest, call: Call) -> Message:
        self.sandbox = request
        return EMPTY

    async def destroy_sandbox(self, request: agent_pb2.DestroySandboxRequest, call: Call) -> Message:
        await self.close()
        return EMPTY

    async def close(self) -> None:
        """Kill every container process, as powering off the VM would, and release blocked callers."""
        for container_id in list(self.containers):
            await self._remove(container_id)
        self.shutdown.set()

    async def guest_details(self, request: agent_pb2.GuestDetailsRequest, call: Call) -> Message:
        return agent_pb2.GuestDetailsResponse(
            mem_block_size_bytes=128 << 20 if request.mem_block_size else 0,
            agent_details=agent_pb2.AgentDetails(version=VERSION, init_daemon=False),
        )

    # containers

    async def create_container(self, request: agent_pb2.CreateContainerRequest, call: Call) -> Message:
        if request.container_id in self.containers:
            raise TtrpcError(Code.ALREADY_EXISTS, f"container {request.container_id} exists")
        if not request.OCI.Process.Args:
            raise TtrpcError(Code.INVALID_ARGUMENT, "OCI spec has no process args")
        directory = self.root / "containers" / request.container_id
        directory.mkdir(parents=True, exist_ok=True)
        if self.cdh_socket is not None:
            await mount_encrypted_storages(self.cdh_socket, request.storages)
        image = request.OCI.Annotations.get(IMAGE_NAME_ANNOTATION)
        if self.cdh_socket is not None and image:
            await pull_image(self.cdh_socket, image, directory)
        self.containers[request.container_id] = Container(request.OCI, directory)
        return EMPTY

    async def start_container(self, request: agent_pb2.StartContainerRequest, call: Call) -> Message:
        container = self.container(request.container_id)
        if "" in container.processes:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"container {request.container_id} already started")
        process = container.spec.Process
        container.processes[""] = await Process.spawn(
            in_rootfs(process.Args, container.directory),
            process.Env,
            container.directory,
            container.network_namespace,
        )
        return EMPTY

    async def exec_process(self, request: agent_pb2.ExecProcessRequest, call: Call) -> Message:
        container = self.container(request.container_id)
        if request.exec_id in container.processes:
            raise TtrpcError(Code.ALREADY_EXISTS, f"exec {request.exec_id} exists")
        process = request.process
        container.processes[request.exec_id] = await Process.spawn(
            process.Args, process.Env, container.directory, container.network_namespace
        )
        return EMPTY

    async def remove_container(self, request: agent_pb2.RemoveContainerRequest, call: Call) -> Message:
        self.container(request.container_id)
        await self._remove(request.container_id)
        return EMPTY

    async def _remove(self, container_id: str) -> None:
        container = self.containers.pop(container_id)
        await asyncio.gather(*(process.kill() for process in container.processes.values()))

    async def stats_container(self, request: agent_pb2.StatsContainerRequest, call: Call) -> Message:
        self.container(request.container_id)
        return agent_pb2.StatsContainerResponse()

    # processes

    async def wait_process(self, request: agent_pb2.WaitProcessRequest, call: Call) -> Message:
        status = await self.process(request.container_id, request.exec_id).wait()
        return agent_pb2.WaitProcessResponse(status=status)

    async def signal_process(self, request: agent_pb2.SignalProcessRequest, call: Call) -> Message:
        self.process(request.container_id, request.exec_id).signal(request.signal)
        return EMPTY

    async def read_stdout(self, request: agent_pb2.ReadStreamRequest, call: Call) -> Message:
        data = await self.process(request.container_id, request.exec_id).stdout.read(request.len)
        return agent_pb2.ReadStreamResponse(data=data)

    async def read_stderr(self, request: agent_pb2.ReadStreamRequest, call: Call) -> Message:
        data = await self.process(request.container_id, request.exec_id).stderr.read(request.len)
        return agent_pb2.ReadStreamResponse(data=data)

    async def write_stdin(self, request: agent_pb2.WriteStreamRequest, call: Call) -> Message:
        written = await self.process(request.container_id, request.exec_id).write_stdin(request.data)
        return agent_pb2.WriteStreamResponse(len=written)

    async def close_stdin(self, request: agent_pb2.CloseStdinRequest, call: Call) -> Message:
        self.process(request.container_id, request.exec_id).close_stdin()
        return EMPTY

    async def get_oom_event(self, request: agent_pb2.GetOOMEventRequest, call: Call) -> Message:
        """Blocks like the real agent: the stand-in never sees an OOM, so it waits for shutdown."""
        await self.shutdown.wait()
        raise TtrpcError(Code.UNAVAILABLE, "agent is shutting down")

    # files

    async def copy_file(self, request: agent_pb2.CopyFileRequest, call: Call) -> Message:
        target = self.guest_path(request.path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=request.dir_mode or 0o755)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if request.offset == 0 else 0)
        fd = os.open(target, flags, request.file_mode or 0o644)
        try:
            os.pwrite(fd, request.data, request.offset)
        finally:
            os.close(fd)
        return EMPTY

    # accepted and ignored: nothing to do for a process-tree stand-in

    async def accept(self, request: Message, call: Call) -> Message:
        return EMPTY

    # health

    async def check(self, request: health_pb2.CheckRequest, call: Call) -> Message:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def version(self, request: health_pb2.CheckRequest, call: Call) -> Message:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc", agent_version=VERSION)

    def services(self) -> Services:
        """The methods the stand-in implements; every other agent method answers UNIMPLEMENTED."""
        agent: dict[str, Handler] = {
            "CreateSandbox": unary(agent_pb2.CreateSandboxRequest, self.create_sandbox),
            "DestroySandbox": unary(agent_pb2.DestroySandboxRequest, self.destroy_sandbox),
            "GetGuestDetails": unary(agent_pb2.GuestDetailsRequest, self.guest_details),
            "CreateContainer": unary(agent_pb2.CreateContainerRequest, self.create_container),
            "StartContainer": unary(agent_pb2.StartContainerRequest, self.start_container),
            "ExecProcess": unary(agent_pb2.ExecProcessRequest, self.exec_process),
            "RemoveContainer": unary(agent_pb2.RemoveContainerRequest, self.remove_container),
            "StatsContainer": unary(agent_pb2.StatsContainerRequest, self.stats_container),
            "WaitProcess": unary(agent_pb2.WaitProcessRequest, self.wait_process),
            "SignalProcess": unary(agent_pb2.SignalProcessRequest, self.signal_process),
            "ReadStdout": unary(agent_pb2.ReadStreamRequest, self.read_stdout),
            "ReadStderr": unary(agent_pb2.ReadStreamRequest, self.read_stderr),
            "WriteStdin": unary(agent_pb2.WriteStreamRequest, self.write_stdin),
            "CloseStdin": unary(agent_pb2.CloseStdinRequest, self.close_stdin),
            "GetOOMEvent": unary(agent_pb2.GetOOMEventRequest, self.get_oom_event),
            "CopyFile": unary(agent_pb2.CopyFileRequest, self.copy_file),
            "SetPolicy": unary(agent_pb2.SetPolicyRequest, self.accept),
            "UpdateEphemeralMounts": unary(agent_pb2.UpdateEphemeralMountsRequest, self.accept),
            "SetGuestDateTime": unary(agent_pb2.SetGuestDateTimeRequest, self.accept),
            "OnlineCPUMem": unary(agent_pb2.OnlineCPUMemRequest, self.accept),
        }
        health: dict[str, Handler] = {
            "Check": unary(health_pb2.CheckRequest, self.check),
            "Version": unary(health_pb2.CheckRequest, self.version),
        }
        return {AGENT_SERVICE: agent, HEALTH_SERVICE: health}
