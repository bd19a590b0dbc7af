"""`python -m podvm.cdh`: the confidential data hub on its ttRPC socket, configured by cdh.toml from
the init data (`/run/peerpod/cdh.toml`), attesting with the pod VM's TEE."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from podvm.attestation_agent.attester import Attester, SampleAttester
from podvm.attestation_agent.detect import detect_attester
from podvm.attestation_agent.errors import AttestationAgentError
from podvm.attestation_agent.initdata import from_peerpod_files
from podvm.cdh.config import load_cdh_config
from podvm.cdh.errors import CdhError
from podvm.cdh.hub import ConfidentialDataHub
from protocols import version
from protocols.cloudconfig import CDH_CONFIG_PATH
from protocols.daemon import notify_ready, run

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confidential-data-hub", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, default=Path(CDH_CONFIG_PATH), help="cdh.toml")
    parser.add_argument("--socket", type=Path, help="ttRPC socket (default: cdh.toml socket or upstream's)")
    parser.add_argument("--sample-attester", action="store_true", help="attest as the sample TEE (tests)")
    return parser


def _attester(sample: bool) -> Attester:
    return SampleAttester() if sample else detect_attester()


async def serve(hub: ConfidentialDataHub, socket: Path | None, stop: asyncio.Event) -> None:
    server = await hub.serve(socket)
    log.info("confidential data hub listening on %s", socket or hub.config.socket)
    notify_ready()
    try:
        await stop.wait()
    finally:
        await server.close()
        await hub.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = version.parse_args(build_parser(), argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_cdh_config(args.config)
        init_data = from_peerpod_files() if Path("/run/peerpod/initdata").exists() else None
        hub = ConfidentialDataHub(
            config, _attester(args.sample_attester), init_data.toml if init_data else None
        )
    except (CdhError, AttestationAgentError) as exc:
        print(f"confidential-data-hub: error: {exc}", file=sys.stderr)
        return 1
    run(lambda stop: serve(hub, args.socket, stop))
    return 0
