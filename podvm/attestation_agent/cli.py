"""`attestation-agent` and `api-server-rest`: the pod VM's attestation agent and its local REST API.

Upstream runs them as two processes joined by ttrpc; here the agent serves the REST API itself, so
both commands start the same service and differ in the flags they accept (each keeps upstream's):

    attestation-agent -c /run/peerpod/aa.toml [-t initdata.toml | -i <digest b64>] [--bind ...]
    api-server-rest [-b 127.0.0.1:8006] [-f resource|attestation|all] [-c aa.toml]

Init data is bound before serving (a mismatch with what the TEE measured stops the agent): from
`--initdata-toml`/`--initdata-digest` when given, else from the peer-pod files
/run/peerpod/initdata(.digest) when present.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from podvm.attestation_agent.agent import AttestationAgent
from podvm.attestation_agent.api import DEFAULT_BIND, FEATURES, build_app
from podvm.attestation_agent.config import load_aa_config
from podvm.attestation_agent.detect import detect_attester
from podvm.attestation_agent.errors import AttestationAgentError
from podvm.attestation_agent.initdata import (
    PEERPOD_INITDATA,
    PEERPOD_INITDATA_DIGEST,
    BoundInitData,
    from_digest,
    from_peerpod_files,
    from_toml_file,
)
from protocols import version
from protocols.daemon import notify_ready, run, split_host_port

log = logging.getLogger("attestation-agent")
PEERPOD_AA_CONFIG = Path("/run/peerpod/aa.toml")


def _add_agent_flags(parser: argparse.ArgumentParser, *, short: bool) -> None:
    """Agent flags; api-server-rest keeps upstream's short options for its own flags, so it gets
    long ones only (and names the config `--aa-config`)."""
    config = ("-c", "--config-file") if short else ("--aa-config",)
    parser.add_argument(
        *config,
        dest="config_file",
        type=Path,
        help="aa.toml; without it the KBS comes from AA_KBC_PARAMS or agent.aa_kbc_params on the kernel "
        f"command line (peer pods: {PEERPOD_AA_CONFIG})",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        *(("-t", "--initdata-toml") if short else ("--initdata-toml",)),
        type=Path,
        help="plain initdata TOML to bind and present",
    )
    group.add_argument(
        *(("-i", "--initdata-digest") if short else ("--initdata-digest",)),
        help="initdata digest (base64) to bind",
    )
    parser.add_argument(
        "--peerpod-initdata",
        type=Path,
        default=PEERPOD_INITDATA,
        help="peer-pod initdata (base64 gzip TOML), used when present and no other init data is given "
        "(default: %(default)s)",
    )


def _add_server_flags(parser: argparse.ArgumentParser, default_feature: str) -> None:
    parser.add_argument("-b", "--bind", default=DEFAULT_BIND, help="listen address (default: %(default)s)")
    parser.add_argument(
        "-f",
        "--features",
        choices=FEATURES,
        default=default_feature,
        help="APIs to serve (default: %(default)s)",
    )


def agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attestation-agent",
        description="Attest this pod VM to the KBS and serve the local attestation API.",
    )
    _add_agent_flags(parser, short=True)
    _add_server_flags(parser, "all")
    return parser


def api_server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="api-server-rest", description="Serve the local resource/attestation REST API of the pod VM."
    )
    _add_server_flags(parser, "resource")
    _add_agent_flags(parser, short=False)
    return parser


def load_init_data(args: argparse.Namespace) -> BoundInitData | None:
    if args.initdata_toml is not None:
        return from_toml_file(args.initdata_toml)
    if args.initdata_digest is not None:
        return from_digest(args.initdata_digest)
    if args.peerpod_initdata.exists():
        digest_file = args.peerpod_initdata.with_name(PEERPOD_INITDATA_DIGEST.name)
        return from_peerpod_files(args.peerpod_initdata, digest_file)
    return None


async def serve(agent: AttestationAgent, bind: str, feature: str, stop: asyncio.Event) -> None:
    host, port = split_host_port(bind, 8006)
    runner = web.AppRunner(build_app(agent, feature), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("serving the %s API on %s (TEE: %s)", feature, bind, agent.tee)
        notify_ready()
        await stop.wait()
    finally:
        await runner.cleanup()
        await agent.close()


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = version.parse_args(parser, argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_aa_config(args.config_file)
        logging.getLogger().setLevel(
            config.log_level.upper().replace("TRACE", "DEBUG").replace("WARN", "WARNING")
        )
        agent = AttestationAgent(detect_attester(), config, load_init_data(args))
        bound = asyncio.run(agent.bind_init_data())
    except AttestationAgentError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    log.info("init data %s", "bound to the TEE" if bound else "not bound (none given, or the TEE cannot)")
    run(lambda stop: serve(agent, args.bind, args.features, stop))
    return 0


def agent_main(argv: Sequence[str] | None = None) -> int:
    return _main(agent_parser(), argv)


def api_server_main(argv: Sequence[str] | None = None) -> int:
    return _main(api_server_parser(), argv)


if __name__ == "__main__":
    sys.exit(agent_main())
