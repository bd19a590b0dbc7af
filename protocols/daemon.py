"""What every long-running command here shares: logging, an event loop, sd_notify, clean signals."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
