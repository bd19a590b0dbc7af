"""Large frames through the whole tunnel: cut through both hops beside small calls, and rewritten
at the forwarder when an interceptor needs the whole Request."""

from __future__ import annotations

import asyncio

from google.protobuf.empty_pb2 import Empty

from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.proto import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc.client import Client
from tests.tunnel.conftest import POD_NETNS, Tunnel

CHECK = health_pb2.CheckRequest().SerializeToString()


async def test_large_copies_and_small_calls_share_the_tunnel(tunnel: Tunnel) -> None:
    files = {f"/etc/big{index}": bytes([index]) * (1 << 20) for index in range(8)}
    async with (
        await Client.connect_unix(tunnel.proxy_socket) as copier,
        await Client.connect_unix(tunnel.proxy_socket) as checker,
    ):

        async def copy(path: str, data: bytes) -> None:
            request = agent_pb2.CopyFileRequest(path=path, file_size=len(data), file_mode=0o600, data=data)
            await copier.unary(AGENT_SERVICE, "CopyFile", request, Empty, timeout=30)

        checks = [checker.call(HEALTH_SERVICE, "Check", CHECK, timeout=30) for _ in range(50)]
        await asyncio.gather(*(copy(path, data) for path, data in files.items()), *checks)
    for path, data in files.items():
        assert (tunnel.agent.root / "rootfs" / path.lstrip("/")).read_bytes() == data


async def test_a_large_create_container_is_still_rewritten_at_the_forwarder(tunnel: Tunnel) -> None:
    annotation = "x" * (512 << 10)  # a large spec: cut through the proxy, stored at the forwarder
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=["true"]), Annotations={"big": annotation})
    request = agent_pb2.CreateContainerRequest(container_id="c1", OCI=spec)
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        await client.unary(AGENT_SERVICE, "CreateContainer", request, Empty, timeout=30)
    created = tunnel.agent.containers["c1"].spec
    assert created.Annotations["big"] == annotation
    assert [(ns.Type, ns.Path) for ns in created.Linux.Namespaces] == [("network", POD_NETNS)]
