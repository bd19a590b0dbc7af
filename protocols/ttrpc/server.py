"""asyncio ttrpc server: many concurrent unary calls per connection, replies in any order.

The connection validates frames and stream ids itself (odd and increasing, as Go's server does),
answers protocol faults on the offending stream only, and hands each valid call to `dispatch`.
Plain servers run a handler task per call; the relay overrides `dispatch` to forward instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar, cast

from google.protobuf.message import Message

from protocols.ttrpc.envelope import Call, decode_message, decode_request, encode_response, error_frame
from protocols.ttrpc.frames import (
    MAX_PAYLOAD,
    Flags,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MessageType,
)
from protocols.ttrpc.status import Code, TtrpcError
from protocols.ttrpc.writer import CoalescingWriter

log = logging.getLogger(__name__)

Handler = Callable[[Call], Awaitable[bytes]]
Services = Mapping[str, Mapping[str, Handler]]

# A frame once started must be whole within this many seconds, or the connection is closed: a client
# that trickles bytes must not hold a connection and a buffer forever. Idle connections between
# frames are fine (the shim keeps its agent connection for the pod's life).
FRAME_DEADLINE_S = 30.0

RequestT = TypeVar("RequestT", bound=Message)

# Plain ints for the per-frame checks: operators on IntFlag members run Python code in enum.py.
REQUEST, RESPONSE, DATA = int(MessageType.REQUEST), int(MessageType.RESPONSE), int(MessageType.DATA)
REMOTE_OPEN = int(Flags.REMOTE_OPEN)


def unary(request_type: type[RequestT], handler: Callable[[RequestT, Call], Awaitable[Message]]) -> Handler:
    """Adapt a handler over decoded protobuf messages to the raw-bytes `Handler` shape."""

    async def handle(call: Call) -> bytes:
        request = decode_message(request_type, call.payload, Code.INTERNAL)
        response = await handler(request, call)
        return response.SerializeToString()

    return handle


class ServerConnection(asyncio.Protocol):
    """One client connection. Subclasses may override `dispatch` and `lookup`."""

    def __init__(self, services: Services, frame_deadline_s: float | None = FRAME_DEADLINE_S) -> None:
        self.services = services
        self.transport: asyncio.Transport | None = None
        self._writer: CoalescingWriter | None = None
        self._decoder = FrameDecoder()
        self._last_stream_id = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._frame_deadline_s = frame_deadline_s
        self._frame_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self._writer = CoalescingWriter(self.transport)

    def data_received(self, data: bytes) -> None:
        events = self._decoder.feed(data)
        self._watch_frame(restart=bool(events))
        for event in events:
            if isinstance(event, Frame):
                self._frame_received(event)
            elif event.type == MessageType.REQUEST:
                message = f"message length {event.length} exceed maximum message size of {MAX_PAYLOAD}"
                log.warning("refusing oversized request on stream %d: %s", event.stream_id, message)
                self.send(error_frame(event.stream_id, TtrpcError(Code.RESOURCE_EXHAUSTED, message)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._writer = None
        self._stop_frame_timer()
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
            self._stop_frame_timer()  # the frame cannot progress while we do not read

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()
            self._watch_frame(restart=True)

    # the deadline of an incomplete frame

    def mid_frame(self) -> bool:
        """Whether a frame has started and not ended."""
        return self._decoder.mid_frame

    def _watch_frame(self, restart: bool) -> None:
        """Time the frame in progress; `restart` when it began just now (the previous one ended)."""
        if not self.mid_frame() or self._frame_deadline_s is None:
            self._stop_frame_timer()
        elif restart or self._frame_timer is None:
            self._stop_frame_timer()
            loop = asyncio.get_running_loop()
            self._frame_timer = loop.call_later(self._frame_deadline_s, self._frame_expired)

    def _stop_frame_timer(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _frame_expired(self) -> None:
        self._frame_timer = None
        if self.transport is not None:
            log.warning(
                "dropping a connection: a frame was still incomplete after %gs", self._frame_deadline_s
            )
            self.transport.abort()  # not close(): a client this slow may not read what is queued either

    # framing

    def send(self, frame: bytes) -> None:
        if self._writer is not None:
            self._writer.write(frame)

    def send_response(self, stream_id: int, response: bytes) -> None:
        """An encoded Response; a large one is written after its header without being copied."""
        if self._writer is not None:
            self._writer.write_frame(stream_id, RESPONSE, response)

    def reply(self, stream_id: int, payload: bytes) -> None:
        try:
            self.send_response(stream_id, encode_response(payload))
        except FrameTooLarge as exc:
            self.send(error_frame(stream_id, TtrpcError(Code.RESOURCE_EXHAUSTED, str(exc))))

    def _frame_received(self, frame: Frame) -> None:
        if frame.type == REQUEST:
            try:
                self.accept_stream(frame.stream_id, frame.flags)
                call = self.parse_request(frame.payload)
                self.lookup(call)
            except TtrpcError as exc:
                self.send(error_frame(frame.stream_id, exc))
                return
            self.dispatch(frame.stream_id, call, frame.payload)
        elif frame.type == DATA and not self.is_active(frame.stream_id):
            error = TtrpcError(Code.INVALID_ARGUMENT, "StreamID is no longer active")
            self.send(error_frame(frame.stream_id, error))
        # Responses from a client, Data on unary streams and unknown types are ignored, as upstream.

    def accept_stream(self, stream_id: int, flags: int) -> None:
        """The stream id rules of a new Request (odd, increasing) and no streaming calls."""
        if stream_id % 2 == 0:
            raise TtrpcError(Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
        if stream_id <= self._last_stream_id:
            raise TtrpcError(Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
        self._last_stream_id = stream_id
        if flags & REMOTE_OPEN:
            raise TtrpcError(Code.UNIMPLEMENTED, "streaming calls are not supported")

    def parse_request(self, data: bytes) -> Call:
        return decode_request(data)

    def lookup(self, call: Call) -> Handler:
        methods = self.services.get(call.service)
        if methods is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"service {call.service}")
        handler = methods.get(call.method)
        if handler is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"method {call.method}")
        return handler

    def is_active(self, stream_id: int) -> bool:
        return stream_id in self._tasks

    # calls

    def dispatch(self, stream_id: int, call: Call, raw_request: bytes) -> None:
        """Run the handler in its own task so slow calls never hold up the others."""
        self._tasks[stream_id] = asyncio.get_running_loop().create_task(self._run(stream_id, call))

    async def _run(self, stream_id: int, call: Call) -> None:
        handler = self.lookup(call)
        remaining = call.remaining()
        try:
            if remaining is None:  # no timeout context: it costs more than a small call's handler
                payload = await handler(call)
            else:
                async with asyncio.timeout(remaining):
                    payload = await handler(call)
        except TtrpcError as exc:
            self.send(error_frame(stream_id, exc))
        except TimeoutError:
            self.send(error_frame(stream_id, TtrpcError(Code.DEADLINE_EXCEEDED, "timeout")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s/%s failed", call.service, call.method)
            self.send(error_frame(stream_id, TtrpcError(Code.UNKNOWN, str(exc) or type(exc).__name__)))
        else:
            self.reply(stream_id, payload)
        finally:
            self._tasks.pop(stream_id, None)


ConnectionFactory = Callable[[], asyncio.Protocol]

# The Go shim opens a connection per hypervisor call: hundreds of pods starting at once must queue,
# not be refused (asyncio's default backlog is 100). Go servers listen with SOMAXCONN too.
BACKLOG = socket.SOMAXCONN


class Server:
    """Listens on unix or TCP(+TLS) sockets and serves `services` on every connection."""

    def __init__(
        self,
        services: Services | None = None,
        factory: ConnectionFactory | None = None,
        frame_deadline_s: float | None = FRAME_DEADLINE_S,
    ) -> None:
        self._new_connection: ConnectionFactory = factory or (
            lambda: ServerConnection(services or {}, frame_deadline_s)
        )
        self._listeners: list[asyncio.Server] = []
        self._connections: weakref.WeakSet[asyncio.Protocol] = weakref.WeakSet()

    def _factory(self) -> asyncio.Protocol:
        connection = self._new_connection()
        self._connections.add(connection)
        return connection

    async def listen_unix(self, path: str | Path, mode: int = 0o660) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = await asyncio.get_running_loop().create_unix_server(
            self._factory, str(path), backlog=BACKLOG
        )
        path.chmod(mode)
        self._listeners.append(listener)

    async def listen_tcp(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Returns the bound port (useful with port 0)."""
        listener = await asyncio.get_running_loop().create_server(
            self._factory, host, port, ssl=tls, backlog=BACKLOG
        )
        self._listeners.append(listener)
        bound: int = listener.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        for connection in list(self._connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
