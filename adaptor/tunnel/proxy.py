"""The per-pod agent proxy: the shim's agent socket on one side, the pod VM's forwarder on the other.

The Kata shim dials the unix socket and speaks the agent API as if the agent were local; every
call goes over one mutually authenticated TLS connection to the forwarder at <vm-ip>:15150.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from adaptor.metrics import TUNNEL_REDIALS
from protocols.agent import AGENT_METHODS
from protocols.ttrpc.client import Client
from protocols.ttrpc.relay import Interceptor, RelayConnection, Upstream
from protocols.ttrpc.server import Server

log = logging.getLogger(__name__)

SOCKET_NAME = "agent.ttrpc"
# A pod VM reached once and gone since fails the next agent call after this long, not PROXY_TIMEOUT.
REDIAL_TIMEOUT_S = 5.0
# One dial that hangs is abandoned after this long and dialled afresh: a connection QEMU's user-mode
# network relays to a VM whose network is not up yet waits for SYN retransmissions (seconds), and a
# cloud VM still booting drops SYNs; a fresh dial reaches a forwarder that has just started
# listening at once. Long enough for a TLS handshake with a forwarder in an emulated VM.
DIAL_ATTEMPT_TIMEOUT_S = 2.0
# At most this long between failed dials (plus up to 50 ms of jitter): the dial loop adds at most
# about 0.1 s to the moment the forwarder listens. A failed dial to a port not yet open costs one
# TCP connect; a booting pod VM is dialled a few hundred times in a 20 s emulated boot.
MAX_DIAL_BACKOFF_S = 0.05


class AgentProxy:
    def __init__(
        self,
        socket_path: Path,
        host: str,
        port: int,
        server_name: str,
        tls: ssl.SSLContext,
        dial_timeout_s: float,
        interceptors: Mapping[tuple[str, str], Interceptor] | None = None,
        redial_timeout_s: float = REDIAL_TIMEOUT_S,
        resumed: bool = False,
        dial_attempt_timeout_s: float = DIAL_ATTEMPT_TIMEOUT_S,
    ) -> None:
        """`resumed`: the pod VM was reached before this process started (redial, not a first dial)."""
        self.socket_path = socket_path
        self._dial_timeout_s = dial_timeout_s

        connected_once = resumed  # a resumed tunnel's first dial is a redial too

        async def dial() -> Client:
            nonlocal connected_once
            if connected_once:
                TUNNEL_REDIALS.inc()
            async with asyncio.timeout(dial_attempt_timeout_s):
                client = await Client.connect_tcp(host, port, tls, server_hostname=server_name)
            connected_once = True
            return client

        name = f"pod VM {server_name} at {host}:{port}"
        # Backoff capped at MAX_DIAL_BACKOFF_S (upstream caps at 5 s): a booting pod VM is dialled
        # cheaply, and a long last wait would add up to the cap to every pod start.
        self.upstream = Upstream(
            dial,
            timeout_s=dial_timeout_s,
            max_backoff_s=MAX_DIAL_BACKOFF_S,
            name=name,
            redial_timeout_s=redial_timeout_s,
            connected=resumed,
        )
        self._server = Server(factory=lambda: RelayConnection(self.upstream, AGENT_METHODS, interceptors))

    async def start(self) -> None:
        """Listen on the agent socket (only root and the shim's group may connect)."""
        await self._server.listen_unix(self.socket_path)

    async def connect(self) -> None:
        """Dial the pod VM, retrying with backoff until the dial timeout; raises TtrpcError UNAVAILABLE."""
        await self.upstream.get(self._dial_timeout_s)
        log.info("agent tunnel up: %s", self.socket_path)

    async def close(self) -> None:
        await self._server.close()
        await self.upstream.close()
        self.socket_path.unlink(missing_ok=True)
