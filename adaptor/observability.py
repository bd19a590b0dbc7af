"""The adaptor's HTTP side, on 127.0.0.1:PROBE_PORT (8000) like upstream's startup probe.

- `/startup`: 503 until start-up reconciliation is done and the hypervisor socket listens, then 200.
  The DaemonSet's startupProbe polls it; a rolling update waits for the new adaptor on it.
- `/healthz`: 200 while the process serves.
- `/metrics`: Prometheus text format (adaptor.metrics, providers.retry, and the process's own).

The socket is bound with SO_REUSEPORT, as upstream does: during a rolling update (maxSurge 1, host
network) the old and new adaptors of a node both hold the port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from adaptor.metrics import SandboxStates
from adaptor.state import SandboxRecord
from providers.settings import ConfigError

HOST = "127.0.0.1"


class Observability:
    def __init__(self, port: int, records: Callable[[], Iterable[SandboxRecord]]) -> None:
        self.port = port
        self._started = False
        # The sandbox gauge belongs to this server (it reads this adaptor's store); everything else
        # is process-wide, in prometheus_client's default registry.
        self._own = CollectorRegistry()
        self._own.register(SandboxStates(records))
        app = web.Application()
        app.router.add_get("/startup", self._startup)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        """Listen (port 0: don't); ConfigError naming PROBE_PORT if the port cannot be had."""
        if not self.port:
            return
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_port=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError([f"PROBE_PORT: cannot listen on {HOST}:{self.port}: {exc.strerror}"]) from None

    def started(self) -> None:
        """Start-up is over: /startup answers 200 from now on."""
        self._started = True

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _startup(self, _request: web.Request) -> web.Response:
        if self._started:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="starting: reconciling sandboxes with the cloud\n")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY) + generate_latest(self._own)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
