"""Running the build's external tools: progress lines on stderr, tool output in a log file.

The build shells out to Debian's tools (debootstrap, mkfs, sfdisk, objcopy, qemu-img); their chatter
goes to the build log so the terminal shows one line per step, and a failure shows the log's tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from podvm.image.errors import ImageBuildError

_TAIL_LINES = 40


class Runner:
    """Runs commands with their output appended to `log_path`; `step` prints timed progress."""

    def __init__(self, log_path: Path, env: Mapping[str, str], quiet: bool = False) -> None:
        self.log_path = log_path
        self.env = dict(env)
        self.quiet = quiet
        self._started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self._started
            print(f"[{int(elapsed) // 60:02d}:{elapsed % 60:04.1f}] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        begin = time.monotonic()
        self.say(f"{message} ...")
        yield
        self.say(f"{message}: done in {time.monotonic() - begin:.1f}s")

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
        capture: bool = False,
    ) -> str:
        """Run `argv`; its stdout is returned when `capture`, else logged. Failure: ImageBuildError."""
        command = [str(arg) for arg in argv]
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                done = subprocess.run(
                    command,
                    input=input_text,
                    stdout=subprocess.PIPE if capture else log,
                    stderr=log,
                    env={**self.env, **(env or {})},
                    text=True,
                    check=False,
                )
            except OSError as exc:
                raise ImageBuildError(f"cannot run {command[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            raise ImageBuildError(
                f"{command[0]} failed with exit status {done.returncode}; "
                f"last lines of {self.log_path}:\n{self.tail()}"
            )
        return done.stdout if capture else ""

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_TAIL_LINES:])


def build_env(source_date_epoch: int) -> dict[str, str]:
    """A fixed environment for the tools: C locale, UTC, no prompts, clamped timestamps."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "DEBIAN_FRONTEND": "noninteractive",
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        # mke2fs takes its superblock/inode times from here instead of the clock.
        "E2FSPROGS_FAKE_TIME": str(source_date_epoch),
    }
