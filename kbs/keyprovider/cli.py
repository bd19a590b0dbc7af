"""`peerpods-keyprovider`: without `--grpc` it is an ocicrypt `cmd` key provider (one request JSON on
stdin, the response JSON on stdout, a message and exit status 1 on stderr when refused); with
`--grpc host:port` it serves `keyprovider.KeyProviderService`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kbs.keyprovider.grpc_server import MAX_MESSAGE_BYTES, start_grpc
from kbs.keyprovider.provider import KbsUpload, KeyProvider, KeyProviderError, ProviderConfig
from protocols import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerpods-keyprovider", description=__doc__)
    parser.add_argument("--provider-name", help="the <name> of provider:<name>:... (default: the only one)")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="serve gRPC instead of one stdin/stdout request")
    parser.add_argument("--kbs-url", help="register each KEK in this KBS as the resource named by keyid")
    parser.add_argument("--admin-key-file", type=Path, help="KBS admin private key (PEM, Ed25519 or P-256)")
    parser.add_argument("--issuer", help="iss claim of the admin token (when the KBS checks one)")
    parser.add_argument("--cert-file", type=Path, help="root certificate (PEM) of an HTTPS KBS")
    return parser


def config_from(args: argparse.Namespace) -> ProviderConfig:
    kbs = None
    if args.kbs_url is not None:
        if args.admin_key_file is None:
            raise KeyProviderError("--kbs-url needs --admin-key-file")
        try:
            pem = args.admin_key_file.read_bytes()
            ca_pem = args.cert_file.read_text() if args.cert_file is not None else None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyProviderError(f"cannot read the admin key or KBS certificate: {exc}") from None
        kbs = KbsUpload(args.kbs_url, pem, args.issuer, ca_pem)
    return ProviderConfig(name=args.provider_name, kbs=kbs)


async def serve(provider: KeyProvider, address: str) -> None:
    server, port = await start_grpc(provider, address)
    logging.getLogger(__name__).info("keyprovider.KeyProviderService listening on port %d", port)
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    args = version.parse_args(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        provider = KeyProvider(config_from(args))
        if args.grpc is not None:
            asyncio.run(serve(provider, args.grpc))
            return 0
        request = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1)
        if len(request) > MAX_MESSAGE_BYTES:
            raise KeyProviderError(f"request larger than {MAX_MESSAGE_BYTES} bytes")
        output = asyncio.run(provider.handle(request))
    except (KeyProviderError, OSError) as exc:
        print(f"peerpods-keyprovider: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()
    return 0
