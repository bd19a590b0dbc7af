"""`peerpods-webhook`: upstream's peer-pods mutating webhook, with its flags and environment variables.

Upstream's Deployment passes `--leader-elect --health-probe-bind-address=:8081
--metrics-bind-address=:8443`; all are accepted. A webhook has no leader-only work, so
`--leader-elect` changes nothing (every replica answers admission requests, as upstream's do).

`--workers N` runs N processes on the same ports (SO_REUSEPORT: the kernel spreads connections).
The API server sends a burst over HTTP/2, one stream per pod, and opens another connection only
when one is at its stream limit; with several workers each connection therefore allows only
WORKER_STREAMS streams, so a burst opens connections (once: they are kept) that reach all workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from functools import partial
from pathlib import Path

from cluster.webhook.h2 import MAX_CONCURRENT_STREAMS
from cluster.webhook.mutate import MutationSettings
from cluster.webhook.server import CertificateError, ServingCertificate, serving
from protocols import version
from protocols.daemon import add_logging_arguments, notify_ready, run_or_exit, setup_logging, split_host_port
from protocols.workers import run_workers

log = logging.getLogger("peerpods-webhook")

DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # controller-runtime's, where the chart mounts it
WORKER_STREAMS = 16  # HTTP/2 streams per connection when there are several workers


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="peerpods-webhook",
        description="Mutating admission webhook: sizes peer pod VMs from the pod's resources and charges "
        "the node one pod VM instead. Environment: TARGET_RUNTIMECLASS (default kata-remote), "
        "POD_VM_EXTENDED_RESOURCE (default kata.peerpods.io/vm), TLS_MIN_VERSION, TLS_CIPHER_SUITES.",
    )
    add_logging_arguments(top)
    top.add_argument("--cert-dir", default=DEFAULT_CERT_DIR, help="directory with tls.crt and tls.key")
    top.add_argument(
        "--webhook-bind-address", default=":9443", help="HTTPS admission endpoint (default :9443)"
    )
    top.add_argument(
        "--health-probe-bind-address", default=":8081", help="/healthz and /readyz (default :8081)"
    )
    top.add_argument("--metrics-bind-address", default="0", help="accepted for upstream's manifests; unused")
    top.add_argument(
        "--leader-elect", action="store_true", help="accepted; a webhook has no leader-only work"
    )
    top.add_argument(
        "--workers", type=_positive, default=default_workers(),
        help="processes serving the same ports (default: the whole CPUs this process may use)",
    )  # fmt: skip
    return top


def default_workers(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may run on, bounded by its cgroup's CPU quota (the container's CPU
    limit: 500m is one worker), at least one. A pod sees all of its node's CPUs, and a worker per
    CPU of a large node would not fit the container's memory limit."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        return max(1, min(cpus, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or "max": no quota
        return cpus


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    shared = args.workers > 1
    settings = MutationSettings.from_env()
    suites = [name.strip() for name in os.environ.get("TLS_CIPHER_SUITES", "").split(",") if name.strip()]
    certificate = ServingCertificate(
        Path(args.cert_dir), os.environ.get("TLS_MIN_VERSION", "").strip(), suites
    )
    host, port = split_host_port(args.webhook_bind_address, 9443)
    probe_host, probe_port = split_host_port(args.health_probe_bind_address, 8081)
    streams = WORKER_STREAMS if shared else MAX_CONCURRENT_STREAMS
    async with serving(
        settings, certificate, host, port, probe_host, probe_port, reuse_port=shared, max_streams=streams
    ) as (bound, probe):
        log.info(
            "serving admission reviews on %s:%d for runtime class %s (extended resource %s); probes on :%d",
            host, bound, settings.runtime_class, settings.extended_resource, probe,
        )  # fmt: skip
        notify_ready()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = version.parse_args(parser(), sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose, args.log_format)
    if args.workers == 1:
        run_or_exit(partial(serve, args), (CertificateError, OSError))
        return
    for address, default in ((args.webhook_bind_address, 9443), (args.health_probe_bind_address, 8081)):
        host, port = split_host_port(address, default)
        try:  # a taken port is said once, not by every worker
            socket.create_server((host, port), reuse_port=True).close()
        except OSError as exc:
            log.error("cannot start: cannot listen on %s: %s", address, exc.strerror or exc)
            raise SystemExit(2) from None
    raise SystemExit(_supervise(args))


def _worker(args: argparse.Namespace) -> None:
    setup_logging(args.verbose, args.log_format)
    run_or_exit(partial(serve, args), (CertificateError, OSError))


def _supervise(args: argparse.Namespace) -> int:
    """Run the workers until a signal or until one of them ends; then stop the others (a pod whose
    worker died is restarted whole). The status is the first failure of a worker not stopped here."""
    ended = run_workers(_worker, (args,), args.workers)
    if ended.asked:
        return 0
    return next((abs(w.code) for w in ended.exits if w.code and w.code != -signal.SIGTERM), 1)
