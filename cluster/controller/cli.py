"""`peerpods-controller`: the PeerPod controller, with upstream peerpod-ctrl's flags.

Upstream's Deployment passes `--leader-elect --health-probe-bind-address=:8081
--metrics-bind-address=...`. Cloud settings and credentials come from the environment (the chart
passes peer-pods-cm and peer-pods-secret with envFrom); the namespace of the Lease from
PEERPODS_NAMESPACE. Losing leadership ends the process (status 1) so that Kubernetes restarts it as a
candidate, as controller-runtime does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Coroutine
from functools import partial
from typing import Any

from aiohttp import web

from cluster.controller.clouds import Clouds
from cluster.controller.leader import LeaderElector
from cluster.controller.reconcile import PeerPodController
from cluster.kubeapi import KubeClient, KubeConfig, KubeConfigError
from protocols import version
from protocols.daemon import add_logging_arguments, notify_ready, run_or_exit, setup_logging, split_host_port

log = logging.getLogger("peerpods-controller")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="peerpods-controller",
        description="Deletes the cloud instances of PeerPods whose adaptor never released them.",
    )
    add_logging_arguments(top)
    top.add_argument("--leader-elect", action="store_true", help="only the holder of the Lease acts")
    top.add_argument(
        "--health-probe-bind-address", default=":8081", help="/healthz and /readyz (default :8081)"
    )
    top.add_argument("--metrics-bind-address", default="0", help="accepted for upstream's manifests; unused")
    top.add_argument("--workers", type=int, default=32, help="PeerPods reconciled at once (default 32)")
    return top


class LeadershipLost(Exception):
    pass


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    client = KubeClient(KubeConfig.load())
    clouds = Clouds()
    controller = PeerPodController(client, clouds, workers=args.workers)
    elector = None
    if args.leader_elect:
        namespace = os.environ.get("PEERPODS_NAMESPACE") or client.config.namespace
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"
        elector = LeaderElector(client, namespace, identity)
    probes = web.AppRunner(_probes(controller), access_log=None)
    await probes.setup()
    host, port = split_host_port(args.health_probe_bind_address, 8081)
    await web.TCPSite(probes, host, port).start()
    notify_ready()
    try:
        if elector is not None and not await _until_stop(elector.acquire(), stop):
            return
        work = [asyncio.create_task(controller.run())]
        if elector is not None:
            work.append(asyncio.create_task(elector.hold()))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*work, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in [*work, stopping]:
            task.cancel()
        for task in work:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if stopping not in done:
            raise LeadershipLost
    finally:
        if elector is not None:
            await elector.release()
        await probes.cleanup()
        await clouds.close()
        await client.close()


async def _until_stop(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` unless `stop` is set first; True if it finished."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    stopping.cancel()
    return task in done


def _probes(controller: PeerPodController) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return (
            web.Response(text="ok")
            if controller.synced.is_set()
            else web.Response(status=503, text="syncing")
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def main(argv: list[str] | None = None) -> None:
    args = version.parse_args(parser(), sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose, args.log_format)

    try:
        run_or_exit(partial(serve, args), (KubeConfigError, OSError))
    except LeadershipLost:
        log.error("leadership lost: exiting so that a new candidate takes over")
        raise SystemExit(1) from None
