"""HTTP/2 for the admission endpoint, chosen by ALPN; HTTP/1.1 clients keep aiohttp.

Why: the API server's webhook client speaks HTTP/2 when offered. Over HTTP/1.1 it opens one TLS
connection per concurrent admission request and keeps only a few idle, so a burst of pod creations
costs a TLS handshake each (measured: 200 pods at once added p99 600 ms, nearly all handshakes on
one Python core). Over HTTP/2 the burst shares one connection.

`AlpnDispatcher` is the listener's protocol: once TLS is up it hands the connection to the HTTP/2
protocol below or to aiohttp's request handler, by the negotiated protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 1000
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 26
# (method, path, body) -> (status, JSON body)
Handler = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]


@dataclass
class _Stream:
    method: str = ""
    path: str = ""
    body: bytearray = field(default_factory=bytearray)


class H2Protocol(asyncio.Protocol):
    def __init__(self, handle: Handler, max_body: int) -> None:
        self._handle = handle
        self._max_body = max_body
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self._streams: dict[int, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._window_open = asyncio.Event()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._conn.initiate_connection()
        # A burst of pod creations is one stream each: past the limit (h2's default 100) the client
        # opens another connection, a TLS handshake. The receive windows let such a burst of reviews
        # in without waiting for WINDOW_UPDATEs (the protocol's default: 64 KiB per connection).
        self._conn.update_settings({
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        })  # fmt: skip
        self._conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self._tasks:
            task.cancel()
        self._window_open.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from the client: %s", exc)
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            self._event(event)
        self._flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = dict(event.headers or [])
            self._streams[event.stream_id] = _Stream(
                _text(headers.get(b":method", b"")), _text(headers.get(b":path", b""))
            )
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None:
                stream.body += event.data or b""
                if len(stream.body) > self._max_body:
                    del self._streams[event.stream_id]
                    self._conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                task = asyncio.get_running_loop().create_task(self._answer(event.stream_id, stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(event, h2.events.StreamReset):
            self._streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated) and self._transport is not None:
            self._transport.close()

    async def _answer(self, stream_id: int, stream: _Stream) -> None:
        status, body = await self._handle(stream.method, stream.path, bytes(stream.body))
        headers = [
            (":status", str(status)),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        try:
            self._conn.send_headers(stream_id, headers)
            while body:
                window = min(
                    self._conn.local_flow_control_window(stream_id), self._conn.max_outbound_frame_size
                )
                if window <= 0:
                    self._window_open.clear()
                    self._flush()
                    await self._window_open.wait()
                    if self._transport is None or self._transport.is_closing():
                        return
                    continue
                self._conn.send_data(stream_id, body[:window])
                body = body[window:]
            self._conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client gave up on this stream
        self._flush()

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class AlpnDispatcher(asyncio.Protocol):
    """Hands the TLS connection to HTTP/2 or to HTTP/1.1 (aiohttp) by the protocol ALPN chose."""

    def __init__(
        self, h2_protocol: Callable[[], asyncio.Protocol], http1: Callable[[], asyncio.Protocol]
    ) -> None:
        self._h2 = h2_protocol
        self._http1 = http1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol = self._h2() if chosen == "h2" else self._http1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
