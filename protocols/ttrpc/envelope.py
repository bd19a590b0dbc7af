"""The ttrpc Request/Response envelopes around each call's payload."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from protocols.proto import ttrpc_pb2
from protocols.ttrpc.frames import MessageType, encode_frame
from protocols.ttrpc.status import Code, TtrpcError

Metadata = tuple[tuple[str, str], ...]

MessageT = TypeVar("MessageT", bound=Message)


@dataclass(slots=True)
class Call:
    """A decoded request as a handler sees it; `received` is its arrival on the monotonic clock.

    Not frozen: a frozen dataclass costs several microseconds more per call to build.
    """

    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: Metadata
    received: float = 0.0

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None when the call has no deadline."""
        if self.timeout_nano <= 0:
            return None
        return max(0.0, self.timeout_nano / 1e9 - (time.monotonic() - self.received))


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> list[bytes]:
    """A length-delimited field, as parts to join (no copy of `data` until the final join)."""
    return [_encode_varint(number << 3 | 2), _encode_varint(len(data)), data]


def encode_request(
    service: str, method: str, payload: bytes, timeout_nano: int = 0, metadata: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The Request envelope, encoded by hand: protobuf's generated setter copies large payloads slowly.

    Field order and encoding are those of protobuf's own serializer (checked byte for byte in tests).
    """
    parts: list[bytes] = []
    if service:
        parts += _field(1, service.encode())
    if method:
        parts += _field(2, method.encode())
    if payload:
        parts += _field(3, payload)
    if timeout_nano:
        parts += [b"\x20", _encode_varint(timeout_nano)]
    for key, value in metadata:
        entry: list[bytes] = []
        if key:
            entry += _field(1, key.encode())
        if value:
            entry += _field(2, value.encode())
        parts += _field(5, b"".join(entry))
    return b"".join(parts)


def decode_request(data: bytes) -> Call:
    request = decode_message(ttrpc_pb2.Request, data)
    return Call(
        request.service,
        request.method,
        request.payload,
        request.timeout_nano,
        tuple((kv.key, kv.value) for kv in request.metadata),
        time.monotonic(),
    )


def _varint(data: bytes | bytearray, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise TtrpcError(Code.INVALID_ARGUMENT, "unmarshal request error: truncated varint")
        byte = data[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return result, position
        shift += 7


def _text(data: bytes | bytearray, start: int, end: int) -> str:
    try:
        return data[start:end].decode()
    except UnicodeDecodeError:
        raise TtrpcError(Code.INVALID_ARGUMENT, "unmarshal request error: invalid UTF-8") from None


def scan_request(data: bytes | bytearray, position: int = 0) -> tuple[str, str, int]:
    """Service, method and timeout of the Request fields from `position` on, validating their framing.

    One-byte keys and lengths (nearly all of them) are read inline: this runs once per relayed call.
    """
    service = method = ""
    timeout_nano = 0
    end = len(data)
    while position < end:
        key = data[position]
        if key & 0x80:
            key, position = _varint(data, position)
        else:
            position += 1
        wire_type = key & 7
        if wire_type == 2:
            if position < end and not data[position] & 0x80:
                length = data[position]
                position += 1
            else:
                length, position = _varint(data, position)
            field_end = position + length
            if field_end > end:
                raise TtrpcError(Code.INVALID_ARGUMENT, "unmarshal request error: truncated field")
            if key == 0x0A:
                service = _text(data, position, field_end)
            elif key == 0x12:
                method = _text(data, position, field_end)
            position = field_end
        elif wire_type == 0:
            value, position = _varint(data, position)
            if key == 0x20:
                timeout_nano = value - (1 << 64) if value >= 1 << 63 else value
        elif wire_type == 1 or wire_type == 5:
            position += 8 if wire_type == 1 else 4
        else:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"unmarshal request error: wire type {wire_type}")
    if position != end:
        raise TtrpcError(Code.INVALID_ARGUMENT, "unmarshal request error: truncated field")
    return service, method, timeout_nano


def peek_request(data: bytes) -> Call:
    """Service, method and deadline of an encoded Request, without copying its payload out.

    Relays use it on the fast path, where the Request is forwarded as it came; payload and
    metadata are left empty. Malformed input gives the same INVALID_ARGUMENT as `decode_request`.
    """
    service, method, timeout_nano = scan_request(data)
    return Call(service, method, b"", timeout_nano, (), time.monotonic())


def peek_head(data: bytes | bytearray) -> tuple[str, str, int] | None:
    """Service, method and where the payload field ends, from the first bytes of a large Request.

    Only the layout every ttrpc client writes (service, method, then the payload) qualifies; None
    for anything else, or when `data` stops short of the payload field's length.
    """
    try:
        if data[0] != 0x0A:
            return None
        length, position = _varint(data, 1)
        service = _text(data, position, position + length)
        position += length
        if data[position] != 0x12:
            return None
        length, position = _varint(data, position + 1)
        method = _text(data, position, position + length)
        position += length
        if data[position] != 0x1A:
            return None
        length, position = _varint(data, position + 1)
    except (IndexError, TtrpcError):
        return None
    return service, method, position + length


def encode_response(payload: bytes = b"", code: int = Code.OK, message: str = "") -> bytes:
    """Success carries `status{}` (bytes 0a 00) and the payload, as Go's ttrpc server sends.

    Encoded by hand like `encode_request`, and checked byte for byte against protobuf in tests.
    """
    status: list[bytes] = []
    if code:
        status += [b"\x08", _encode_varint(code)]
    if message:
        status += _field(2, message.encode())
    parts = _field(1, b"".join(status))
    if payload:
        parts += _field(2, payload)
    return b"".join(parts)


def response_frame(stream_id: int, payload: bytes = b"", code: int = Code.OK, message: str = "") -> bytes:
    return encode_frame(stream_id, MessageType.RESPONSE, encode_response(payload, code, message))


def error_frame(stream_id: int, error: TtrpcError) -> bytes:
    return response_frame(stream_id, code=error.code, message=error.message)


SUCCESS = b"\x0a\x00"  # status {} as every server encodes success, then field 2: the payload


def decode_response(data: bytes) -> bytes:
    """The payload of a successful response; raises TtrpcError for an error status."""
    if data.startswith(SUCCESS):  # read by hand: building the protobuf message costs more
        if len(data) == len(SUCCESS):
            return b""
        if data[2] == 0x12:
            try:
                length, position = _varint(data, 3)
            except TtrpcError:
                pass  # malformed: protobuf says how
            else:
                if position + length == len(data):
                    return data[position:]
    response = decode_message(ttrpc_pb2.Response, data, Code.INTERNAL)
    if response.HasField("status") and response.status.code != Code.OK:
        raise TtrpcError(response.status.code, response.status.message)
    return response.payload


def decode_message(
    message_type: type[MessageT], payload: bytes, code: int = Code.INVALID_ARGUMENT
) -> MessageT:
    """Parse a call's payload, turning a decode failure into a status the caller understands."""
    message = message_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise TtrpcError(code, f"malformed {message_type.DESCRIPTOR.name}: {exc}") from None
    return message
