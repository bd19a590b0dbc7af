"""HTTP/2 for the admission endpoint, chosen by ALPN; HTTP/1.1 clients keep aiohttp.

Why HTTP/2: the API server's webhook client speaks it when offered. Over HTTP/1.1 it opens one TLS
connection per concurrent admission request and keeps only a few idle, so a burst of pod creations
costs a TLS handshake each (measured: 200 pods at once added p99 600 ms, nearly all handshakes on
one Python core). Over HTTP/2 the burst shares one connection.

Why framed here rather than with the h2 package: a review is one small POST answered at once, and
h2's general state machine (header validation both ways, an encoder, a scan of every stream per new
stream) cost ~0.3 ms of CPU per admission, more than the mutation itself; this server does only
what RFC 9113 asks of one that never pushes and answers each request in one go (~40 us). Header
blocks are decoded with hpack (the dynamic table must follow the client's); response header blocks
are literals without indexing, built without an encoder.

`AlpnDispatcher` is the listener's protocol: once TLS is up it hands the connection to the HTTP/2
protocol below or to aiohttp's request handler, by the negotiated protocol.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import hpack
import hpack.exceptions

log = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 1000
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 26
# (method, path, body) -> (status, JSON body); called on the event loop, so it must not block
Handler = Callable[[str, str, bytes], tuple[int, bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default; not raised, so the peer sends no more
# Frame types (RFC 9113 section 6); PRIORITY (2) and unknown types are ignored
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (RFC 9113 section 7)
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x6, 0x7, 0x9
SETTINGS_MAX_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x3, 0x4, 0x5
_FRAME_HEADER = struct.Struct(">IBI")  # (24-bit length << 8 | type), flags, stream id
MAX_HEADER_BLOCK = 1 << 16  # hpack's own limit on a decoded header list
_STATUS_INDEX = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}  # HPACK's static table
_CONTENT_TYPE_JSON = b"\x0f\x10\x10application/json"  # literal, name index 31, not indexed
_CONTENT_LENGTH = b"\x0f\x0d"  # literal, name index 28, not indexed; the value follows


class ProtocolViolation(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY and this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def response_headers(status: int, length: int) -> bytes:
    """The HPACK block of a response: literals without indexing leave the client's table untouched."""
    index = _STATUS_INDEX.get(status)
    code = str(status).encode()
    first = bytes((0x80 | index,)) if index is not None else b"\x08" + bytes((len(code),)) + code
    size = str(length).encode()
    return first + _CONTENT_TYPE_JSON + _CONTENT_LENGTH + bytes((len(size),)) + size


@dataclass
class _Stream:
    method: str = ""
    path: str = ""
    body: bytearray = field(default_factory=bytearray)
    unacknowledged: int = 0  # bytes received since the last WINDOW_UPDATE for this stream


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection, server side: requests in, one complete answer per stream out."""

    def __init__(self, handle: Handler, max_body: int, max_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        self._handle = handle
        self._max_body = max_body
        self._max_streams = max_streams
        self._decoder = hpack.Decoder()
        self._buffer = bytearray()
        self._preface_seen = False
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._block: tuple[int, int, bytearray] | None = None  # (stream, flags, fragments) until END_HEADERS
        self._received = 0  # connection-level bytes since the last WINDOW_UPDATE
        self._peer_window = DEFAULT_WINDOW  # SETTINGS_INITIAL_WINDOW_SIZE of the client
        self._peer_frame = MAX_FRAME
        self._send_window = DEFAULT_WINDOW  # connection-level
        self._stream_windows: dict[int, int] = {}  # streams whose answer is not fully sent
        self._pending: dict[int, bytes] = {}  # answer bytes waiting for the client's window
        self._goaway = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        # A burst of pod creations is one stream each: past the limit (100 in many servers) the
        # client opens another connection, a TLS handshake. The receive windows let such a burst of
        # reviews in without waiting for WINDOW_UPDATEs (the protocol's default: 64 KiB).
        settings = struct.pack(
            ">HIHI", SETTINGS_MAX_STREAMS, self._max_streams, SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW
        )
        increment = struct.pack(">I", CONNECTION_WINDOW - DEFAULT_WINDOW)
        self._transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, increment))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return  # after a GOAWAY of ours: what is still buffered is not read
        self._buffer += data
        out: list[bytes] = []
        try:
            self._frames(out)
        except ProtocolViolation as exc:
            log.warning("HTTP/2 protocol error from the client: %s", exc)
            out.append(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, exc.code)))
            self._write(out)
            self.close()
            return
        self._write(out)
        if self._goaway and not self._streams and not self._pending:
            self.close()

    def _write(self, out: list[bytes]) -> None:
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def _frames(self, out: list[bytes]) -> None:
        buffer = self._buffer
        offset = 0
        if not self._preface_seen:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if buffer[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface_seen = True
            offset = len(PREFACE)
        while len(buffer) - offset >= 9:
            word, flags, stream_id = _FRAME_HEADER.unpack_from(buffer, offset)
            length, kind = word >> 8, word & 0xFF
            if length > MAX_FRAME:
                raise ProtocolViolation(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if len(buffer) - offset - 9 < length:
                break
            payload = bytes(buffer[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload, out)
        del buffer[:offset]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload, out)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload, out)
        elif kind == CONTINUATION:
            if self._block is None or self._block[0] != stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._block[2].extend(payload)
            if len(self._block[2]) > MAX_HEADER_BLOCK:
                raise ProtocolViolation(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                block_stream, block_flags, fragments = self._block
                self._block = None
                self._header_block(block_stream, block_flags, bytes(fragments), out)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload, out)
        elif kind == PING:
            if stream_id != 0 or len(payload) != 8:
                raise ProtocolViolation(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "bad PING")
            if not flags & ACK:
                out.append(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, out)
        elif kind == RST_STREAM:
            if stream_id == 0 or len(payload) != 4:
                raise ProtocolViolation(PROTOCOL_ERROR, "bad RST_STREAM")
            self._streams.pop(stream_id, None)
            self._pending.pop(stream_id, None)
            self._stream_windows.pop(stream_id, None)
        elif kind == GOAWAY:
            self._goaway = True
        elif kind == PUSH_PROMISE:
            raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as the protocol asks.

    def _headers(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        fragment = _unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            fragment = fragment[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, fragment, out)
        else:
            self._block = (stream_id, flags, bytearray(fragment))

    def _header_block(self, stream_id: int, flags: int, block: bytes, out: list[bytes]) -> None:
        try:  # decoded even for a refused stream: the client's table changes with every block
            headers = self._decoder.decode(block, raw=True)
        except hpack.exceptions.HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers
            if not flags & END_STREAM:
                raise ProtocolViolation(PROTOCOL_ERROR, "trailers without END_STREAM")
            self._answer(stream_id, self._streams.pop(stream_id), out)
            return
        if stream_id <= self._last_stream:
            raise ProtocolViolation(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self._last_stream = stream_id
        if len(self._streams) + len(self._pending) >= self._max_streams:
            out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        fields = dict(cast(list[tuple[bytes, bytes]], headers))
        stream = _Stream(
            fields.get(b":method", b"").decode("latin-1"), fields.get(b":path", b"").decode("latin-1")
        )
        if flags & END_STREAM:
            self._answer(stream_id, stream, out)
        else:
            self._streams[stream_id] = stream

    def _data(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        self._received += len(payload)
        if self._received >= CONNECTION_WINDOW // 2:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream:
                raise ProtocolViolation(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # the rest of a stream refused or reset: counted for the connection, dropped
        stream.body += _unpad(flags, payload)
        if len(stream.body) > self._max_body:
            del self._streams[stream_id]
            out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        if flags & END_STREAM:
            self._answer(stream_id, self._streams.pop(stream_id), out)
            return
        stream.unacknowledged += len(payload)
        if stream.unacknowledged >= STREAM_WINDOW // 2:
            out.append(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.unacknowledged)))
            stream.unacknowledged = 0

    def _settings(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id != 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS of a partial entry")
        for offset in range(0, len(payload), 6):
            key, number = struct.unpack_from(">HI", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if number > 0x7FFFFFFF:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self._peer_window = number - self._peer_window, number
                for pending in self._stream_windows:
                    self._stream_windows[pending] += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME <= number <= 0xFFFFFF:
                    raise ProtocolViolation(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_frame = number
        out.append(frame(SETTINGS, ACK, 0))
        self._send_pending(out)

    def _window_update(self, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if increment == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if stream_id == 0:
            self._send_window += increment
        elif stream_id in self._stream_windows:
            self._stream_windows[stream_id] += increment
        self._send_pending(out)

    def _answer(self, stream_id: int, stream: _Stream, out: list[bytes]) -> None:
        status, body = self._handle(stream.method, stream.path, bytes(stream.body))
        out.append(frame(HEADERS, END_HEADERS, stream_id, response_headers(status, len(body))))
        self._stream_windows[stream_id] = self._peer_window
        self._pending[stream_id] = body
        self._send(stream_id, out)

    def _send_pending(self, out: list[bytes]) -> None:
        for stream_id in list(self._pending):
            if self._send_window <= 0:
                return
            self._send(stream_id, out)

    def _send(self, stream_id: int, out: list[bytes]) -> None:
        """As much of the answer as the client's windows allow; the rest on its WINDOW_UPDATEs."""
        body = self._pending[stream_id]
        while True:
            size = min(len(body), self._send_window, self._stream_windows[stream_id], self._peer_frame)
            if size < len(body) and size <= 0:
                self._pending[stream_id] = body
                return
            last = size == len(body)
            out.append(frame(DATA, END_STREAM if last else 0, stream_id, body[:size]))
            self._send_window -= size
            self._stream_windows[stream_id] -= size
            body = body[size:]
            if last:
                del self._pending[stream_id], self._stream_windows[stream_id]
                return


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


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
