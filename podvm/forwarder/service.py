"""The forwarder as a service: a ttrpc relay from the TLS listener to the kata-agent socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

from podvm.forwarder.interceptors import forwarder_interceptors
from protocols.agent import AGENT_METHODS
from protocols.ttrpc.client import Client
from protocols.ttrpc.relay import RelayConnection, Upstream
from protocols.ttrpc.server import Server

log = logging.getLogger(__name__)

DEFAULT_AGENT_SOCKET = "/run/kata-containers/agent.sock"
DEFAULT_PORT = 15150
AGENT_DIAL_TIMEOUT = 150.0
AGENT_SOCKET_POLL_S = 0.02
AGENT_SOCKET_POLLS = 50
# Once kata-agent was reached, losing it means the pod is broken: calls fail after this, not 150 s.
AGENT_REDIAL_TIMEOUT = 5.0


async def start_forwarder(
    host: str,
    port: int,
    agent_socket: Path,
    tls: ssl.SSLContext | None,
    pod_namespace: str = "",
    agent_dial_timeout: float = AGENT_DIAL_TIMEOUT,
    agent_redial_timeout: float = AGENT_REDIAL_TIMEOUT,
) -> tuple[Server, Upstream, int]:
    """Listen now; dial the agent lazily on the first call (it may still be starting)."""

    async def dial_agent() -> Client:
        # The agent starts beside the forwarder: its socket is tried every 20 ms for up to 1 s
        # within one dial (a failed dial would log a retry on the console, slow in an emulated VM),
        # and failed dials are retried every 0.1 s at most, so the first call waits for the agent,
        # not for a long backoff.
        for _ in range(AGENT_SOCKET_POLLS - 1):
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                return await Client.connect_unix(agent_socket)
            await asyncio.sleep(AGENT_SOCKET_POLL_S)
        return await Client.connect_unix(agent_socket)

    upstream = Upstream(
        dial_agent,
        timeout_s=agent_dial_timeout,
        max_backoff_s=0.1,
        name=f"kata-agent at {agent_socket}",
        redial_timeout_s=agent_redial_timeout,
    )
    interceptors = forwarder_interceptors(pod_namespace)
    server = Server(factory=lambda: RelayConnection(upstream, AGENT_METHODS, interceptors))
    bound = await server.listen_tcp(host, port, tls)
    log.info("forwarding %s:%d (%s) to %s", host, bound, "TLS" if tls else "plain TCP", agent_socket)
    return server, upstream, bound
