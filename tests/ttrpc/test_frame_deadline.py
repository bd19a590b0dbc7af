"""Slow clients: a frame once started must complete within the deadline; idle connections may stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.proto import ttrpc_pb2
from protocols.ttrpc.envelope import encode_request
from protocols.ttrpc.frames import MAX_PAYLOAD, MessageType, encode_frame
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code
from tests.ttrpc.conftest import SERVICES, RawPeer

DEADLINE_S = 0.2


@pytest.fixture
async def strict_socket(tmp_path: Path) -> AsyncIterator[Path]:
    server = Server(SERVICES, frame_deadline_s=DEADLINE_S)
    path = tmp_path / "strict.sock"
    await server.listen_unix(path)
    yield path
    await server.close()


async def closed_by_server(peer: RawPeer) -> bytes:
    """Everything the server sent until it closed the connection (bounded far above the deadline)."""
    received = b""
    async with asyncio.timeout(30):
        while chunk := await peer.reader.read(65536):
            received += chunk
    return received


def echo_frame(stream_id: int, payload: bytes) -> bytes:
    return encode_frame(stream_id, MessageType.REQUEST, encode_request("test.Echo", "Echo", payload))


async def test_a_partial_header_is_dropped_after_the_deadline(strict_socket: Path) -> None:
    peer = await RawPeer.connect(strict_socket)
    peer.writer.write(echo_frame(1, b"x")[:5])
    assert await closed_by_server(peer) == b""
    await peer.close()


async def test_a_partial_payload_is_dropped_after_the_deadline(strict_socket: Path) -> None:
    peer = await RawPeer.connect(strict_socket)
    peer.writer.write(echo_frame(1, b"complete"))
    assert (await peer.receive()).stream_id == 1
    peer.writer.write(echo_frame(3, b"never finished")[:-3])
    assert await closed_by_server(peer) == b""
    await peer.close()


async def test_an_oversized_frame_being_skipped_is_timed_too(strict_socket: Path) -> None:
    peer = await RawPeer.connect(strict_socket)
    length = MAX_PAYLOAD + 10
    peer.writer.write(length.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00" + b"z" * 100)
    (refusal,) = peer.decoder.feed(await closed_by_server(peer))
    assert ttrpc_pb2.Response.FromString(refusal.payload).status.code == Code.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
    await peer.close()


async def test_idle_connections_are_kept(strict_socket: Path) -> None:
    idle = await RawPeer.connect(strict_socket)
    idle.send(1, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"first"))
    assert ttrpc_pb2.Response.FromString((await idle.receive()).payload).payload == b"first"
    slow = await RawPeer.connect(strict_socket)
    slow.writer.write(b"\x00")
    await closed_by_server(slow)  # a deadline has passed while `idle` sent nothing
    idle.send(3, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"still here"))
    assert ttrpc_pb2.Response.FromString((await idle.receive()).payload).payload == b"still here"
    await slow.close()
    await idle.close()


async def test_a_frame_split_across_writes_within_the_deadline_is_served(tmp_path: Path) -> None:
    server = Server(SERVICES, frame_deadline_s=30)
    await server.listen_unix(tmp_path / "s.sock")
    peer = await RawPeer.connect(tmp_path / "s.sock")
    first, second = echo_frame(1, b"one"), echo_frame(3, b"two")
    peer.writer.write(first + second[:4])
    assert (await peer.receive()).stream_id == 1
    peer.writer.write(second[4:])
    assert ttrpc_pb2.Response.FromString((await peer.receive()).payload).payload == b"two"
    await peer.close()
    await server.close()
