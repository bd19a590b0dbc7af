"""`cloud-api-adaptor <provider> [flags]`: the worker-node daemon, with upstream's flags and env vars."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from pathlib import Path

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.hypervisor import hypervisor_services
from adaptor.k8s.link import ClusterError, cluster_link
from adaptor.observability import Observability
from adaptor.sandbox import SandboxManager
from adaptor.state import StateStore
from adaptor.tunnel.authority import TunnelAuthority
from protocols import version
from protocols.daemon import add_logging_arguments, notify_ready, run, setup_logging
from protocols.extras import MissingExtraError
from protocols.ttrpc.server import Server
from providers import registry
from providers.base import Provider, ProviderError
from providers.registry import ProviderPlugin
from providers.settings import ConfigError, add_arguments, resolve_all

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


async def configure(plugin: ProviderPlugin, args: argparse.Namespace) -> tuple[AdaptorConfig, Provider, str]:
    """Every setting checked, the provider built: ConfigError with all problems found, not the first."""
    values, problems = resolve_all(SETTINGS, args, os.environ)
    provider_values, provider_problems = resolve_all(plugin.settings, args, os.environ)
    config: AdaptorConfig | None = None
    try:
        config = AdaptorConfig.from_values(values)
    except ConfigError as exc:
        problems += exc.problems
    problems += provider_problems
    owner = "unconfigured"  # only to build the provider for its own checks; never used then
    if config is not None and not problems:
        try:
            owner = config.resolved_owner()
        except OSError as exc:
            problems.append(f"-state-dir (PEERPODS_STATE_DIR) {config.state_dir}: {exc.strerror}")
    provider: Provider | None = None
    try:
        provider = plugin.create(provider_values, owner)
    except ConfigError as exc:
        problems += exc.problems
    except ProviderError as exc:
        problems.append(f"{plugin.name}: {exc}")
    if problems or config is None or provider is None:
        if provider is not None:
            await provider.teardown()
        raise ConfigError(list(dict.fromkeys(problems)))
    return config, provider, owner


def check_socket_path(path: Path) -> None:
    """Refuse to replace anything but a socket: a misconfigured path must not delete a file or dir.

    A socket left there is replaced, as upstream does: during a rolling update the new adaptor takes
    the socket over from the old one.
    """
    if (path.exists() or path.is_symlink()) and not path.is_socket():
        raise ConfigError(
            [f"-socket (REMOTE_HYPERVISOR_ENDPOINT) {path}: taken by something that is not a socket"]
        )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    plugin = registry.load(args.provider)
    config, provider, owner = await configure(plugin, args)
    for note in config.not_implemented():
        log.warning("%s", note)
    try:
        check_socket_path(config.socket)
        store = StateStore(config.state_dir / "sandboxes.db")
        # Up before the first cloud call: /startup says 503 (not "refused") while the cloud is checked.
        observability = Observability(config.probe_port, store.all)
        await observability.start()
        await provider.validate()
        authority = TunnelAuthority.load_or_create(config.state_dir / "tls", config.tunnel_pki)
        cluster = cluster_link(args.provider, config.peerpods_limit_per_node)
        manager = SandboxManager(config, provider, store, authority, cluster)
        await manager.reconcile()
        if cluster:  # before serving, as upstream: a served node has its capacity
            await cluster.start()
            await cluster.adopt(store.all())
        server = Server(hypervisor_services(manager), frame_deadline_s=config.frame_deadline_s)
        await server.listen_unix(config.socket)
    except (ProviderError, OSError, sqlite3.Error, ClusterError) as exc:
        await provider.teardown()
        raise ConfigError([f"cannot start: {_one_line(exc)}"]) from None
    log.info("serving %s with the %s provider (owner %s)", config.socket, args.provider, owner)
    observability.started()
    notify_ready()
    await stop.wait()
    log.info("shutting down; pod VMs keep running and are resumed on the next start")
    await server.close()
    await manager.close()
    if cluster:
        await cluster.close()
    await provider.teardown()
    await observability.close()
    store.close()


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (SDK messages sometimes span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["help"]:  # upstream's `cloud-api-adaptor help`
        parser().print_help()
        sys.exit(0)
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    args = version.parse_args(parser(selected), argv)
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
            for problem in exc.problems:
                log.error("%s", problem)
            sys.exit(2)

    run(main_task)
