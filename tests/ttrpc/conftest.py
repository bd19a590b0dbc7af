"""A small echo service on a unix socket, and a raw-frame peer to poke the server with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.ttrpc.envelope import Call
from protocols.ttrpc.frames import Frame, FrameDecoder, OversizedFrame, encode_frame
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code, TtrpcError


async def echo(call: Call) -> bytes:
    return call.payload


async def sleep(call: Call) -> bytes:
    await asyncio.sleep(int(call.payload or b"0") / 1000)
    return call.payload


async def fail(call: Call) -> bytes:
    raise TtrpcError(Code.NOT_FOUND, "no such thing")


async def crash(call: Call) -> bytes:
    raise ValueError("handler bug")


async def metadata(call: Call) -> bytes:
    return ";".join(f"{k}={v}" for k, v in call.metadata).encode()


SERVICES = {"test.Echo": {"Echo": echo, "Sleep": sleep, "Fail": fail, "Crash": crash, "Metadata": metadata}}


@pytest.fixture
async def echo_socket(tmp_path: Path) -> AsyncIterator[Path]:
    server = Server(SERVICES)
    path = tmp_path / "echo.sock"
    await server.listen_unix(path)
    yield path
    await server.close()


class RawPeer:
    """Writes arbitrary frames and reads back whatever the server sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.frames: list[Frame | OversizedFrame] = []

    @classmethod
    async def connect(cls, path: Path) -> RawPeer:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    def send(self, stream_id: int, message_type: int, payload: bytes, flags: int = 0) -> None:
        self.writer.write(encode_frame(stream_id, message_type, payload, flags))

    async def receive(self) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "server closed the connection"
            self.frames += self.decoder.feed(data)
        frame = self.frames.pop(0)
        assert isinstance(frame, Frame)
        return frame

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
