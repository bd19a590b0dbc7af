"""Cut-through relaying of large Requests: a relay passes such a frame on while it arrives.

Store-and-forward makes a 1 MiB CopyFile wait at every hop until it has arrived whole before the
next hop sees its first byte. A Request of at least CUT_THROUGH bytes goes on in pieces instead:
its header and head (service, method and the payload field's length) once the relay has checked
them, then the payload as it comes in. The upstream connection is shared, so while such a frame
is written its writer is held and other frames queue behind it (see `CoalescingWriter.hold`).

The tail after the payload field (timeout, metadata) is held back until the frame is whole, and
a Request without a tail gets `timeout_nano = 0` (the same message in proto3) written as one. So
when the sender goes away mid-frame the relay can still end the frame upstream, with zeros from
where it stopped: a zero byte where the tail's first key belongs is field number 0, which every
protobuf decoder refuses. The next hop answers that stream with an error nobody waits for, instead
of running a call whose payload was cut short.
"""

from __future__ import annotations

from protocols.ttrpc.envelope import scan_request
from protocols.ttrpc.status import TtrpcError
from protocols.ttrpc.writer import CoalescingWriter

CUT_THROUGH = 64 << 10
# Payload bytes to have before deciding: service and method names are far shorter than this.
HEAD_BYTES = 1024
EMPTY_TAIL = b"\x20\x00"  # timeout_nano = 0, written out


def upstream_length(length: int, payload_end: int) -> int:
    """A frame's length as written upstream: with a tail of its own when it has none."""
    return length + len(EMPTY_TAIL) if payload_end == length else length


class CutThrough:
    """The rest of one Request frame on its way through: what is still to come, and where its tail
    begins. Without a writer (a refused Request) the rest is only skipped."""

    __slots__ = ("_payload_end", "_received", "_sent", "_tail", "_writer", "remaining", "upstream_length")

    def __init__(self, writer: CoalescingWriter | None, length: int, payload_end: int) -> None:
        self._writer = writer
        self._payload_end = payload_end  # where the tail starts in the payload
        self._received = 0
        self._sent = 0
        self._tail = bytearray()
        self.remaining = length
        self.upstream_length = upstream_length(length, payload_end)

    def feed(self, data: bytes | bytearray) -> bytes:
        """Pass on this frame's share of `data`; returns what follows the frame (the next frames)."""
        take = min(len(data), self.remaining)
        view = memoryview(data)
        if self._writer is not None:
            through = max(0, min(take, self._payload_end - self._received))
            if through:
                self._writer.write_through(view[:through])
                self._sent += through
            self._tail += view[through:take]
        self._received += take
        self.remaining -= take
        if not self.remaining and self._writer is not None:
            self._writer.write_through(bytes(self._tail) or EMPTY_TAIL)
            self._writer.release()
        return bytes(view[take:]) if take < len(data) else b""

    def timeout_nano(self) -> int:
        """The whole frame's deadline, from its tail (0: none, or a tail the next hop will refuse)."""
        try:
            return scan_request(self._tail)[2]
        except TtrpcError:
            return 0

    def abort(self) -> None:
        """The sender went away mid-frame: end the frame upstream with zeros, which make it invalid."""
        if self.remaining and self._writer is not None:
            self._writer.write_through(bytes(self.upstream_length - self._sent))
            self._writer.release()
        self.remaining = 0
