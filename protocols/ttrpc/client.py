"""asyncio ttrpc client: one connection, many concurrent calls, replies matched by stream id.

`call` is the typed-free unary call; `start_raw` is the callback form the relay uses to forward
an already-encoded Request and pass the Response bytes back untouched.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar, cast

from google.protobuf.message import Message

from protocols.ttrpc.envelope import decode_message, decode_response, encode_request
from protocols.ttrpc.frames import Frame, FrameDecoder, FrameTooLarge, MessageType
from protocols.ttrpc.status import Code, TtrpcError
from protocols.ttrpc.writer import CoalescingWriter

log = logging.getLogger(__name__)

# Called with the raw Response bytes, or with the error that ended the stream.
RawCallback = Callable[[bytes | None, TtrpcError | None], None]

ResponseT = TypeVar("ResponseT", bound=Message)

CLOSED = "ttrpc: closed"
REQUEST, RESPONSE = int(MessageType.REQUEST), int(MessageType.RESPONSE)  # ints: cheaper than enum members


class ClientConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._writer: CoalescingWriter | None = None
        self._decoder = FrameDecoder()
        self._next_stream_id = 1
        self._pending: dict[int, RawCallback] = {}
        self._closed = asyncio.get_running_loop().create_future()
        self.lost_because = ""  # why the connection ended, once it has
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self._writer = CoalescingWriter(self.transport)

    def data_received(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            callback = self._pending.pop(event.stream_id, None)
            if callback is None:
                log.debug("response on inactive stream %d ignored", event.stream_id)
            elif isinstance(event, Frame):
                if event.type == RESPONSE:
                    callback(event.payload, None)
                else:
                    callback(None, TtrpcError(Code.INTERNAL, f"unexpected message type {event.type}"))
            else:
                message = f"response of {event.length} bytes exceeds the message size limit"
                callback(None, TtrpcError(Code.RESOURCE_EXHAUSTED, message))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._writer = None
        pending, self._pending = self._pending, {}
        self.lost_because = "closed by the peer" if exc is None else str(exc) or type(exc).__name__
        error = TtrpcError(Code.UNAVAILABLE, CLOSED if exc is None else f"{CLOSED}: {exc}")
        for callback in pending.values():
            callback(None, error)
        self._writable.set()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    @property
    def is_closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        await self._writable.wait()

    async def wait_closed(self) -> None:
        await self._closed

    def start_raw(self, request: bytes, callback: RawCallback) -> int:
        """Send an encoded Request on a new stream; `callback` gets its Response. Returns the stream id."""
        if self._writer is None or self.is_closed:
            raise TtrpcError(Code.UNAVAILABLE, CLOSED)
        stream_id = self._next_stream_id
        try:
            self._writer.write_frame(stream_id, REQUEST, request)
        except FrameTooLarge as exc:
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, str(exc)) from None
        self._next_stream_id += 2
        self._pending[stream_id] = callback
        return stream_id

    def open_stream(self, callback: RawCallback) -> tuple[int, CoalescingWriter]:
        """A new stream whose Request the caller writes itself (a relay cutting a frame through)."""
        if self._writer is None or self.is_closed:
            raise TtrpcError(Code.UNAVAILABLE, CLOSED)
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        self._pending[stream_id] = callback
        return stream_id, self._writer

    @property
    def writer_held(self) -> bool:
        """Whether a frame is being cut through this connection right now."""
        return self._writer is not None and self._writer.held

    def forget(self, stream_id: int) -> None:
        """Stop waiting for a stream (its caller gave up); a late reply is ignored."""
        self._pending.pop(stream_id, None)


class Client:
    """A ttrpc client over one connection."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def connect_unix(cls, path: str | Path) -> Client:
        _, connection = await asyncio.get_running_loop().create_unix_connection(ClientConnection, str(path))
        return cls(connection)

    @classmethod
    async def connect_tcp(
        cls, host: str, port: int, tls: ssl.SSLContext | None = None, server_hostname: str | None = None
    ) -> Client:
        _, connection = await asyncio.get_running_loop().create_connection(
            ClientConnection, host, port, ssl=tls, server_hostname=server_hostname if tls else None
        )
        return cls(connection)

    @property
    def is_closed(self) -> bool:
        return self.connection.is_closed

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """One unary call; raises TtrpcError (DEADLINE_EXCEEDED when `timeout` seconds pass)."""
        timeout_nano = int(timeout * 1e9) if timeout else 0
        request = encode_request(service, method, payload, timeout_nano, metadata)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def done(response: bytes | None, error: TtrpcError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert response is not None
                future.set_result(response)

        if not self.connection.writable:
            await self.connection.wait_writable()
        stream_id = self.connection.start_raw(request, done)
        try:
            if timeout is None:  # no timeout context: it costs more than a small call's round trip
                response = await future
            else:
                async with asyncio.timeout(timeout):
                    response = await future
        except TimeoutError:
            self.connection.forget(stream_id)
            raise TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded") from None
        except asyncio.CancelledError:
            self.connection.forget(stream_id)
            raise
        return decode_response(response)

    async def unary(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        timeout: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> ResponseT:
        payload = await self.call(service, method, request.SerializeToString(), timeout, metadata)
        return decode_message(response_type, payload, Code.INTERNAL)

    async def close(self) -> None:
        transport = self.connection.transport
        if transport is not None:
            transport.close()
        await self.connection.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
