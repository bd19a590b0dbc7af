"""A ttrpc relay: serve calls on one side, forward them over a shared connection to the next hop.

Both the worker-side agent proxy and the in-VM agent-protocol-forwarder are relays. Calls nobody
rewrites take a fast path: the encoded Request goes upstream as it came and the Response comes
back byte for byte, with no task per call; a large Request goes on while it arrives (cut-through,
see `protocols.ttrpc.cutthrough`). Rewritten calls (and calls that arrive before the upstream is
connected) take the task path. Either way many calls, blocking ones included, are in flight at
once, and losing the upstream fails what is pending with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from protocols.ttrpc.client import Client, ClientConnection
from protocols.ttrpc.cutthrough import CUT_THROUGH, HEAD_BYTES, CutThrough, upstream_length
from protocols.ttrpc.envelope import Call, decode_request, error_frame, peek_head, peek_request
from protocols.ttrpc.frames import HEADER_SIZE, MAX_PAYLOAD, frame_header
from protocols.ttrpc.server import REQUEST, Handler, ServerConnection
from protocols.ttrpc.status import Code, TtrpcError

log = logging.getLogger(__name__)

# Rewrites a request payload before it goes upstream (e.g. CreateContainer's OCI spec).
Interceptor = Callable[[bytes], Awaitable[bytes]]
Dialer = Callable[[], Awaitable[Client]]

DIAL_ERRORS = (OSError, ssl.SSLError, TimeoutError)


class Upstream:
    """The next hop: dialled lazily, shared by every downstream connection, redialled after loss.

    Dialling keeps trying for `timeout_s` until a first connection (the next hop may still be
    booting), and only for `redial_timeout_s` after one was lost or when `connected` says there was
    one before: a next hop that is gone fails the call quickly with UNAVAILABLE instead.
    """

    def __init__(
        self,
        dial: Dialer,
        timeout_s: float = 300.0,
        max_backoff_s: float = 5.0,
        name: str = "upstream",
        redial_timeout_s: float | None = None,
        connected: bool = False,
    ) -> None:
        self._dial = dial
        self._timeout_s = timeout_s
        self._redial_timeout_s = timeout_s if redial_timeout_s is None else redial_timeout_s
        self._max_backoff_s = max_backoff_s
        self._name = name
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._connected = connected
        self._lost_because = ""
        self._last_error: BaseException | None = None  # of the latest failed dial, for the message

    @property
    def current(self) -> Client | None:
        """The live connection, if there is one; never dials."""
        client = self._client
        if client is not None and (transport := client.connection.transport) and not transport.is_closing():
            return client
        return None

    async def get(self, timeout_s: float | None = None) -> Client:
        """The live connection, dialling with exponential backoff (capped) for `timeout_s`, by default
        the dial timeout before a first connection and the redial timeout after."""
        async with self._lock:
            if (client := self.current) is not None:
                return client
            if self._client is not None:
                self._lost_because = self._client.connection.lost_because
                self._client = None
            if timeout_s is None:
                timeout_s = self._redial_timeout_s if self._connected else self._timeout_s
            deadline = asyncio.get_running_loop().time() + timeout_s
            self._last_error = None
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_delay(timeout_s),
                    # tenacity's default jitter adds up to a whole second to every wait, i.e. to every
                    # pod start; 50 ms is enough to keep many proxies from dialling in lockstep.
                    wait=wait_exponential_jitter(multiplier=0.05, max=self._max_backoff_s, jitter=0.05),
                    retry=retry_if_exception_type(DIAL_ERRORS),
                    before_sleep=self._log_retry,
                    reraise=True,
                ):
                    # One dial may hang (SYNs to a host that is gone, a stalled TLS handshake): bounded too.
                    with attempt:
                        async with asyncio.timeout_at(deadline):
                            self._client = await self._dial()
            except DIAL_ERRORS as exc:
                # A last dial cut short by the deadline says less than the failure before it.
                reason = self._last_error if isinstance(exc, TimeoutError) and self._last_error else exc
                raise TtrpcError(Code.UNAVAILABLE, self._unreachable(timeout_s, reason)) from None
            assert self._client is not None
            self._connected = True
            return self._client

    def _unreachable(self, timeout_s: float, exc: BaseException) -> str:
        reason = f"cannot reach {self._name} within {timeout_s:g}s: {str(exc) or 'dial timed out'}"
        return f"{reason} (connection lost: {self._lost_because})" if self._lost_because else reason

    def _log_retry(self, state: object) -> None:
        outcome = getattr(state, "outcome", None)
        error = outcome.exception() if outcome is not None else None
        self._last_error = error
        log.info("retrying failed connection to %s: %s", self._name, error)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class _Forwarded:
    """One call on the fast path: its downstream stream, its upstream stream, its deadline timer."""

    __slots__ = ("connection", "stream_id", "timer", "upstream", "upstream_id")

    def __init__(self, connection: RelayConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.timer: asyncio.TimerHandle | None = None
        self.upstream: ClientConnection | None = None
        self.upstream_id = 0

    def done(self, response: bytes | None, error: TtrpcError | None) -> None:
        if self.connection.inflight.pop(self.stream_id, None) is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        if error is not None:
            self.connection.send(error_frame(self.stream_id, error))
        else:
            assert response is not None
            self.connection.send_response(self.stream_id, response)

    def arm(self, call: Call) -> None:
        """Answer DEADLINE_EXCEEDED ourselves if the upstream has not answered by the deadline."""
        if (remaining := call.remaining()) is not None:
            self.timer = asyncio.get_running_loop().call_later(remaining, self.expire)

    def expire(self) -> None:
        self.abandon()
        self.connection.send(error_frame(self.stream_id, TtrpcError(Code.DEADLINE_EXCEEDED, "timeout")))

    def abandon(self) -> None:
        self.connection.inflight.pop(self.stream_id, None)
        if self.timer is not None:
            self.timer.cancel()
        if self.upstream is not None:
            self.upstream.forget(self.upstream_id)


class RelayConnection(ServerConnection):
    """A downstream connection whose calls are served by the upstream."""

    def __init__(
        self,
        upstream: Upstream,
        methods: Mapping[str, frozenset[str]],
        interceptors: Mapping[tuple[str, str], Interceptor] | None = None,
    ) -> None:
        super().__init__({})
        self.upstream = upstream
        self.methods = methods
        self.interceptors = interceptors or {}
        self.inflight: dict[int, _Forwarded] = {}
        self._cut: CutThrough | None = None  # the large Request passing through right now
        self._cut_call: tuple[_Forwarded, Call] | None = None
        self._stored = 0  # the stream id of a large Request left to store-and-forward

    def lookup(self, call: Call) -> Handler:
        methods = self.methods.get(call.service)
        if methods is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"service {call.service}")
        if call.method not in methods:
            raise TtrpcError(Code.UNIMPLEMENTED, f"method {call.method}")
        return self._forward

    def is_active(self, stream_id: int) -> bool:
        return stream_id in self.inflight or super().is_active(stream_id)

    def parse_request(self, data: bytes) -> Call:
        """Only what routing needs; the slow path decodes the rest (see `dispatch`)."""
        return peek_request(data)

    def dispatch(self, stream_id: int, call: Call, raw_request: bytes) -> None:
        client = self.upstream.current
        if client is None or (call.service, call.method) in self.interceptors:
            full = replace(decode_request(raw_request), received=call.received)
            super().dispatch(stream_id, full, raw_request)
            return
        forwarded = _Forwarded(self, stream_id)
        self.inflight[stream_id] = forwarded
        try:
            forwarded.upstream_id = client.connection.start_raw(raw_request, forwarded.done)
        except TtrpcError as exc:
            forwarded.done(None, exc)
            return
        forwarded.upstream = client.connection
        forwarded.arm(call)

    # cut-through

    @property
    def cutting(self) -> bool:
        """Whether a large Request is passing through this connection right now."""
        return self._cut is not None

    def mid_frame(self) -> bool:
        return self._cut is not None or super().mid_frame()

    def data_received(self, data: bytes) -> None:
        if self._cut is not None:
            data = self._cut.feed(data)
            if self._cut.remaining:
                return
            self._cut_done()
            if not data:
                return
        super().data_received(data)
        self._start_cut_through()

    def _start_cut_through(self) -> None:
        """Take over a large Request the decoder holds incomplete, when it can go on as it comes."""
        pending = self._decoder.pending_header()
        if pending is None:
            return
        length, stream_id, message_type, flags = pending
        if message_type != REQUEST or length < CUT_THROUGH or stream_id == self._stored:
            return
        if self._decoder.buffered - HEADER_SIZE < HEAD_BYTES:
            return  # not enough of the payload yet to read service and method
        head = peek_head(self._decoder.pending_payload(HEAD_BYTES))
        client = self.upstream.current
        if (
            head is None
            or head[2] > length
            or upstream_length(length, head[2]) > MAX_PAYLOAD
            or client is None
            or client.connection.writer_held
            or head[:2] in self.interceptors
        ):
            self._stored = stream_id  # store-and-forward: the decoder keeps it until it is whole
            return
        service, method, payload_end = head
        call = Call(service, method, b"", 0, (), time.monotonic())
        try:
            self.accept_stream(stream_id, flags)
            self.lookup(call)
            forwarded = _Forwarded(self, stream_id)
            upstream_id, writer = client.connection.open_stream(forwarded.done)
        except TtrpcError as exc:
            self.send(error_frame(stream_id, exc))
            self._cut = CutThrough(None, length, payload_end)  # skip the rest of it
        else:
            self.inflight[stream_id] = forwarded
            forwarded.upstream, forwarded.upstream_id = client.connection, upstream_id
            self._cut = cut = CutThrough(writer, length, payload_end)
            writer.write(frame_header(upstream_id, REQUEST, cut.upstream_length, flags))
            writer.hold()
            self._cut_call = forwarded, call
        self._cut.feed(self._decoder.detach())  # less than the whole frame, or the decoder had it

    def _cut_done(self) -> None:
        """The frame has passed through whole: its deadline starts counting."""
        assert self._cut is not None
        if self._cut_call is not None:
            forwarded, call = self._cut_call
            call.timeout_nano = self._cut.timeout_nano()
            if call.timeout_nano and forwarded.stream_id in self.inflight:
                forwarded.arm(call)
        self._cut = self._cut_call = None
        self._stop_frame_timer()

    async def _forward(self, call: Call) -> bytes:
        client = await self.upstream.get()
        payload = call.payload
        interceptor = self.interceptors.get((call.service, call.method))
        if interceptor is not None:
            payload = await interceptor(payload)
        return await client.call(call.service, call.method, payload, call.remaining(), call.metadata)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._cut is not None:
            self._cut.abort()
            self._cut = self._cut_call = None
        for forwarded in list(self.inflight.values()):
            forwarded.abandon()
        super().connection_lost(exc)
