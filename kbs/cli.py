"""`kbs`: run the key broker service from its configuration file (upstream's `-c/--config-file`).

With `worker_count > 1` the process starts that many worker processes, each serving the same
sockets (SO_REUSEPORT: the kernel spreads connections), all sharing the LocalFs storage and one
metrics directory (a scrape of any worker reports them all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from socket import AF_INET, AF_INET6, create_server

from aiohttp import web

from kbs.config import KbsConfig, KbsConfigError, build_broker, load_config
from kbs.httpserver import make_runner
from kbs.metrics import MULTIPROCESS_ENV
from kbs.policy import ResourcePolicyError
from kbs.storage import StorageError
from protocols import version
from protocols.workers import run_workers
from verifier.api import VerifierRegistry

log = logging.getLogger("kbs")


class StartError(Exception):
    """The KBS cannot start serving (a socket taken, a certificate unreadable); one line says why."""


def _ssl_context(config: KbsConfig) -> ssl.SSLContext | None:
    if config.http.insecure_http:
        return None
    assert config.http.certificate is not None and config.http.private_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.http.certificate, config.http.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartError(
            f"cannot load http_server.certificate / private_key: {exc.strerror or exc}"
        ) from None
    return context


def _listen_error(socket: str, exc: OSError) -> StartError:
    return StartError(f"cannot listen on {socket}: {os.strerror(exc.errno) if exc.errno else exc}")


def _check_sockets(config: KbsConfig) -> None:
    """Bind each socket once before starting workers: a taken port is then said once, not by each."""
    for socket in config.http.sockets:
        host, port = _host_port(socket)
        try:
            create_server((host, port), family=AF_INET6 if ":" in host else AF_INET, reuse_port=True).close()
        except OSError as exc:
            raise _listen_error(socket, exc) from None


def _host_port(socket: str) -> tuple[str, int]:
    host, sep, port = socket.rpartition(":")
    if not sep or not port.isdigit():
        raise KbsConfigError(f"http_server.sockets entry {socket!r} is not host:port")
    return host.strip("[]"), int(port)


async def serve(
    config: KbsConfig, *, reuse_port: bool = False, verifiers: VerifierRegistry | None = None
) -> None:
    """Serve until cancelled or SIGTERM/SIGINT (`verifiers`: see `build_broker`)."""
    broker = build_broker(config, verifiers)
    runner = make_runner(
        broker,
        max_body=config.http.max_body,
        idle_timeout=config.http.idle_timeout,
        body_timeout=config.http.body_timeout,
    )
    try:
        await runner.setup()  # loads the broker's storage
    except (ResourcePolicyError, StorageError) as exc:
        raise StartError(str(exc)) from None
    try:
        context = _ssl_context(config)
        for socket in config.http.sockets:
            host, port = _host_port(socket)
            site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=reuse_port or None)
            try:
                await site.start()
            except OSError as exc:
                raise _listen_error(socket, exc) from None
            scheme = "http" if context is None else "https"
            log.info("KBS (pid %d) listening on %s://%s", os.getpid(), scheme, socket)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()  # closes the broker's storage too


def _run(config: KbsConfig, reuse_port: bool) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config, reuse_port=reuse_port))
    else:
        uvloop.run(serve(config, reuse_port=reuse_port))


def _worker(config_path: str, verbose: bool) -> None:
    _logging(verbose)
    try:
        _run(load_config(Path(config_path)), reuse_port=True)
    except (KbsConfigError, StartError) as exc:
        print(f"kbs: {exc}", file=sys.stderr)
        sys.exit(2)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A fresh multiprocess directory where the workers' metrics add up (`kbs.metrics`), unless one
    is configured already; set before the workers start, as prometheus_client requires."""
    if os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="kbs-metrics-") as directory:
        os.environ[MULTIPROCESS_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_ENV]


def _supervise(config_path: Path, count: int, verbose: bool) -> int:
    """Start `count` workers; stop them all on a signal or when one ends. The exit status is the
    first worker's own failure, if any (a worker stopped by the supervisor is not a failure)."""
    with _shared_metrics():
        return _run_workers(config_path, count, verbose)


def _run_workers(config_path: Path, count: int, verbose: bool) -> int:
    ended = run_workers(_worker, (str(config_path), verbose), count)
    failures = [
        abs(worker.code)
        for worker in ended.exits
        if worker.code and not (worker.terminated and worker.code == -signal.SIGTERM)
    ]
    return failures[0] if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kbs", description="Key Broker Service (Trustee KBS protocol 0.4.0)"
    )
    parser.add_argument(
        "-c",
        "--config-file",
        type=Path,
        default=os.environ.get("KBS_CONFIG_FILE"),
        help="TOML configuration file (default: $KBS_CONFIG_FILE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = version.parse_args(parser, argv)
    if args.config_file is None:
        parser.error("a configuration file is required (-c/--config-file or KBS_CONFIG_FILE)")
    _logging(args.verbose)
    try:
        config = load_config(args.config_file)
        if config.http.worker_count > 1:
            build_broker(config)  # fail fast on a bad configuration, and create shared files once
            _check_sockets(config)
            return _supervise(args.config_file, config.http.worker_count, args.verbose)
        with contextlib.suppress(KeyboardInterrupt):
            _run(config, reuse_port=False)
    except (KbsConfigError, StartError) as exc:
        print(f"kbs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
