"""`attestation-service`: upstream's REST and gRPC attestation service APIs from one process.

Upstream ships them as two commands (`restful-as --socket`, `grpc-as --socket`); here `--socket` is
the REST address and `--grpc-socket` the gRPC one (either may be "" to turn it off). Flags override the
JSON config file (`-c`). `attestation-service verify ...` checks one evidence file instead
(`verifier.server.verify`). Once listening, one line per API goes to stdout
(`attestation-service: rest listening on 127.0.0.1:8080`), so wrappers can learn ephemeral ports.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from aiohttp import web

from protocols import version
from verifier.server import verify
from verifier.server.config import ConfigError, ServerConfig, build_service, load_config
from verifier.server.grpc_api import start_grpc
from verifier.server.rest import make_app
from verifier.service import AttestationService

log = logging.getLogger("attestation-service")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attestation-service",
        description="Confidential Containers attestation service: verifies TEE evidence, appraises it "
        "with Rego policy and reference values, and issues EAR tokens (REST and gRPC APIs).",
    )
    parser.add_argument(
        "-c", "--config-file", type=Path, help="JSON configuration file (upstream CoCo-AS keys)"
    )
    parser.add_argument(
        "-s", "--socket", help="REST listen address HOST:PORT ('' = off; default 127.0.0.1:8080)"
    )
    parser.add_argument(
        "--grpc-socket", help="gRPC listen address HOST:PORT ('' = off; default 127.0.0.1:50004)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep policies and reference values under this directory"
    )
    parser.add_argument("--policy-dir", type=Path, help="directory of <policy-id>.rego files")
    parser.add_argument("--rvps-store", type=Path, help="JSON file holding the registered reference values")
    parser.add_argument("--signer-key", type=Path, help="EAR signing key, P-256 PEM (default: ephemeral key)")
    parser.add_argument(
        "--signer-cert", type=Path, help="PEM certificate chain of the signing key, leaf first"
    )
    parser.add_argument(
        "-t", "--https-pubkey-cert", type=Path, help="TLS certificate chain (PEM) for both APIs"
    )
    parser.add_argument("-k", "--https-prikey", type=Path, help="TLS private key (PEM) for both APIs")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    return version.parse_args(parser, argv)


def resolve_config(args: argparse.Namespace) -> ServerConfig:
    config = load_config(args.config_file) if args.config_file else ServerConfig()
    for flag, attribute in (
        ("socket", "socket"),
        ("grpc_socket", "grpc_socket"),
        ("work_dir", "work_dir"),
        ("policy_dir", "policy_dir"),
        ("rvps_store", "rvps_store"),
        ("signer_key", "signer_key"),
        ("signer_cert", "signer_cert"),
        ("https_pubkey_cert", "https_cert"),
        ("https_prikey", "https_key"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(config, attribute, value)
    if (config.https_cert is None) != (config.https_key is None):
        raise ConfigError("HTTPS needs both --https-pubkey-cert and --https-prikey")
    return config


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


async def serve(service: AttestationService, config: ServerConfig) -> None:
    """Run the configured APIs until SIGINT/SIGTERM."""
    tls: ssl.SSLContext | None = None
    grpc_credentials = None
    if config.https_cert is not None and config.https_key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(config.https_cert, config.https_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate/key: {exc}") from None
        grpc_credentials = grpc.ssl_server_credentials([(_read(config.https_key), _read(config.https_cert))])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    runner: web.AppRunner | None = None
    grpc_server = None
    try:
        if config.socket:
            host, port = split_address(config.socket)
            runner = web.AppRunner(make_app(service), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port, ssl_context=tls)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            print(f"attestation-service: rest listening on {host}:{bound}", flush=True)
        if config.grpc_socket:
            host, _ = split_address(config.grpc_socket)
            grpc_server, bound = await start_grpc(service, config.grpc_socket, grpc_credentials)
            print(f"attestation-service: grpc listening on {host}:{bound}", flush=True)
        if runner is None and grpc_server is None:
            raise ConfigError("both APIs are turned off: give --socket and/or --grpc-socket")
        await stop.wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        if runner is not None:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["verify"]:
        return verify.main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve_config(args)
        service = build_service(config)
        asyncio.run(serve(service, config))
    except ConfigError as exc:
        print(f"attestation-service: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the address is in use
        print(f"attestation-service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
