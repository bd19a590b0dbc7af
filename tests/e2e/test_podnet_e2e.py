"""The pod network on the real pod VM image: `cloud-api-adaptor libvirt` runs in a worker namespace
the test makes, the pod VM boots on a libvirt network inside that namespace (bridge, address and
DHCP there, not on the host; see `worker_node`), CreateVM names a CNI-like pod namespace, and a
process in another pod namespace reaches, at the pod IP, a server that a container runs in the pod
VM (the forwarder put it in podns, at the far end of the VXLAN tunnel). Then StopVM leaves no
domain, volume, QEMU process, tunnel device, qdisc or NOTRACK rule."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from google.protobuf.empty_pb2 import Empty

from protocols.proto import agent_pb2, oci_pb2
from shimdriver.driver import AgentClient, Timeline, shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.e2e.stack import ConsoleWatcher, LibvirtAdaptor, ScratchPool, adaptor_env, leftovers, scratch_dir
from tests.e2e.worker_node import DHCP_RANGE, WorkerNode, podnet_problem, worker_node
from tests.podnet.topology import (
    TCP_ECHO,
    Pod,
    links,
    needs_netns,
    notrack_rules,
    qdiscs,
    tcp_request,
    udp_request,
)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.timeout(1800),
    needs_netns(),
    pytest.mark.skipif(podnet_problem() is not None, reason=f"pod network end to end: {podnet_problem()}"),
]

PORT = 8080


async def serve_in_pod_vm(
    adaptor: AdaptorProcess, pod: Pod, client: Pod, timeline: Timeline
) -> tuple[str, str]:
    """The shim's calls for a pod in `pod`'s namespace whose container serves TCP and UDP at the pod
    IP; once it listens, one request of each from `client`'s namespace. Their replies."""
    sandbox = secrets.token_hex(32)
    async with timeline.step("CreateVM (inspect pod netns)"):
        socket = await adaptor.hypervisor.create_vm(
            sandbox, shim_annotations("e2e-net", "default"), netns=pod.path
        )
    try:
        async with timeline.step("StartVM (boot, DHCP, tunnel)"):
            await adaptor.hypervisor.start_vm(sandbox)
        agent = await AgentClient.dial(socket)
        try:
            async with timeline.step("container serving in podns"):
                await start_server(agent, sandbox, pod.ip)
            async with timeline.step("TCP + UDP at the pod IP"):
                tcp = await asyncio.to_thread(tcp_request, client.ns, pod.ip, PORT, "hello")
                udp = await asyncio.to_thread(udp_request, client.ns, pod.ip, PORT, "hello")
        finally:
            await agent.close()
    finally:
        async with timeline.step("StopVM"):
            await adaptor.hypervisor.stop_vm(sandbox)
    return tcp, udp


async def start_server(agent: AgentClient, sandbox: str, ip: str) -> None:
    """The sandbox and a container serving TCP/UDP at `ip`, once it says it listens."""
    await agent.call("CreateSandbox", agent_pb2.CreateSandboxRequest(sandbox_id=sandbox), Empty, 300)
    container = sandbox[:12]
    server = ["python3", "-u", "-c", TCP_ECHO.format(ip=ip, port=PORT)]
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=server, Env=["PATH=/usr/bin:/bin"], Cwd="/"))
    create = agent_pb2.CreateContainerRequest(container_id=container, OCI=spec)
    await agent.call("CreateContainer", create, Empty, 60)
    await agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=container), Empty, 60)
    output = b""
    while not output.endswith(b"ready\n"):
        read = agent_pb2.ReadStreamRequest(container_id=container, len=64)
        output += (await agent.call("ReadStdout", read, agent_pb2.ReadStreamResponse, 120)).data


def tunnel_left(worker: WorkerNode, pod: Pod) -> list[str]:
    """The worker end of the tunnel, if StopVM left any of it."""
    found = [f"link {name}" for name in links(pod.ns) if name != "lo" and name != "eth0"]
    found += [f"qdisc {line}" for line in qdiscs(pod.ns)]
    return found + [f"rule {rule}" for rule in notrack_rules(worker.net.worker)]


async def test_pod_ip_reaches_a_container_in_the_real_pod_vm(
    scratch_pool: ScratchPool, run_id: str, domain_type: str
) -> None:
    owner = f"e2e-net-{run_id}"
    slow = domain_type != "kvm"
    began = time.monotonic()
    with (
        scratch_dir(f"{run_id}n") as directory,
        worker_node(run_id, directory, scratch_pool, pods=2) as worker,
    ):
        pod, client = worker.net.pods
        env = adaptor_env(
            scratch_pool,
            domain_type,
            uri=worker.libvirtd.uri,
            network=worker.network,
            PROXY_TIMEOUT="20m" if slow else "5m",
            LIBVIRT_IP_TIMEOUT="900" if slow else "120",  # DHCP comes once the guest has booted
        )
        with ConsoleWatcher(owner, uri=worker.libvirtd.uri) as consoles:
            adaptor = LibvirtAdaptor(directory, owner, env, netns=worker.net.worker)
            timeline = Timeline()
            await adaptor.start()
            try:
                tcp, udp = await serve_in_pod_vm(adaptor, pod, client, timeline)
            except BaseException:
                for console in consoles.consoles.values():
                    print(f"--- serial console of {console.domain_name}:\n{console.text()}")
                print(f"--- adaptor log:\n{adaptor.log.read_text()}")
                print(f"--- libvirtd log:\n{worker.libvirtd.log.read_text()[-3000:]}")
                raise
            finally:
                await adaptor.stop()
            names = list(consoles.domain_names)
        left = leftovers(owner, names, scratch_pool, worker.libvirtd.uri, worker.libvirtd.nvram_dir)
        left += tunnel_left(worker, pod)
        leases = worker.leases()
    print(f"\npod network end to end ({domain_type}): {time.monotonic() - began:.1f}s\n{timeline.render()}")
    assert names, "no pod VM domain was seen"
    assert len(leases) == 1 and DHCP_RANGE[0] <= leases[0] <= DHCP_RANGE[1], leases
    assert (tcp, udp) == ("tcp:hello", "udp:hello")
    assert left == []
