"""A whole agent tunnel in one process: stand-in agent <- forwarder (TLS) <- proxy <- shim socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptor.tunnel.authority import TunnelAuthority
from adaptor.tunnel.proxy import AgentProxy
from podvm.forwarder.service import start_forwarder
from podvm.standin_agent.agent import StandinAgent
from protocols.ttrpc.relay import Upstream
from protocols.ttrpc.server import Server
from protocols.tunnel_tls import client_context, server_context

INSTANCE = "podvm-test-12345678"
POD_NETNS = "/run/netns/podns"


@dataclass
class Tunnel:
    agent_socket: Path
    proxy_socket: Path
    port: int
    authority: TunnelAuthority
    agent: StandinAgent
    agent_server: Server
    forwarder: Server
    forwarder_upstream: Upstream
    proxy: AgentProxy


@pytest.fixture
async def tunnel(tmp_path: Path) -> AsyncIterator[Tunnel]:
    authority = TunnelAuthority.load_or_create(tmp_path / "state")
    agent = StandinAgent(tmp_path / "agent")
    agent_server = Server(agent.services())
    agent_socket = tmp_path / "agent.sock"
    await agent_server.listen_unix(agent_socket)
    vm = authority.issue_server(INSTANCE)
    forwarder, forwarder_upstream, port = await start_forwarder(
        "127.0.0.1",
        0,
        agent_socket,
        server_context(vm.cert_pem, vm.key_pem, authority.client.cert_pem),
        pod_namespace=POD_NETNS,
    )
    tls = client_context(authority.client.cert_pem, authority.client.key_pem, authority.ca.cert_pem)
    proxy = AgentProxy(tmp_path / "agent.ttrpc", "127.0.0.1", port, INSTANCE, tls, dial_timeout_s=5)
    await proxy.start()
    await proxy.connect()
    yield Tunnel(
        agent_socket,
        tmp_path / "agent.ttrpc",
        port,
        authority,
        agent,
        agent_server,
        forwarder,
        forwarder_upstream,
        proxy,
    )
    await proxy.close()
    await forwarder.close()
    await forwarder_upstream.close()
    await agent.close()
    await agent_server.close()
