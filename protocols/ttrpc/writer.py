"""Write coalescing: frames queued during one event-loop turn leave in a single write.

With many calls in flight, a read often yields dozens of frames to forward or answer; writing
each on its own costs a syscall (and, on TLS, a record) apiece. Batching them keeps a relay hop
cheap without adding latency beyond the current loop turn. Small buffers are joined before the
write: asyncio's and uvloop's TLS transports encrypt every buffer of a `writelines` as records of
its own, and a record costs far more than copying a few hundred bytes.

A frame relayed cut-through (see `protocols.ttrpc.cutthrough`) is written in pieces as they arrive;
while it is, the writer is held by it and other frames wait behind it, so frames never interleave.
"""

from __future__ import annotations

import asyncio

from protocols.ttrpc.frames import HEADER, MAX_PAYLOAD, FrameTooLarge

JOIN_LIMIT = 64 << 10
# Above this, a payload is queued after its header as a buffer of its own instead of being copied
# behind it: unix sockets take both in one writev.
SPLIT_PAYLOAD = 64 << 10
Buffer = bytes | memoryview


class CoalescingWriter:
    __slots__ = ("_chunks", "_held", "_loop", "_scheduled", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: list[Buffer] = []
        self._size = 0
        self._scheduled = False
        self._held: list[Buffer] | None = None

    def write(self, frame: Buffer) -> None:
        """Queue a whole frame (or a piece of one, in order, right after the others)."""
        if self._held is not None:
            self._held.append(frame)
        else:
            self._queue(frame)

    def write_frame(self, stream_id: int, message_type: int, payload: bytes, flags: int = 0) -> None:
        """A whole frame; raises FrameTooLarge (having queued nothing) above the size limit."""
        length = len(payload)
        if length > MAX_PAYLOAD:
            raise FrameTooLarge(f"message length {length} exceeds maximum message size of {MAX_PAYLOAD}")
        header = HEADER.pack(length, stream_id, message_type, flags)
        if length > SPLIT_PAYLOAD:
            self.write(header)
            self.write(payload)
        else:
            self.write(header + payload)

    @property
    def held(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        """From now on only `write_through` goes out; `write` waits for `release`."""
        assert self._held is None, "one cut-through frame at a time"
        self._held = []

    def write_through(self, piece: Buffer) -> None:
        """A piece of the frame that holds the writer."""
        self._queue(piece)

    def release(self) -> None:
        held, self._held = self._held or [], None
        for frame in held:
            self._queue(frame)

    def _queue(self, piece: Buffer) -> None:
        self._chunks.append(piece)
        self._size += len(piece)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        chunks, self._chunks = self._chunks, []
        size, self._size = self._size, 0
        if not chunks or self._transport.is_closing():
            return
        if len(chunks) == 1:
            self._transport.write(chunks[0])
        elif size <= JOIN_LIMIT:
            self._transport.write(b"".join(chunks))
        else:
            self._transport.writelines(chunks)
