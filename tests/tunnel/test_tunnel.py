"""The agent tunnel end to end: every call forwarded, rewrites applied, mTLS enforced both ways."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from adaptor.tunnel.authority import TunnelAuthority
from adaptor.tunnel.proxy import AgentProxy
from podvm.forwarder.service import start_forwarder
from podvm.standin_agent.agent import StandinAgent
from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.proto import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code, TtrpcError
from protocols.tunnel_tls import client_context, server_context
from tests.tunnel.conftest import INSTANCE, POD_NETNS, LogEvents, Tunnel

M = TypeVar("M", bound=Message)


async def agent_call(
    client: Client, method: str, request: Message, response_type: type[M], timeout: float | None = 10
) -> M:
    return await client.unary(AGENT_SERVICE, method, request, response_type, timeout=timeout)


async def run_container(client: Client, container_id: str, args: list[str]) -> None:
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=args, Env=["A=1"]))
    await agent_call(
        client,
        "CreateContainer",
        agent_pb2.CreateContainerRequest(container_id=container_id, OCI=spec),
        Empty,
    )
    await agent_call(
        client,
        "StartContainer",
        agent_pb2.StartContainerRequest(container_id=container_id),
        Empty,
    )


async def test_health_through_the_tunnel(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        response = await client.unary(
            HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse
        )
        version = await client.unary(
            HEALTH_SERVICE, "Version", health_pb2.CheckRequest(), health_pb2.VersionCheckResponse
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert "standin" in version.agent_version


async def test_container_runs_and_rewrites_apply(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        empty = Empty
        await agent_call(
            client,
            "CreateSandbox",
            agent_pb2.CreateSandboxRequest(hostname="pod", dns=["nameserver 1.1.1.1"]),
            empty,
        )
        await run_container(client, "c1", ["sh", "-c", "echo hello from $A"])
        output = await agent_call(
            client,
            "ReadStdout",
            agent_pb2.ReadStreamRequest(container_id="c1", len=1024),
            agent_pb2.ReadStreamResponse,
        )
        status = await agent_call(
            client,
            "WaitProcess",
            agent_pb2.WaitProcessRequest(container_id="c1"),
            agent_pb2.WaitProcessResponse,
        )
    assert output.data == b"hello from 1\n"
    assert status.status == 0
    assert tunnel.agent.sandbox is not None and list(tunnel.agent.sandbox.dns) == []
    namespaces = tunnel.agent.containers["c1"].spec.Linux.Namespaces
    assert [(ns.Type, ns.Path) for ns in namespaces] == [("network", POD_NETNS)]


async def test_blocking_calls_run_beside_others(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        await run_container(client, "sleeper", ["sleep", "30"])
        oom = asyncio.ensure_future(
            agent_call(
                client, "GetOOMEvent", agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent, timeout=None
            )
        )
        wait = asyncio.ensure_future(
            agent_call(
                client,
                "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id="sleeper"),
                agent_pb2.WaitProcessResponse,
                timeout=None,
            )
        )
        for _ in range(20):
            await client.unary(
                HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=5
            )
        assert not oom.done() and not wait.done()
        await agent_call(
            client,
            "SignalProcess",
            agent_pb2.SignalProcessRequest(container_id="sleeper", signal=9),
            Empty,
        )
        assert (await wait).status == 128 + 9
        oom.cancel()


async def test_deadline_on_the_fast_path(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        await run_container(client, "slow", ["sleep", "30"])
        with pytest.raises(TtrpcError) as info:
            await agent_call(
                client,
                "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id="slow"),
                agent_pb2.WaitProcessResponse,
                timeout=0.2,
            )
        assert info.value.code == Code.DEADLINE_EXCEEDED
        response = await client.unary(
            HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_losing_the_upstream_fails_pending_calls(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        oom = asyncio.ensure_future(
            agent_call(
                client, "GetOOMEvent", agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent, timeout=None
            )
        )
        await tunnel.agent_calls.arrived("GetOOMEvent")
        await tunnel.forwarder.close()
        with pytest.raises(TtrpcError) as info:
            await oom
    assert info.value.code == Code.UNAVAILABLE


async def test_unknown_method_and_malformed_rewrite(tunnel: Tunnel) -> None:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        with pytest.raises(TtrpcError) as unknown:
            await client.call(AGENT_SERVICE, "PullImage", b"")
        with pytest.raises(TtrpcError) as malformed:
            await client.call(AGENT_SERVICE, "CreateContainer", b"\x32\xff")
    assert unknown.value.code == Code.UNIMPLEMENTED
    assert malformed.value.code == Code.INVALID_ARGUMENT


async def test_copy_file_of_one_mebibyte(tunnel: Tunnel) -> None:
    data = bytes(range(256)) * 4096
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        request = agent_pb2.CopyFileRequest(path="/etc/big", file_size=len(data), file_mode=0o600, data=data)
        await agent_call(client, "CopyFile", request, Empty)
    assert (tunnel.agent.root / "rootfs" / "etc" / "big").read_bytes() == data


async def test_forwarder_refuses_clients_without_our_certificate(tunnel: Tunnel, tmp_path: Path) -> None:
    no_cert = ssl.create_default_context(cadata=tunnel.authority.ca.cert_pem)
    stranger = TunnelAuthority.load_or_create(tmp_path / "stranger")
    foreign_cert = client_context(
        stranger.client.cert_pem, stranger.client.key_pem, tunnel.authority.ca.cert_pem
    )
    for context in (no_cert, foreign_cert):
        with pytest.raises((ssl.SSLError, ConnectionError, TtrpcError)):
            client = await Client.connect_tcp("127.0.0.1", tunnel.port, context, server_hostname=INSTANCE)
            await client.call(HEALTH_SERVICE, "Check", b"", timeout=5)


@pytest.mark.parametrize("case", ["foreign-ca", "other-instance"])
async def test_proxy_refuses_servers_without_our_certificate(
    tunnel: Tunnel, tmp_path: Path, case: str
) -> None:
    authority = tunnel.authority
    if case == "foreign-ca":
        vm = TunnelAuthority.load_or_create(tmp_path / "stranger").issue_server(INSTANCE)
    else:
        vm = authority.issue_server("podvm-someone-else")
    impostor, upstream, port = await start_forwarder(
        "127.0.0.1",
        0,
        tunnel.agent_socket,
        server_context(vm.cert_pem, vm.key_pem, authority.client.cert_pem),
    )
    tls = client_context(authority.client.cert_pem, authority.client.key_pem, authority.ca.cert_pem)
    proxy = AgentProxy(tmp_path / "p.sock", "127.0.0.1", port, INSTANCE, tls, dial_timeout_s=0.5)
    with pytest.raises(TtrpcError) as info:
        await proxy.connect()
    assert info.value.code == Code.UNAVAILABLE
    assert "certificate" in info.value.message.lower()
    await proxy.close()
    await impostor.close()
    await upstream.close()


async def test_forwarder_dials_a_late_agent_lazily(tmp_path: Path, dial_retries: LogEvents) -> None:
    """The forwarder listens before kata-agent is up; the first call waits for the agent to appear."""
    authority = TunnelAuthority.load_or_create(tmp_path / "state")
    vm = authority.issue_server(INSTANCE)
    agent_socket = tmp_path / "late.sock"
    forwarder, upstream, port = await start_forwarder(
        "127.0.0.1", 0, agent_socket, server_context(vm.cert_pem, vm.key_pem, authority.client.cert_pem)
    )
    tls = client_context(authority.client.cert_pem, authority.client.key_pem, authority.ca.cert_pem)
    async with await Client.connect_tcp("127.0.0.1", port, tls, server_hostname=INSTANCE) as client:
        call = asyncio.ensure_future(
            client.unary(
                HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=20
            )
        )
        await dial_retries.seen()  # the call is in and the forwarder found no agent
        assert not call.done()
        agent = StandinAgent(tmp_path / "agent")
        agent_server = Server(agent.services())
        await agent_server.listen_unix(agent_socket)
        assert (await call).status == health_pb2.HealthCheckResponse.SERVING
    await forwarder.close()
    await upstream.close()
    await agent_server.close()
