"""An HTTP front for a moto EC2 server: what moto lacks to stand in for EC2 under load.

boto3 talks to the front (AWS_ENDPOINT_URL), the front forwards each request to moto and adds:

- `hold(action)`: awaited before the answer goes back (`latency()` makes one that sleeps). The request
  reaches moto at once, as a request reaches EC2: an instance exists from the moment RunInstances
  arrives, even if the answer is late or never read (the adaptor was killed meanwhile).
  `in_flight` and `peak_in_flight` count the requests per action between arrival and answer.
- a server-side API limit: a token bucket of `rate_per_s` and `burst` over all actions; a request
  that finds it empty is answered as EC2 does, HTTP 503 with code RequestLimitExceeded, and is not
  forwarded. `throttled` counts those answers per action, `calls` every request per action.
- `fail(action, ...)`: a canned answer for the next request of that action, not forwarded.
- an observer told of every launched and terminated instance (id, private IP, Name tag, user data),
  the data plane on which fake pod VMs boot (see tests/chaos/fleet.py).

No address rewriting is needed to keep traffic on loopback: moto accepts a VPC and subnet inside
127.0.0.0/8 and gives instances private IPs from it (tests/chaos/harness.py creates them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

THROTTLE_CODE = "RequestLimitExceeded"
THROTTLE_MESSAGE = "Request limit exceeded."
# Hop-by-hop or recomputed headers that must not be copied between the two connections.
_NOT_FORWARDED = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


class FrontError(ValueError):
    """moto answered something the front cannot read."""


@dataclass(frozen=True)
class Launch:
    """One instance that RunInstances created, with what its pod VM boots from."""

    instance_id: str
    private_ip: str
    name: str
    user_data: bytes


class Observer(Protocol):
    """Told, on the front's event loop, what the cloud just did."""

    def launched(self, launch: Launch) -> None: ...

    def terminated(self, instance_id: str) -> None: ...


class TokenBucket:
    """EC2's request-rate model: `burst` requests back to back, `rate_per_s` on average; no waiting."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate_per_s}/{burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def admit(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def burst_needed(arrivals: Sequence[float], rate_per_s: float) -> float:
    """The smallest bucket capacity at `rate_per_s` that admits all `arrivals` (sorted), starting full.

    That is the largest excess of requests over the refill in any window [t_i, t_j]:
    max over i <= j of (j - i + 1) - rate * (t_j - t_i).
    """
    needed = 0.0
    best_start = float("-inf")  # max over i <= j of (rate * t_i - i)
    for j, t in enumerate(arrivals):
        best_start = max(best_start, rate_per_s * t - j)
        needed = max(needed, best_start + j + 1 - rate_per_s * t)
    return needed


def form_of(body: bytes) -> dict[str, str]:
    """An EC2 query-protocol request body as a flat dict (each key once in that protocol)."""
    return {
        key: values[0]
        for key, values in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()
    }


def error_body(code: str, message: str) -> bytes:
    """EC2's XML error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message>"
        "</Error></Errors><RequestID>ec2-front</RequestID></Response>"
    ).encode()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((child for child in element if _local(child.tag) == name), None)


def _text(element: ElementTree.Element, name: str) -> str:
    child = _child(element, name)
    return (child.text or "").strip() if child is not None else ""


def _items(document: bytes, set_name: str) -> list[ElementTree.Element]:
    """The <item>s of the top-level `set_name` element of an EC2 response."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        raise FrontError(f"unreadable EC2 response: {exc}") from None
    found = _child(root, set_name)
    return [] if found is None else [item for item in found if _local(item.tag) == "item"]


def _name_tag(form: Mapping[str, str]) -> str:
    """The Name tag of the instance's TagSpecification in a RunInstances request."""
    for key, value in form.items():
        if key.startswith("TagSpecification.") and key.endswith(".Key") and value == "Name":
            return form.get(key[: -len("Key")] + "Value", "")
    return ""


def launches(form: Mapping[str, str], response: bytes) -> list[Launch]:
    """The instances a RunInstances request (`form`) and its answer (`response`) describe."""
    try:
        user_data = base64.b64decode(form.get("UserData", ""), validate=True)
    except binascii.Error as exc:
        raise FrontError(f"RunInstances UserData is not base64: {exc}") from None
    name = _name_tag(form)
    return [
        Launch(_text(item, "instanceId"), _text(item, "privateIpAddress"), name, user_data)
        for item in _items(response, "instancesSet")
    ]


def terminated_ids(response: bytes) -> list[str]:
    """The instance ids a TerminateInstances answer lists."""
    return [_text(item, "instanceId") for item in _items(response, "instancesSet")]


Hold = Callable[[str], Awaitable[None]]


def latency(seconds: Callable[[str], float]) -> Hold:
    """A hold that answers each action after `seconds(action)`."""

    async def hold(action: str) -> None:
        await asyncio.sleep(seconds(action))

    return hold


async def no_hold(_action: str) -> None:
    return None


class Ec2Front:
    """See the module docstring. `start()` returns the URL to give boto3 as its endpoint."""

    def __init__(
        self,
        upstream: str,
        *,
        hold: Hold = no_hold,
        rate_limit: TokenBucket | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold = hold
        self.rate_limit = rate_limit
        self.observer = observer
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.arrivals: list[float] = []  # time.monotonic() of every request, throttled or not
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()
        self._faults: dict[str, list[web.Response]] = {}
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None

    def fail(self, action: str, status: int, body: bytes, content_type: str = "text/xml") -> None:
        """Answer the next `action` request with `status` and `body` instead of forwarding it."""
        self._faults.setdefault(action, []).append(
            web.Response(status=status, body=body, content_type=content_type)
        )

    async def start(self) -> str:
        self._session = ClientSession(
            connector=TCPConnector(limit=64), timeout=ClientTimeout(total=120), auto_decompress=False
        )
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # The default (no handler cancellation) matters: a request whose client went away is still
        # carried through, so the cloud and the observer see what EC2 would have done.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        form = form_of(body)
        action = form.get("Action", "")
        self.arrivals.append(time.monotonic())
        self.calls[action] += 1
        if self.rate_limit is not None and not self.rate_limit.admit():
            self.throttled[action] += 1
            return web.Response(
                status=503, body=error_body(THROTTLE_CODE, THROTTLE_MESSAGE), content_type="text/xml"
            )
        if self._faults.get(action):
            return self._faults[action].pop(0)
        self.in_flight[action] += 1
        self.peak_in_flight[action] = max(self.peak_in_flight[action], self.in_flight[action])
        try:
            status, headers, payload = await self._forward(request, body)
            if status == 200:
                self._observe(action, form, payload)
            await self.hold(action)
        finally:
            self.in_flight[action] -= 1
        return web.Response(status=status, body=payload, headers=headers)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None, "start() the front first"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED}
            return answer.status, kept, payload

    def _observe(self, action: str, form: Mapping[str, str], payload: bytes) -> None:
        if self.observer is None:
            return
        if action == "RunInstances":
            for launch in launches(form, payload):
                self.observer.launched(launch)
        elif action == "TerminateInstances":
            for instance_id in terminated_ids(payload):
                self.observer.terminated(instance_id)
