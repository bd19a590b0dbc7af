"""Write coalescing: frames queued during one event-loop turn leave in a single write.

With many calls in flight, a read often yields dozens of frames to forward or answer; writing
each on its own costs a syscall (and, on TLS, a record) apiece. Batching them keeps a relay hop
cheap without adding latency beyond the current loop turn.
"""

from __future__ import annotations

import asyncio


class CoalescingWriter:
    __slots__ = ("_chunks", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._scheduled = False

    def write(self, frame: bytes) -> None:
        self._chunks.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        chunks, self._chunks = self._chunks, []
        if not chunks or self._transport.is_closing():
            return
        if len(chunks) == 1:
            self._transport.write(chunks[0])
        else:
            self._transport.writelines(chunks)
