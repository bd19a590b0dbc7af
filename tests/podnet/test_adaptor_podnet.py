"""The pod network through the real processes: `cloud-api-adaptor local` runs in a worker namespace
(each local pod VM in namespaces of its own on a bridge, as root), the shim's CreateVM names a
CNI-made pod namespace, and a server a container runs inside the pod VM answers at the pod IP."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf.empty_pb2 import Empty

from protocols.proto import agent_pb2, oci_pb2
from providers.local import LocalProvider
from providers.local_network import DEFAULT_SUBNET, LocalNetwork
from shimdriver.driver import AgentClient, shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.podnet.topology import TCP_ECHO, Pod, Topology, links, needs_netns, notrack_rules, qdiscs
from tests.podnet.topology import tcp_request as blocking_tcp_request
from tests.podnet.topology import topology as make_topology

pytestmark = needs_netns()


async def tcp_request(ns: str, ip: str, port: int, payload: str) -> str:
    return await asyncio.to_thread(blocking_tcp_request, ns, ip, port, payload)


@asynccontextmanager
async def worker(directory: Path, pods: int) -> AsyncIterator[tuple[Topology, AdaptorProcess]]:
    with make_topology(pods=pods, vms=0) as net:
        adaptor = AdaptorProcess(
            directory, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, "local",
            ("--local-dir", str(directory / "vms"), "--local-network", "netns", "--proxy-timeout", "60s"),
            netns=net.worker,
        )  # fmt: skip
        try:
            await adaptor.start()
            yield net, adaptor
        finally:
            await adaptor.stop()
            await remove_vms(directory / "vms")


async def remove_vms(vms: Path) -> None:
    """Whatever local pod VMs a failed test left: their processes and namespaces."""
    for path in vms.glob("*/instance.json"):
        instance = json.loads(path.read_text())
        network = LocalNetwork(ipaddress.IPv4Network(DEFAULT_SUBNET))
        await LocalProvider(vms, instance["owner"], network).delete_instance(instance["id"])


async def start_pod(adaptor: AdaptorProcess, pod: Pod) -> tuple[str, AgentClient]:
    """CreateVM naming the pod's namespace, StartVM, and a container serving TCP/UDP at the pod IP."""
    sandbox = secrets.token_hex(32)
    socket = await adaptor.hypervisor.create_vm(sandbox, shim_annotations(pod.ns, "default"), netns=pod.path)
    await adaptor.hypervisor.start_vm(sandbox, timeout=120)
    agent = await AgentClient.dial(socket)
    await agent.call("CreateSandbox", agent_pb2.CreateSandboxRequest(sandbox_id=sandbox), Empty, 60)
    server = ["python3", "-u", "-c", TCP_ECHO.format(ip=pod.ip, port=8080)]
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=server, Env=["PATH=/usr/bin:/bin"], Cwd="/"))
    container = sandbox[:12]
    await agent.call(
        "CreateContainer", agent_pb2.CreateContainerRequest(container_id=container, OCI=spec), Empty, 60
    )
    await agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=container), Empty, 60)
    output = b""
    while not output.endswith(b"ready\n"):
        read = agent_pb2.ReadStreamRequest(container_id=container, len=64)
        output += (await agent.call("ReadStdout", read, agent_pb2.ReadStreamResponse, 60)).data
    return sandbox, agent


async def test_pod_reached_at_its_ip_inside_the_pod_vm(short_dir: Path) -> None:
    async with worker(short_dir, pods=2) as (net, adaptor):
        pod, client = net.pods
        sandbox, agent = await start_pod(adaptor, pod)
        assert await tcp_request(client.ns, pod.ip, 8080, "hello") == "tcp:hello"
        await agent.close()
        await adaptor.hypervisor.stop_vm(sandbox)
        assert "vxlan1" not in links(pod.ns)
        assert not qdiscs(pod.ns)
        assert not notrack_rules(net.worker)


async def test_tunnels_survive_an_adaptor_kill_and_new_pods_get_unused_vnis(short_dir: Path) -> None:
    async with worker(short_dir, pods=3) as (net, adaptor):
        first, second, client = net.pods
        sandbox, agent = await start_pod(adaptor, first)
        await agent.close()
        await adaptor.kill()
        await adaptor.start()
        assert await tcp_request(client.ns, first.ip, 8080, "still") == "tcp:still"
        other, agent = await start_pod(adaptor, second)
        await agent.close()
        assert await tcp_request(client.ns, second.ip, 8080, "new") == "tcp:new"
        vnis = sorted(
            line.split("vni:")[1].split("]")[0] for line in notrack_rules(net.worker) if "NOTRACK" in line
        )
        assert vnis == ["555000", "555000", "555001", "555001"]
        for each in (sandbox, other):
            await adaptor.hypervisor.stop_vm(each)
        assert not notrack_rules(net.worker)


async def test_stop_after_the_cni_deleted_the_pod_namespace_leaks_nothing(short_dir: Path) -> None:
    async with worker(short_dir, pods=1) as (net, adaptor):
        (pod,) = net.pods
        sandbox, agent = await start_pod(adaptor, pod)
        await agent.close()
        net.namespaces.remove(pod.ns)
        proc = await asyncio.create_subprocess_exec("ip", "netns", "del", pod.ns)
        assert await proc.wait() == 0
        await adaptor.hypervisor.stop_vm(sandbox)
        assert not notrack_rules(net.worker)
