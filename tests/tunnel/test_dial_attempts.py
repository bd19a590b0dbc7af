"""The adaptor's first dial to a booting pod VM: a dial that hangs is abandoned and dialled afresh.

QEMU's user-mode network accepts the adaptor's TCP connection at once and relays it to the VM; while
the VM's network is not up that relay waits for SYN retransmissions, and a TLS handshake over it
hangs (asyncio would wait 60 s for it). The relay here plays that: its first connection is never
answered, later ones reach the real forwarder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor.tunnel.proxy import AgentProxy
from protocols.tunnel_tls import client_context
from tests.relaying import pipe
from tests.tunnel.conftest import INSTANCE, Tunnel


class StallingRelay:
    """A loopback port whose first connection hangs and whose later ones are relayed to `target`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if self.connections == 1:
            return  # held open, never answered
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()


@pytest.fixture
async def relay(tunnel: Tunnel) -> AsyncIterator[tuple[StallingRelay, int]]:
    relay = StallingRelay(tunnel.port)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    yield relay, server.sockets[0].getsockname()[1]
    relay.close()
    server.close()
    await server.wait_closed()


async def test_a_hanging_first_dial_is_abandoned_for_a_fresh_one(
    tunnel: Tunnel, relay: tuple[StallingRelay, int], tmp_path: Path
) -> None:
    stalling, port = relay
    authority = tunnel.authority
    tls = client_context(authority.client.cert_pem, authority.client.key_pem, authority.ca.cert_pem)
    proxy = AgentProxy(
        tmp_path / "stalled.sock",
        "127.0.0.1",
        port,
        INSTANCE,
        tls,
        dial_timeout_s=30,
        dial_attempt_timeout_s=0.2,
    )
    try:
        await proxy.connect()  # before: the first handshake held the dial until the 30 s ran out
    finally:
        await proxy.close()
    assert stalling.connections == 2
