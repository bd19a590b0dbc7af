"""The ttrpc Request/Response envelopes around each call's payload."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols.proto import ttrpc_pb2
from protocols.ttrpc.frames import MessageType, encode_frame
from protocols.ttrpc.status import Code, TtrpcError

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A decoded request as a handler sees it."""

    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: Metadata


def encode_request(
    service: str, method: str, payload: bytes, timeout_nano: int = 0, metadata: Iterable[tuple[str, str]] = ()
) -> bytes:
    request = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
    for key, value in metadata:
        request.metadata.add(key=key, value=value)
    return request.SerializeToString()


def decode_request(data: bytes) -> Call:
    request = ttrpc_pb2.Request()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}") from None
    return Call(
        request.service,
        request.method,
        request.payload,
        request.timeout_nano,
        tuple((kv.key, kv.value) for kv in request.metadata),
    )


def encode_response(payload: bytes = b"", code: int = Code.OK, message: str = "") -> bytes:
    """Success carries `status{}` (bytes 0a 00) and the payload, as Go's ttrpc server sends."""
    response = ttrpc_pb2.Response(payload=payload)
    response.status.code = code
    response.status.message = message
    return response.SerializeToString()


def response_frame(stream_id: int, payload: bytes = b"", code: int = Code.OK, message: str = "") -> bytes:
    return encode_frame(stream_id, MessageType.RESPONSE, encode_response(payload, code, message))


def error_frame(stream_id: int, error: TtrpcError) -> bytes:
    return response_frame(stream_id, code=error.code, message=error.message)


def decode_response(data: bytes) -> bytes:
    """The payload of a successful response; raises TtrpcError for an error status."""
    response = ttrpc_pb2.Response()
    try:
        response.ParseFromString(data)
    except DecodeError as exc:
        raise TtrpcError(Code.INTERNAL, f"malformed response: {exc}") from None
    if response.HasField("status") and response.status.code != Code.OK:
        raise TtrpcError(response.status.code, response.status.message)
    return response.payload
