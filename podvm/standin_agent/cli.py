"""`peerpods-standin-agent`: run the stand-in agent on a unix socket (tests and the local demo only)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from podvm.standin_agent.agent import StandinAgent
from protocols import version
from protocols.daemon import add_logging_arguments, notify_ready, run, setup_logging
from protocols.ttrpc.server import Server

log = logging.getLogger("standin-agent")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="peerpods-standin-agent",
        description="A stand-in for kata-agent (NOT for production): runs containers as plain processes.",
    )
    p.add_argument("--socket", default="/run/kata-containers/agent.sock", help="unix socket to serve on")
    p.add_argument("--root", default="/run/peerpods-standin-agent", help="where containers and files go")
    p.add_argument("--cdh-socket", type=Path, help="pull images named by the spec through this CDH socket")
    add_logging_arguments(p)
    args = version.parse_args(p, argv)
    setup_logging(args.verbose, args.log_format)

    async def serve(stop: asyncio.Event) -> None:
        agent = StandinAgent(Path(args.root), args.cdh_socket)
        server = Server(agent.services())
        await server.listen_unix(args.socket)
        log.warning("stand-in agent serving %s: this is not kata-agent", args.socket)
        notify_ready()
        await stop.wait()
        await agent.close()
        await server.close()

    run(serve)
