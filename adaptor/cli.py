"""`cloud-api-adaptor <provider> [flags]`: the worker-node daemon, with upstream's flags and env vars."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.hypervisor import hypervisor_services
from adaptor.observability import Observability
from adaptor.sandbox import SandboxManager
from adaptor.state import StateStore
from adaptor.tunnel.authority import TunnelAuthority
from protocols.daemon import add_logging_arguments, notify_ready, run, setup_logging
from protocols.extras import MissingExtraError
from protocols.ttrpc.server import Server
from providers import registry
from providers.base import Provider
from providers.settings import ConfigError, add_arguments, resolve

log = logging.getLogger("cloud-api-adaptor")


def parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Only the selected provider's plugin is imported: each pulls in its cloud's SDK."""
    top = argparse.ArgumentParser(
        prog="cloud-api-adaptor",
        description="Kata remote hypervisor: runs each pod sandbox in its own (confidential) VM.",
    )
    commands = top.add_subparsers(dest="provider", metavar="PROVIDER", required=True)
    for name in registry.available():
        sub = commands.add_parser(name, help=f"run with the {name} provider")
        add_logging_arguments(sub)
        add_arguments(sub.add_argument_group("adaptor"), SETTINGS)
        if name != selected:
            continue
        try:
            plugin = registry.load(name)
        except ImportError as exc:
            sub.description = f"unavailable here: {exc}"
            continue
        add_arguments(sub.add_argument_group(f"{name} provider"), plugin.settings)
    return top


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    plugin = registry.load(args.provider)
    config = AdaptorConfig.from_values(resolve(SETTINGS, args, os.environ))
    provider_config = resolve(plugin.settings, args, os.environ)
    owner = config.resolved_owner()
    provider: Provider = plugin.create(provider_config, owner)
    store = StateStore(config.state_dir / "sandboxes.db")
    # Up before the first cloud call: /startup says 503 (not "refused") while the cloud is checked.
    observability = Observability(config.probe_port, store.all)
    await observability.start()
    validate = getattr(provider, "validate", None)
    if validate is not None:
        await validate()
    authority = TunnelAuthority.load_or_create(config.state_dir / "tls")
    manager = SandboxManager(config, provider, store, authority)
    await manager.reconcile()
    server = Server(hypervisor_services(manager))
    await server.listen_unix(config.socket)
    log.info("serving %s with the %s provider (owner %s)", config.socket, args.provider, owner)
    observability.started()
    notify_ready()
    await stop.wait()
    log.info("shutting down; pod VMs keep running and are resumed on the next start")
    await server.close()
    await manager.close()
    await provider.teardown()
    await observability.close()
    store.close()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    args = parser(selected).parse_args(argv)
    setup_logging(args.verbose, args.log_format)
    try:
        registry.load(args.provider)
    except MissingExtraError as exc:
        log.error("%s", exc)
        sys.exit(2)

    async def main_task(stop: asyncio.Event) -> None:
        try:
            await serve(args, stop)
        except ConfigError as exc:
            log.error("%s", exc)
            sys.exit(2)

    run(main_task)
