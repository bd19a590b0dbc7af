"""moto's EC2 server in a child process, so that it has an interpreter (and GIL) of its own.

Run as `python -m tests.chaos.moto_server`: prints its URL on one line, serves until stdin closes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class MotoStartError(RuntimeError):
    """The moto child process did not come up."""


def main() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """The URL of a fresh moto server on 127.0.0.1, its request log in `log`."""
    env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}  # 1,300 stock AMIs slow moto down
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.moto_server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO, env=env,
        )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line.startswith(b"http://"):
            raise MotoStartError(f"moto did not start; see {log}")
        yield line.decode().strip()
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


if __name__ == "__main__":
    main()
