"""Child processes with buffered stdout/stderr that readers drain as the agent's ReadStdout does."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from protocols.ttrpc.status import Code, TtrpcError

CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def enter_namespace(path: str) -> None:
    """Move the calling thread (a child's preexec_fn: the whole child) into the network namespace at
    `path`: setns(2) through libc (os.setns is Python 3.12), not pyroute2, whose import was two thirds
    of the stand-in agent's start-up in an emulated pod VM."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
    finally:
        os.close(fd)


class OutputStream:
    """Bytes a process wrote, waiting for a reader; `read` blocks until data or end of stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._changed = asyncio.Condition()

    async def pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            async with self._changed:
                self._buffer += chunk
                self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    async def read(self, limit: int) -> bytes:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._buffer) or self._eof)
            if not self._buffer:
                raise TtrpcError(Code.INTERNAL, "eof")
            size = min(limit, len(self._buffer)) if limit > 0 else len(self._buffer)
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data


class Process:
    """One container or exec process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout = OutputStream()
        self.stderr = OutputStream()
        assert process.stdout is not None and process.stderr is not None
        self._pumps = [
            asyncio.ensure_future(self.stdout.pump(process.stdout)),
            asyncio.ensure_future(self.stderr.pump(process.stderr)),
        ]

    @classmethod
    async def spawn(cls, args: Sequence[str], env: Sequence[str], cwd: Path, netns: str = "") -> Process:
        """Start a process; in the network namespace at `netns` when the OCI spec names one."""
        if not args:
            raise TtrpcError(Code.INVALID_ARGUMENT, "process has no args")
        environment = dict(item.split("=", 1) for item in env if "=" in item)
        environment.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=environment,
                start_new_session=True,
                preexec_fn=partial(enter_namespace, netns) if netns else None,
            )
        except OSError as exc:
            raise TtrpcError(Code.INTERNAL, f"cannot start {args[0]}: {exc.strerror}") from None
        return cls(process)

    async def wait(self) -> int:
        """The exit status as the agent reports it: the code, or 128 + signal number."""
        code = await self.process.wait()
        await asyncio.gather(*self._pumps)
        return code if code >= 0 else 128 - code

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    async def write_stdin(self, data: bytes) -> int:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            raise TtrpcError(Code.FAILED_PRECONDITION, "stdin is closed")
        stdin.write(data)
        await stdin.drain()
        return len(data)

    def close_stdin(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.signal(signal.SIGKILL)
        await self.wait()
