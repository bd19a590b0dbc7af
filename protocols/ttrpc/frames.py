"""ttrpc framing, sans-IO: bytes in, frames out; frames in, bytes out.

Each frame is a 10-byte header (`>IIBB`: payload length, stream id, message type, flags) followed
by the payload. Payloads above 4 MiB are refused: the decoder skips their bytes without buffering
them and reports the frame as oversized, so one bad stream does not cost the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 4 << 20


class MessageType(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Flags(IntFlag):
    NONE = 0
    REMOTE_CLOSED = 1
    REMOTE_OPEN = 2
    NO_DATA = 4


class FrameTooLarge(ValueError):
    """A payload above the 4 MiB limit was about to be sent."""


# Not frozen: a frozen dataclass costs microseconds per frame to build, on every hop of every call.
@dataclass(slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclass(slots=True)
class OversizedFrame:
    """A frame whose payload exceeds the limit; its bytes are being discarded."""

    stream_id: int
    type: int
    length: int


def frame_header(stream_id: int, message_type: int, length: int, flags: int = 0) -> bytes:
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(f"message length {length} exceeds maximum message size of {MAX_PAYLOAD}")
    return HEADER.pack(length, stream_id, message_type, flags)


def encode_frame(stream_id: int, message_type: int, payload: bytes, flags: int = 0) -> bytes:
    return frame_header(stream_id, message_type, len(payload), flags) + payload


class FrameDecoder:
    """Incremental decoder: `feed` any chunking of the byte stream, get whole frames back."""

    __slots__ = ("_buffer", "_discard", "_max_payload")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._discard = 0
        self._max_payload = max_payload

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (zero at a frame boundary)."""
        return len(self._buffer)

    @property
    def mid_frame(self) -> bool:
        """Whether a frame has started and not ended (held or being skipped)."""
        return bool(self._buffer) or self._discard > 0

    def pending_header(self) -> tuple[int, int, int, int] | None:
        """(length, stream id, type, flags) of the frame held incomplete, once its header is in."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length, stream_id, message_type, flags = HEADER.unpack_from(self._buffer)
        return length, stream_id, message_type, flags

    def pending_payload(self, limit: int) -> bytes:
        """The first `limit` bytes held of the incomplete frame's payload."""
        return bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + limit])

    def detach(self) -> bytearray:
        """Hand over the incomplete frame's payload bytes (its header is dropped): the caller takes
        the rest of that frame off the stream itself and feeds what follows it."""
        payload, self._buffer = self._buffer, bytearray()
        del payload[:HEADER_SIZE]  # no copy: CPython moves a bytearray's start
        return payload

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        if self._discard:
            skipped = min(self._discard, len(data))
            self._discard -= skipped
            data = data[skipped:]
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            source = data
        events: list[Frame | OversizedFrame] = []
        offset = 0
        end = len(source)
        with memoryview(source) as view:
            while end - offset >= HEADER_SIZE:
                length, stream_id, message_type, flags = HEADER.unpack_from(source, offset)
                if length > self._max_payload:
                    events.append(OversizedFrame(stream_id, message_type, length))
                    skipped = min(length, end - offset - HEADER_SIZE)
                    offset += HEADER_SIZE + skipped
                    self._discard = length - skipped
                    continue
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                events.append(Frame(stream_id, message_type, flags, bytes(view[start : start + length])))
                offset = start + length
        if source is self._buffer:
            del self._buffer[:offset]
        elif offset < end:
            self._buffer = bytearray(memoryview(source)[offset:])  # one copy, not two
        return events
