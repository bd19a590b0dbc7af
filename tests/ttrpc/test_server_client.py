"""The asyncio server and client: concurrency, deadlines and every protocol fault."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from protocols.proto import ttrpc_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.envelope import Call, encode_request
from protocols.ttrpc.frames import MAX_PAYLOAD, Flags, MessageType
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code, TtrpcError
from tests.ttrpc.conftest import RawPeer


def status_of(payload: bytes) -> tuple[int, str]:
    response = ttrpc_pb2.Response.FromString(payload)
    return response.status.code, response.status.message


async def test_unary_call(echo_socket: Path) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        assert await client.call("test.Echo", "Echo", b"hello") == b"hello"


async def test_hundred_concurrent_calls_reply_out_of_order(tmp_path: Path) -> None:
    """All 100 calls are in the server at once; each reply goes out as soon as its handler ends."""
    gates = [asyncio.Event() for _ in range(100)]
    inside = 0
    all_inside = asyncio.Event()

    async def gated(call: Call) -> bytes:
        nonlocal inside
        inside += 1
        if inside == len(gates):
            all_inside.set()
        await gates[int(call.payload)].wait()
        return call.payload

    server = Server({"test.Echo": {"Gated": gated}})
    await server.listen_unix(tmp_path / "s.sock")
    order = list(range(100))
    random.Random(7).shuffle(order)
    async with await Client.connect_unix(tmp_path / "s.sock") as client:
        calls = {
            i: asyncio.ensure_future(client.call("test.Echo", "Gated", str(i).encode())) for i in range(100)
        }
        await all_inside.wait()
        for index in order:
            gates[index].set()
            assert await calls[index] == str(index).encode()
            assert not any(calls[i].done() for i in order[order.index(index) + 1 :])
    await server.close()


async def test_server_enforces_timeout_nano(echo_socket: Path) -> None:
    peer = await RawPeer.connect(echo_socket)
    peer.send(1, MessageType.REQUEST, encode_request("test.Echo", "Sleep", b"5000", timeout_nano=50_000_000))
    frame = await peer.receive()
    assert (frame.stream_id, status_of(frame.payload)) == (1, (Code.DEADLINE_EXCEEDED, "timeout"))
    await peer.close()


async def test_client_deadline(echo_socket: Path) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("test.Echo", "Sleep", b"5000", timeout=0.05)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        assert await client.call("test.Echo", "Echo", b"still fine") == b"still fine"


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [("test.Nope", "Echo", "service test.Nope"), ("test.Echo", "Nope", "method Nope")],
)
async def test_unknown_service_or_method(echo_socket: Path, service: str, method: str, message: str) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call(service, method, b"")
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, message)


async def test_handler_errors_map_to_status(echo_socket: Path) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        with pytest.raises(TtrpcError) as failed:
            await client.call("test.Echo", "Fail", b"")
        with pytest.raises(TtrpcError) as crashed:
            await client.call("test.Echo", "Crash", b"")
    assert (failed.value.code, failed.value.message) == (Code.NOT_FOUND, "no such thing")
    assert (crashed.value.code, crashed.value.message) == (Code.UNKNOWN, "handler bug")


async def test_metadata_is_carried(echo_socket: Path) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        result = await client.call(
            "test.Echo", "Metadata", b"", metadata=[("traceparent", "00-ab"), ("k", "v")]
        )
    assert result == b"traceparent=00-ab;k=v"


async def test_stream_id_rules(echo_socket: Path) -> None:
    peer = await RawPeer.connect(echo_socket)
    echo = encode_request("test.Echo", "Echo", b"x")
    peer.send(2, MessageType.REQUEST, echo)
    frame = await peer.receive()
    assert status_of(frame.payload) == (
        Code.INVALID_ARGUMENT,
        "StreamID must be odd for client initiated streams",
    )
    peer.send(5, MessageType.REQUEST, echo)
    assert status_of((await peer.receive()).payload)[0] == Code.OK
    peer.send(3, MessageType.REQUEST, echo)
    frame = await peer.receive()
    assert (frame.stream_id, status_of(frame.payload)) == (
        3,
        (Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"),
    )
    peer.send(7, MessageType.REQUEST, echo)
    assert (await peer.receive()).stream_id == 7
    await peer.close()


async def test_oversized_frame_answered_while_other_streams_go_on(echo_socket: Path) -> None:
    peer = await RawPeer.connect(echo_socket)
    peer.send(1, MessageType.REQUEST, encode_request("test.Echo", "Sleep", b"200"))
    length = MAX_PAYLOAD + 10
    peer.writer.write(length.to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x01\x00" + b"z" * length)
    peer.send(5, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"after"))
    replies = {}
    for _ in range(3):
        frame = await peer.receive()
        replies[frame.stream_id] = frame.payload
    assert status_of(replies[3]) == (
        Code.RESOURCE_EXHAUSTED,
        f"message length {length} exceed maximum message size of {MAX_PAYLOAD}",
    )
    assert ttrpc_pb2.Response.FromString(replies[1]).payload == b"200"
    assert ttrpc_pb2.Response.FromString(replies[5]).payload == b"after"
    await peer.close()


async def test_malformed_request_then_connection_goes_on(echo_socket: Path) -> None:
    peer = await RawPeer.connect(echo_socket)
    peer.send(1, MessageType.REQUEST, b"\x0a\xff\xff\xff")
    assert status_of((await peer.receive()).payload)[0] == Code.INVALID_ARGUMENT
    peer.send(3, MessageType.DATA, b"stray")
    assert status_of((await peer.receive()).payload) == (
        Code.INVALID_ARGUMENT,
        "StreamID is no longer active",
    )
    peer.send(5, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"x"), flags=Flags.REMOTE_OPEN)
    assert status_of((await peer.receive()).payload)[0] == Code.UNIMPLEMENTED
    peer.send(7, 9, b"unknown type is ignored")
    peer.send(9, MessageType.REQUEST, encode_request("test.Echo", "Echo", b"alive"))
    frame = await peer.receive()
    assert frame.stream_id == 9
    assert ttrpc_pb2.Response.FromString(frame.payload).payload == b"alive"
    await peer.close()


async def test_truncated_frame_does_not_hurt_the_server(echo_socket: Path) -> None:
    peer = await RawPeer.connect(echo_socket)
    peer.writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x01\x01\x00partial")
    await peer.close()
    async with await Client.connect_unix(echo_socket) as client:
        assert await client.call("test.Echo", "Echo", b"next") == b"next"


async def test_lost_connection_fails_pending_calls(tmp_path: Path) -> None:
    hanging = asyncio.Event()

    async def hang(call: Call) -> bytes:
        hanging.set()
        await asyncio.Event().wait()
        return b""

    server = Server({"test.Echo": {"Hang": hang}})
    await server.listen_unix(tmp_path / "s.sock")
    client = await Client.connect_unix(tmp_path / "s.sock")
    pending = asyncio.ensure_future(client.call("test.Echo", "Hang", b""))
    await hanging.wait()
    await server.close()
    with pytest.raises(TtrpcError) as info:
        await pending
    assert info.value.code == Code.UNAVAILABLE
    with pytest.raises(TtrpcError):
        await client.call("test.Echo", "Hang", b"")


async def test_client_refuses_oversized_request(echo_socket: Path) -> None:
    async with await Client.connect_unix(echo_socket) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("test.Echo", "Echo", b"x" * MAX_PAYLOAD)
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert await client.call("test.Echo", "Echo", b"y" * (1 << 20)) == b"y" * (1 << 20)
