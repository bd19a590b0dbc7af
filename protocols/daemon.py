"""What every long-running command here shares: logging, an event loop, sd_notify, clean signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

log = logging.getLogger(__name__)

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields put on every JSON log line written in the current context (task), e.g. the sandbox id.
_log_fields: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("peerpods_log_fields", default=())


@contextlib.contextmanager
def log_fields(**fields: str) -> Iterator[None]:
    """Put `fields` on every JSON log line written inside, including by tasks started inside."""
    token = _log_fields.set(tuple({**dict(_log_fields.get()), **fields}.items()))
    try:
        yield
    finally:
        _log_fields.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so that a log pipeline can index by sandbox without parsing text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **dict(_log_fields.get()),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # ASCII only: every newline or control character in a message is escaped, so one record
        # is always one line and nothing in a message can forge another.
        return json.dumps(line)


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_FORMATS)} (LOG_FORMAT)")
    return text


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """`-v` and `-log-format` (default from LOG_FORMAT), the same on every daemon."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-log-format",
        "--log-format",
        type=_log_format,
        default=os.environ.get("LOG_FORMAT", "text"),
        metavar="{text,json}",
        help="log lines as text or as one JSON object each (default text) [env LOG_FORMAT]",
    )


def setup_logging(verbose: bool = False, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.captureWarnings(True)  # a Python warning is a log line too, in the same format


def notify_ready() -> None:
    """Tell systemd (Type=notify units) that the service is up; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 256 << 20


def keep_freed_memory() -> None:
    """Let glibc keep freed large buffers for reuse instead of returning them to the kernel.

    A relay moves 1 MiB messages all day; with glibc's defaults each one is mmapped or the heap is
    trimmed and regrown, so every message faults in fresh zeroed pages. That cost more CPU than
    the copies themselves. Resident memory stays bounded by what is in flight at peak.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` on uvloop when available; SIGTERM and SIGINT set `stop`."""
    keep_freed_memory()

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(wrapper())
    else:
        uvloop.run(wrapper())


def run_or_exit(
    main: Callable[[asyncio.Event], Awaitable[None]], startup_errors: tuple[type[Exception], ...]
) -> None:
    """`run(main)`; an error of `startup_errors` (configuration, certificates, a taken port) is one
    line in the log and exit status 2, not a traceback."""
    try:
        run(main)
    except startup_errors as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host` or `:port` -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    return host or "0.0.0.0", int(port) if port else default_port
