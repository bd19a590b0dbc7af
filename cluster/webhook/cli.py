"""`peerpods-webhook`: upstream's peer-pods mutating webhook, with its flags and environment variables.

Upstream's Deployment passes `--leader-elect --health-probe-bind-address=:8081
--metrics-bind-address=:8443`; all are accepted. A webhook has no leader-only work, so
`--leader-elect` changes nothing (every replica answers admission requests, as upstream's do).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from functools import partial
from pathlib import Path

from cluster.webhook.mutate import MutationSettings
from cluster.webhook.server import CertificateError, ServingCertificate, serving
from protocols import version
from protocols.daemon import add_logging_arguments, notify_ready, run_or_exit, setup_logging, split_host_port

log = logging.getLogger("peerpods-webhook")

DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # controller-runtime's, where the chart mounts it


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
    return top


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    settings = MutationSettings.from_env()
    suites = [name.strip() for name in os.environ.get("TLS_CIPHER_SUITES", "").split(",") if name.strip()]
    certificate = ServingCertificate(
        Path(args.cert_dir), os.environ.get("TLS_MIN_VERSION", "").strip(), suites
    )
    host, port = split_host_port(args.webhook_bind_address, 9443)
    probe_host, probe_port = split_host_port(args.health_probe_bind_address, 8081)
    async with serving(settings, certificate, host, port, probe_host, probe_port) as (bound, probe):
        log.info(
            "serving admission reviews on %s:%d for runtime class %s (extended resource %s); probes on :%d",
            host, bound, settings.runtime_class, settings.extended_resource, probe,
        )  # fmt: skip
        notify_ready()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = version.parse_args(parser(), sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose, args.log_format)
    run_or_exit(partial(serve, args), (CertificateError, OSError))
