"""`agent-protocol-forwarder`: upstream's command name and flags."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from podvm.forwarder.service import AGENT_DIAL_TIMEOUT, DEFAULT_AGENT_SOCKET, DEFAULT_PORT, start_forwarder
from protocols import version
from protocols.apf import DEFAULT_CONFIG_PATH, ForwarderConfig, ForwarderConfigError
from protocols.daemon import add_logging_arguments, notify_ready, run, setup_logging, split_host_port
from protocols.podnet.config import PodNetwork, PodNetworkError
from protocols.tunnel_tls import TunnelTLSError, server_context

log = logging.getLogger("agent-protocol-forwarder")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent-protocol-forwarder",
        description="Serve the Kata agent API over mutual TLS on the pod VM; forward it to the kata-agent.",
    )
    p.add_argument(
        "-config", "--config", default=DEFAULT_CONFIG_PATH, help="apf.json written by process-user-data"
    )
    p.add_argument("-listen", "--listen", default=f"0.0.0.0:{DEFAULT_PORT}", help="address to listen on")
    p.add_argument("-kata-agent-socket", "--kata-agent-socket", default=DEFAULT_AGENT_SOCKET)
    p.add_argument(
        "-pod-namespace",
        "--pod-namespace",
        default="/run/netns/podns",
        help="network namespace containers join (empty: leave the OCI spec alone)",
    )
    p.add_argument(
        "-disable-tls",
        "--disable-tls",
        action="store_true",
        help="refused: the Kata agent API is never served without mutual TLS",
    )
    p.add_argument(
        "-tls-skip-verify",
        "--tls-skip-verify",
        action="store_true",
        help="no effect, as upstream on the server side: client certificates are always verified",
    )
    p.add_argument(
        "-host-interface",
        "--host-interface",
        default="",
        help="the VM's interface for the pod network tunnel when it is not the primary one (dedicated)",
    )
    p.add_argument(
        "-cert-file", "--cert-file", help="server certificate (manual TLS mode, instead of apf.json)"
    )
    p.add_argument("-cert-key", "--cert-key", help="server key (manual TLS mode)")
    p.add_argument("-ca-cert-file", "--ca-cert-file", help="CA for client certificates (manual TLS mode)")
    p.add_argument("-agent-dial-timeout", "--agent-dial-timeout", type=float, default=AGENT_DIAL_TIMEOUT)
    add_logging_arguments(p)
    return p


def tls_from(args: argparse.Namespace, config: ForwarderConfig) -> tuple[str, str, str]:
    if args.cert_file or args.cert_key or args.ca_cert_file:
        if not (args.cert_file and args.cert_key and args.ca_cert_file):
            raise ForwarderConfigError("-cert-file, -cert-key and -ca-cert-file go together")
        return (
            Path(args.cert_file).read_text(),
            Path(args.cert_key).read_text(),
            Path(args.ca_cert_file).read_text(),
        )
    if not (config.tls_server_cert and config.tls_server_key and config.tls_client_ca):
        raise ForwarderConfigError("apf.json lacks tls-server-cert, tls-server-key or tls-client-ca")
    return config.tls_server_cert, config.tls_server_key, config.tls_client_ca


def _no_effect(args: argparse.Namespace) -> list[str]:
    """Upstream flags given here that change nothing: said at start, never silently ignored."""
    notes = []
    if args.tls_skip_verify:
        notes.append("-tls-skip-verify has no effect: client certificates are always verified")
    return notes


def main(argv: list[str] | None = None) -> None:
    args = version.parse_args(parser(), argv)
    setup_logging(args.verbose, args.log_format)
    try:
        config = ForwarderConfig.load(Path(args.config))
        network = PodNetwork.from_document(config.pod_network) if config.pod_network else None
        if args.disable_tls:
            # Plain TCP would let anyone who reaches the pod VM run commands in its containers, and
            # the adaptor never speaks it (its own -disable-tls is refused too).
            raise ForwarderConfigError(
                "-disable-tls is refused: the agent API is only served over mutual TLS"
            )
        cert, key, client_ca = tls_from(args, config)
        tls = server_context(cert, key, client_ca, config.tls_min_version, config.tls_cipher_suites)
    except (ForwarderConfigError, PodNetworkError, TunnelTLSError, OSError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    if network is not None and not args.pod_namespace:
        log.warning("apf.json carries a pod network, but -pod-namespace is empty: no pod network here")
        network = None
    for note in _no_effect(args):
        log.warning("%s", note)
    host, port = split_host_port(args.listen, DEFAULT_PORT)

    async def serve(stop: asyncio.Event) -> None:
        if network is not None:
            # Imported only for a pod network: pyroute2 is a fifth of the forwarder's start-up.
            from podvm.forwarder import podnetwork
            from protocols.podnet.netlink import NetnsError
            from protocols.podnet.notrack import IptablesError

            # Before listening, as upstream: the adaptor reaching us means this end of the tunnel is up.
            try:
                await asyncio.to_thread(podnetwork.wait_for_primary_ip, args.host_interface)
                await asyncio.to_thread(podnetwork.setup, network, args.pod_namespace)
            except (NetnsError, IptablesError) as exc:
                log.error("pod network: %s", exc)
                raise SystemExit(1) from None
        try:
            server, upstream, _ = await start_forwarder(
                host, port, Path(args.kata_agent_socket), tls, args.pod_namespace, args.agent_dial_timeout
            )
        except OSError as exc:
            log.error("-listen %s: %s", args.listen, exc.strerror or exc)
            if network is not None:
                with contextlib.suppress(NetnsError, IptablesError):
                    await asyncio.to_thread(podnetwork.teardown, network, args.pod_namespace)
            raise SystemExit(2) from None
        notify_ready()
        await stop.wait()
        await server.close()
        await upstream.close()
        if network is not None:
            try:
                await asyncio.to_thread(podnetwork.teardown, network, args.pod_namespace)
            except (NetnsError, IptablesError) as exc:
                log.warning("pod network teardown: %s", exc)

    run(serve)
