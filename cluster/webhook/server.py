"""The admission endpoint: AdmissionReview v1 in, AdmissionReview v1 with a JSON patch out.

Served over HTTPS with the certificate cert-manager writes into the mounted Secret (`tls.crt`,
`tls.key`); a renewed certificate is picked up for new connections without a restart, as
controller-runtime's certificate watcher does. Bad input gets an AdmissionReview refusal with the
reason (the API server shows it to whoever created the pod), never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.webhook.h2 import MAX_CONCURRENT_STREAMS, AlpnDispatcher, H2Protocol, Handler
from cluster.webhook.mutate import MutationSettings, PodError, mutation
from protocols.tunnel_tls import CIPHER_SUITES, TLS_VERSIONS, check_tls_profile

log = logging.getLogger(__name__)

MUTATE_PATH = "/mutate-v1-pod"
MAX_REVIEW_BYTES = 3 * 1024 * 1024  # the API server's own request limit for objects
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"


class CertificateError(ValueError):
    """The serving certificate or the TLS profile is unusable."""


@dataclass
class ServingCertificate:
    """tls.crt/tls.key from a directory, reloaded into the same context when they change."""

    directory: Path
    min_version: str = ""
    cipher_suites: Sequence[str] = ()

    def __post_init__(self) -> None:
        try:
            check_tls_profile(self.min_version, self.cipher_suites)
        except ValueError as exc:
            raise CertificateError(str(exc)) from None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.set_alpn_protocols(["h2", "http/1.1"])  # the API server multiplexes over h2
        self.context.minimum_version = TLS_VERSIONS[self.min_version or "VersionTLS12"]
        if self.cipher_suites:
            self.context.set_ciphers(":".join(CIPHER_SUITES[name] for name in self.cipher_suites))
        self._loaded: tuple[bytes, bytes] | None = None
        self.reload()

    def _contents(self) -> tuple[bytes, bytes]:
        """Compared by content: a Secret volume swaps files by symlink, times are no reliable signal."""
        try:
            return (self.directory / CERT_FILE).read_bytes(), (self.directory / KEY_FILE).read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None

    def reload(self) -> bool:
        """Load the pair if it changed since the last load; True if it did."""
        stamp = self._contents()
        if stamp == self._loaded:
            return False
        try:
            self.context.load_cert_chain(self.directory / CERT_FILE, self.directory / KEY_FILE)
        except ssl.SSLError as exc:
            raise CertificateError(
                f"cannot load {self.directory}/{{{CERT_FILE},{KEY_FILE}}}: {exc}"
            ) from None
        self._loaded = stamp
        return True

    async def watch(self, period_s: float = 10.0) -> None:
        """Poll for a renewed pair; a half-written pair fails to load and is retried next period."""
        while True:
            await asyncio.sleep(period_s)
            try:
                if self.reload():
                    log.info("serving certificate reloaded from %s", self.directory)
            except CertificateError as exc:
                log.warning("%s", exc)


def review_response(review: object, settings: MutationSettings) -> dict[str, Any]:
    """The AdmissionReview answer to a decoded request body."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise PodError("the request is not an AdmissionReview")
    api_version = review.get("apiVersion")
    if api_version != "admission.k8s.io/v1":
        raise PodError(
            f"unsupported AdmissionReview version {str(api_version)[:40]!r}; use admission.k8s.io/v1"
        )
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise PodError("the AdmissionReview has no request uid")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    try:
        if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
            raise PodError("the object under review is not a Pod")
        patch = mutation(pod, settings)
    except PodError as exc:
        response = {"uid": request["uid"], "allowed": False, "status": {"code": 400, "message": str(exc)}}
    else:
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def answer(settings: MutationSettings, body: bytes) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for a request body posted to the admission path."""
    try:
        review = review_response(json.loads(body), settings)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, PodError) else "the body is not JSON"
        log.warning("refused admission request: %s", reason)
        return 400, json.dumps({"error": reason}).encode()
    return 200, json.dumps(review).encode()


def application(settings: MutationSettings) -> web.Application:
    """HTTP/1.1 (aiohttp)."""

    async def mutate(request: web.Request) -> web.Response:
        status, body = answer(settings, await request.read())
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(MUTATE_PATH, mutate)
    return app


def http2_handler(settings: MutationSettings) -> Handler:
    def handle(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path.split("?", 1)[0] != MUTATE_PATH:
            return 404, b'{"error": "not found"}'
        if method != "POST":
            return 405, b'{"error": "method not allowed"}'
        return answer(settings, body)

    return handle


def probes() -> web.Application:
    """Upstream's health probe endpoint (:8081): /healthz and /readyz."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    return app


@contextlib.asynccontextmanager
async def serving(
    settings: MutationSettings,
    certificate: ServingCertificate,
    host: str,
    port: int,
    probe_host: str,
    probe_port: int,
    reuse_port: bool = False,
    max_streams: int = MAX_CONCURRENT_STREAMS,
) -> AsyncIterator[tuple[int, int]]:
    """Both listeners up; yields the bound (webhook, probe) ports (0 in the arguments picks one).

    `reuse_port`: several worker processes listen on the same ports (SO_REUSEPORT), the kernel
    spreads the connections over them."""
    runners = [
        web.AppRunner(application(settings), access_log=None),
        web.AppRunner(probes(), access_log=None),
    ]
    watcher = asyncio.create_task(certificate.watch())
    listener: asyncio.Server | None = None
    connections: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
    try:
        for runner in runners:
            await runner.setup()
        http1 = runners[0].server
        assert http1 is not None
        handler = http2_handler(settings)

        def http2() -> H2Protocol:
            protocol = H2Protocol(handler, MAX_REVIEW_BYTES, max_streams)
            connections.add(protocol)
            return protocol

        def dispatcher() -> AlpnDispatcher:
            return AlpnDispatcher(http2, http1)

        listener = await asyncio.get_running_loop().create_server(
            dispatcher, host, port, ssl=certificate.context, backlog=1024, reuse_port=reuse_port or None
        )
        probe = web.TCPSite(runners[1], probe_host, probe_port, reuse_port=reuse_port or None)
        await probe.start()
        yield int(listener.sockets[0].getsockname()[1]), _port(runners[1])
    finally:
        watcher.cancel()
        if listener is not None:
            listener.close()
        for connection in list(connections):  # a stopped webhook answers no one, as a stopped process
            connection.close()
        for runner in runners:
            await runner.cleanup()


def _port(runner: web.AppRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])
