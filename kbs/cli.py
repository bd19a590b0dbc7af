"""`kbs`: run the key broker service from its configuration file (upstream's `-c/--config-file`).

With `worker_count > 1` the process starts that many worker processes, each serving the same
sockets (SO_REUSEPORT: the kernel spreads connections), all sharing the LocalFs storage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from kbs.app import MAX_HEADER_FIELD, make_app
from kbs.config import KbsConfig, KbsConfigError, build_broker, load_config
from protocols import version
from verifier.api import VerifierRegistry

log = logging.getLogger("kbs")


def _ssl_context(config: KbsConfig) -> ssl.SSLContext | None:
    if config.http.insecure_http:
        return None
    assert config.http.certificate is not None and config.http.private_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.http.certificate, config.http.private_key)
    return context


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
    runner = web.AppRunner(
        make_app(broker, config.http.max_body),
        max_field_size=MAX_HEADER_FIELD,
        access_log=None,
    )
    await runner.setup()
    context = _ssl_context(config)
    try:
        for socket in config.http.sockets:
            host, port = _host_port(socket)
            site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=reuse_port or None)
            await site.start()
            scheme = "http" if context is None else "https"
            log.info("KBS (pid %d) listening on %s://%s", os.getpid(), scheme, socket)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        broker.sessions.close()


def _run(config: KbsConfig, reuse_port: bool) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config, reuse_port=reuse_port))
    else:
        uvloop.run(serve(config, reuse_port=reuse_port))


def _worker(config_path: str, verbose: bool) -> None:
    _logging(verbose)
    _run(load_config(Path(config_path)), reuse_port=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _supervise(config_path: Path, count: int, verbose: bool) -> int:
    """Start `count` workers; stop them all on a signal or when one ends. The exit status is the
    first worker's own failure, if any (a worker stopped by the supervisor is not a failure)."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(str(config_path), verbose)) for _ in range(count)]
    for worker in workers:
        worker.start()
    stopped: set[int] = set()

    def stop(signum: int, frame: object) -> None:
        for index, worker in enumerate(workers):
            if worker.is_alive():
                stopped.add(index)
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    multiprocessing.connection.wait([w.sentinel for w in workers])
    stop(signal.SIGTERM, None)
    for worker in workers:
        worker.join()
    failures = [
        abs(worker.exitcode or 0)
        for index, worker in enumerate(workers)
        if worker.exitcode and not (index in stopped and worker.exitcode == -signal.SIGTERM)
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
            return _supervise(args.config_file, config.http.worker_count, args.verbose)
        with contextlib.suppress(KeyboardInterrupt):
            _run(config, reuse_port=False)
    except KbsConfigError as exc:
        print(f"kbs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
