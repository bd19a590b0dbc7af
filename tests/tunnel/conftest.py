"""A whole agent tunnel in one process: stand-in agent <- forwarder (TLS) <- proxy <- shim socket.

Tests wait for events, never for time: `CallLog` says when a call has reached the agent, and
`LogEvents` when a component has logged something (a failed dial, say).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adaptor.tunnel.authority import TunnelAuthority
from adaptor.tunnel.proxy import AgentProxy
from podvm.forwarder.service import start_forwarder
from podvm.standin_agent.agent import StandinAgent
from protocols.ttrpc.envelope import Call
from protocols.ttrpc.relay import Upstream
from protocols.ttrpc.server import Handler, Server, Services
from protocols.tunnel_tls import client_context, server_context

INSTANCE = "podvm-test-12345678"
POD_NETNS = "/run/netns/podns"


@dataclass
class CallLog:
    """The agent's services, noting each call's method as it arrives."""

    methods: list[str] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def wrap(self, services: Services) -> Services:
        def noting(method: str, handler: Handler) -> Handler:
            async def handle(call: Call) -> bytes:
                self.methods.append(method)
                self._arrived.set()
                return await handler(call)

            return handle

        return {
            service: {method: noting(method, handler) for method, handler in methods.items()}
            for service, methods in services.items()
        }

    async def arrived(self, method: str) -> None:
        while method not in self.methods:
            self._arrived.clear()
            await self._arrived.wait()


class LogEvents(logging.Handler):
    """Counts the records of one logger whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = 0
        self._seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self._seen.set()

    async def seen(self, times: int = 1) -> None:
        while self.count < times:
            self._seen.clear()
            await self._seen.wait()


@pytest.fixture
def dial_retries() -> Iterator[LogEvents]:
    """Every failed dial of a relay's upstream that will be retried."""
    logger = logging.getLogger("protocols.ttrpc.relay")
    events = LogEvents("retrying failed connection")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(events)
    yield events
    logger.removeHandler(events)
    logger.setLevel(level)


@dataclass
class Tunnel:
    agent_socket: Path
    proxy_socket: Path
    port: int
    authority: TunnelAuthority
    agent: StandinAgent
    agent_calls: CallLog
    agent_server: Server
    forwarder: Server
    forwarder_upstream: Upstream
    proxy: AgentProxy


@pytest.fixture
async def tunnel(tmp_path: Path) -> AsyncIterator[Tunnel]:
    authority = TunnelAuthority.load_or_create(tmp_path / "state")
    agent = StandinAgent(tmp_path / "agent")
    agent_calls = CallLog()
    agent_server = Server(agent_calls.wrap(agent.services()))
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
        agent_calls,
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
