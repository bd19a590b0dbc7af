"""Cut-through relaying: a large Request goes upstream while it arrives, and never arrives half.

A relay in front of the echo server; raw peers write frames in pieces and wait, by polling the
relay's own state once per loop turn, until the relay is cutting the frame through.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ttrpc.client import Client
from protocols.ttrpc.envelope import Call, decode_response, encode_request, peek_head
from protocols.ttrpc.frames import HEADER, MAX_PAYLOAD, Frame, MessageType, encode_frame
from protocols.ttrpc.relay import RelayConnection, Upstream
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code, TtrpcError
from tests.ttrpc.conftest import SERVICES, RawPeer

METHODS = {"test.Echo": frozenset({"Echo", "Size"})}
LARGE = bytes(range(256)) * 4096  # 1 MiB


@dataclass
class Relayed:
    socket: Path
    connections: list[RelayConnection]
    echoed: list[bytes] = field(default_factory=list)  # payloads the upstream's handler ran with

    async def cutting(self, index: int = -1) -> RelayConnection:
        """The relay connection once a frame is being cut through it (the latest by default)."""
        while not self.connections or not self.connections[index].cutting:
            await asyncio.sleep(0)
        return self.connections[index]


@pytest.fixture
async def relayed(tmp_path: Path) -> AsyncIterator[Relayed]:
    echoed: list[bytes] = []

    async def echo(call: Call) -> bytes:
        echoed.append(call.payload)
        return call.payload

    async def size(call: Call) -> bytes:
        return str(len(call.payload)).encode()

    upstream_server = Server({"test.Echo": {**SERVICES["test.Echo"], "Echo": echo, "Size": size}})
    await upstream_server.listen_unix(tmp_path / "upstream.sock")
    upstream = Upstream(lambda: Client.connect_unix(tmp_path / "upstream.sock"), timeout_s=5)
    await upstream.get()
    connections: list[RelayConnection] = []

    def connection() -> RelayConnection:
        connections.append(RelayConnection(upstream, METHODS))
        return connections[-1]

    relay = Server(factory=connection)
    await relay.listen_unix(tmp_path / "relay.sock")
    yield Relayed(tmp_path / "relay.sock", connections, echoed)
    await relay.close()
    await upstream.close()
    await upstream_server.close()


def request_frame(stream_id: int, payload: bytes = LARGE, timeout_nano: int = 0) -> bytes:
    return encode_frame(
        stream_id, MessageType.REQUEST, encode_request("test.Echo", "Echo", payload, timeout_nano)
    )


async def test_a_large_request_goes_upstream_before_it_has_arrived_whole(relayed: Relayed) -> None:
    peer = await RawPeer.connect(relayed.socket)
    frame = request_frame(1, timeout_nano=30 * 10**9)
    half = len(frame) // 2
    peer.writer.write(frame[:half])
    await relayed.cutting()
    assert relayed.echoed == []
    peer.writer.write(frame[half:])
    reply = await peer.receive()
    assert (reply.stream_id, reply.type) == (1, MessageType.RESPONSE)
    assert decode_response(reply.payload) == LARGE
    assert relayed.echoed == [LARGE]
    assert not relayed.connections[-1].cutting
    await peer.close()


@pytest.mark.parametrize("timeout_nano", [0, 30 * 10**9], ids=["no tail", "with a deadline"])
async def test_a_sender_gone_mid_frame_never_makes_a_call_upstream(
    relayed: Relayed, timeout_nano: int
) -> None:
    peer = await RawPeer.connect(relayed.socket)
    frame = request_frame(1, timeout_nano=timeout_nano)
    peer.writer.write(frame[: len(frame) // 2])
    await relayed.cutting()
    await peer.close()
    # The same upstream connection carries the next call whole, and the cut frame never ran.
    async with await Client.connect_unix(relayed.socket) as client:
        assert await client.call("test.Echo", "Echo", b"after", timeout=10) == b"after"
    assert relayed.echoed == [b"after"]


async def test_an_oversized_request_is_refused_and_the_connection_goes_on(relayed: Relayed) -> None:
    peer = await RawPeer.connect(relayed.socket)
    peer.writer.write(HEADER.pack(MAX_PAYLOAD + 1, 1, MessageType.REQUEST, 0))
    for _ in range(4):
        peer.writer.write(bytes(MAX_PAYLOAD // 4))
    peer.writer.write(b"\0")
    reply = await peer.receive()
    with pytest.raises(TtrpcError) as refused:
        decode_response(reply.payload)
    assert refused.value.code == Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size" in refused.value.message
    peer.writer.write(request_frame(3))
    reply = await peer.receive()
    assert (reply.stream_id, decode_response(reply.payload)) == (3, LARGE)
    await peer.close()


async def test_a_request_of_exactly_the_limit_without_a_tail_is_stored_and_forwarded(
    relayed: Relayed,
) -> None:
    """Cut through, it would need two bytes more than the limit allows."""
    filler = MAX_PAYLOAD - len(encode_request("test.Echo", "Size", b"")) - 5  # key, 4-byte length
    request = encode_request("test.Echo", "Size", bytes(filler))
    assert len(request) == MAX_PAYLOAD
    peer = await RawPeer.connect(relayed.socket)
    peer.send(1, MessageType.REQUEST, request)
    assert decode_response((await peer.receive()).payload) == str(filler).encode()
    await peer.close()


async def test_calls_of_other_connections_wait_behind_a_frame_being_cut_through(relayed: Relayed) -> None:
    large = await RawPeer.connect(relayed.socket)
    frame = request_frame(1)
    large.writer.write(frame[: len(frame) // 3])
    cutting = await relayed.cutting()
    small = await RawPeer.connect(relayed.socket)
    small.send(1, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"small"))
    while len(relayed.connections) < 2 or 1 not in relayed.connections[-1].inflight:
        await asyncio.sleep(0)  # the small call is queued behind the large frame upstream
    assert relayed.echoed == []
    large.writer.write(frame[len(frame) // 3 :])
    large.writer.write(request_frame(3, b"next on the same connection"))
    assert decode_response((await small.receive()).payload) == b"small"
    first, second = await large.receive(), await large.receive()
    assert (first.stream_id, decode_response(first.payload)) == (1, LARGE)
    assert (second.stream_id, decode_response(second.payload)) == (3, b"next on the same connection")
    assert relayed.echoed == [LARGE, b"small", b"next on the same connection"]
    assert not cutting.cutting
    await large.close()
    await small.close()


@given(st.text(max_size=40), st.text(max_size=40), st.binary(min_size=1, max_size=300), st.integers(0, 2**40))
def test_peek_head_finds_where_the_payload_field_ends(
    service: str, method: str, payload: bytes, timeout_nano: int
) -> None:
    request = encode_request(service, method, payload, timeout_nano)
    tail = encode_request("", "", b"", timeout_nano)
    assert peek_head(request) == (service, method, len(request) - len(tail)) or not (service and method)


async def _relay_stream(tmp_path: Path, stream: bytes, cuts: list[int], expected: int) -> list[Frame]:
    """Write `stream` to a fresh relay in pieces cut at `cuts`; the first `expected` replies."""
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, tmp_path, True)
        upstream_server = Server(SERVICES)
        await upstream_server.listen_unix(tmp_path / "upstream.sock")
        stack.push_async_callback(upstream_server.close)
        upstream = Upstream(lambda: Client.connect_unix(tmp_path / "upstream.sock"), timeout_s=5)
        await upstream.get()
        stack.push_async_callback(upstream.close)
        relay = Server(factory=lambda: RelayConnection(upstream, METHODS))
        await relay.listen_unix(tmp_path / "relay.sock")
        stack.push_async_callback(relay.close)
        peer = await RawPeer.connect(tmp_path / "relay.sock")
        stack.push_async_callback(peer.close)
        position = 0
        for cut in [*sorted(cuts), len(stream)]:
            peer.writer.write(stream[position:cut])
            await peer.writer.drain()
            position = max(position, cut)
        return [await peer.receive() for _ in range(expected)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 10, 1000, 70_000, 300_000]), st.booleans()), min_size=1, max_size=5
    ),
    st.lists(st.integers(min_value=0, max_value=2_000_000), max_size=12),
)
def test_any_chunking_of_large_and_small_requests_relays_each_whole(
    tmp_path: Path, requests: list[tuple[int, bool]], cuts: list[int]
) -> None:
    payloads = [bytes([index]) * size for index, (size, _) in enumerate(requests)]
    stream = b"".join(
        request_frame(2 * index + 1, payload, 30 * 10**9 if deadline else 0)
        for index, (payload, (_, deadline)) in enumerate(zip(payloads, requests, strict=True))
    )
    cuts = [cut % (len(stream) + 1) for cut in cuts]
    replies = asyncio.run(_relay_stream(tmp_path / secrets.token_hex(4), stream, cuts, len(payloads)))
    assert sorted((reply.stream_id, decode_response(reply.payload)) for reply in replies) == [
        (2 * index + 1, payload) for index, payload in enumerate(payloads)
    ]
