"""The Go reference for bench.tunnel: containerd's ttrpc as a one-hop forwarding proxy.

`scripts/build-ttrpc-proxy-go` builds bench/ttrpc-proxy-go against Debian's
golang-github-containerd-ttrpc-dev (cached outside the clone); without Go or that package the
reference is skipped and `start` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from protocols.ttrpc.client import Client

BUILD = Path(__file__).resolve().parent.parent / "scripts" / "build-ttrpc-proxy-go"


class GoProxyUnavailable(RuntimeError):
    """The reference cannot be built here (no Go toolchain or no Debian package)."""


def build() -> Path:
    """The cached binary's path, building it first if needed."""
    result = subprocess.run([str(BUILD), "--print"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GoProxyUnavailable(result.stderr.strip() or f"{BUILD.name} exited {result.returncode}")
    return Path(result.stdout.strip())


@contextlib.asynccontextmanager
async def go_proxy(socket: Path, upstream: str, methods: Iterable[str]) -> AsyncIterator[int]:
    """Serve `methods` ("service/method") on `socket`, forwarded to `upstream`; yields the pid."""
    binary = await asyncio.to_thread(build)
    process = await asyncio.create_subprocess_exec(str(binary), str(socket), upstream, *methods)
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                await (await Client.connect_unix(socket)).close()
                break
            if process.returncode is not None:
                raise GoProxyUnavailable(f"ttrpc-proxy-go exited {process.returncode}")
            await asyncio.sleep(0.05)
        yield process.pid
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
