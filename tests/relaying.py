"""Byte relays the tests put between a client and a real server to play a network's faults."""

from __future__ import annotations

import asyncio
import contextlib


async def pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, close_after: asyncio.Event | None = None
) -> None:
    """Copy `source` to `sink` until EOF, then close `sink`, once `close_after` is set if given."""
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if close_after is not None:
            await close_after.wait()
    sink.close()
