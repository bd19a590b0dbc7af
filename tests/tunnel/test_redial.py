"""A pod VM that is gone fails agent calls quickly; a pod VM still booting is waited for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor.tunnel.proxy import AgentProxy
from podvm.forwarder.service import start_forwarder
from protocols.agent import HEALTH_SERVICE
from protocols.proto import health_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError
from protocols.tunnel_tls import client_context, server_context
from tests.adaptor.conftest import free_port
from tests.tunnel.conftest import INSTANCE, LogEvents, Tunnel

PROXY_TIMEOUT_S = 300.0  # upstream's default: what a first dial may take
REDIAL_S = 0.5


async def check(socket: Path) -> health_pb2.HealthCheckResponse:
    async with await Client.connect_unix(socket) as client:
        return await client.unary(
            HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=60
        )


def proxy_to(tunnel: Tunnel, tmp_path: Path, port: int, resumed: bool = False) -> AgentProxy:
    authority = tunnel.authority
    tls = client_context(authority.client.cert_pem, authority.client.key_pem, authority.ca.cert_pem)
    return AgentProxy(
        tmp_path / "redial.sock",
        "127.0.0.1",
        port,
        INSTANCE,
        tls,
        dial_timeout_s=PROXY_TIMEOUT_S,
        redial_timeout_s=REDIAL_S,
        resumed=resumed,
    )


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts TCP connections and then never says a word (a TLS handshake hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_lost_pod_vm_fails_the_next_call_fast(tunnel: Tunnel, tmp_path: Path) -> None:
    proxy = proxy_to(tunnel, tmp_path, tunnel.port)
    await proxy.start()
    await proxy.connect()
    assert (await check(proxy.socket_path)).status == health_pb2.HealthCheckResponse.SERVING
    tunnel_connection = proxy.upstream.current
    assert tunnel_connection is not None
    await tunnel.forwarder.close()  # the pod VM is gone
    await tunnel_connection.connection.wait_closed()  # and the proxy has seen it go
    with pytest.raises(TtrpcError) as info:
        await check(proxy.socket_path)
    assert info.value.code == Code.UNAVAILABLE, info.value
    assert f"within {REDIAL_S:g}s" in info.value.message
    assert "connection lost" in info.value.message
    await proxy.close()


async def test_a_resumed_pod_vm_that_hangs_fails_fast(
    tunnel: Tunnel, tmp_path: Path, silent_port: int
) -> None:
    """After an adaptor restart the pod VM was reached before; one dial that hangs is bounded too."""
    proxy = proxy_to(tunnel, tmp_path, silent_port, resumed=True)
    await proxy.start()
    with pytest.raises(TtrpcError) as info:
        await check(proxy.socket_path)
    assert info.value.code == Code.UNAVAILABLE, info.value
    assert "dial timed out" in info.value.message
    await proxy.close()


async def test_the_first_dial_waits_for_a_booting_pod_vm_past_the_redial_bound(
    tunnel: Tunnel, tmp_path: Path, dial_retries: LogEvents
) -> None:
    port = free_port()
    proxy = proxy_to(tunnel, tmp_path, port)
    connecting = asyncio.ensure_future(proxy.connect())
    # Backoff from 50 ms doubling: four failed dials take longer than the redial bound.
    await dial_retries.seen(times=4)
    assert not connecting.done()
    vm = tunnel.authority.issue_server(INSTANCE)
    forwarder, upstream, _ = await start_forwarder(
        "127.0.0.1",
        port,
        tunnel.agent_socket,
        server_context(vm.cert_pem, vm.key_pem, tunnel.authority.client.cert_pem),
    )
    await connecting
    await proxy.start()
    assert (await check(proxy.socket_path)).status == health_pb2.HealthCheckResponse.SERVING
    await proxy.close()
    await forwarder.close()
    await upstream.close()


async def test_the_forwarder_fails_fast_once_the_agent_is_gone(tunnel: Tunnel, tmp_path: Path) -> None:
    """Inside the pod VM too: a kata-agent reached once and lost fails calls after the redial bound."""
    vm = tunnel.authority.issue_server(INSTANCE)
    forwarder, upstream, port = await start_forwarder(
        "127.0.0.1",
        0,
        tunnel.agent_socket,
        server_context(vm.cert_pem, vm.key_pem, tunnel.authority.client.cert_pem),
        agent_dial_timeout=PROXY_TIMEOUT_S,
        agent_redial_timeout=REDIAL_S,
    )
    proxy = proxy_to(tunnel, tmp_path, port)
    await proxy.start()
    await proxy.connect()
    assert (await check(proxy.socket_path)).status == health_pb2.HealthCheckResponse.SERVING
    agent_connection = upstream.current
    assert agent_connection is not None
    await tunnel.agent_server.close()
    await agent_connection.connection.wait_closed()
    with pytest.raises(TtrpcError) as info:
        await check(proxy.socket_path)
    assert info.value.code == Code.UNAVAILABLE, info.value
    assert f"cannot reach kata-agent at {tunnel.agent_socket} within {REDIAL_S:g}s" in info.value.message
    await proxy.close()
    await forwarder.close()
    await upstream.close()
