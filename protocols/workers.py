"""Worker processes on shared SO_REUSEPORT sockets, for the servers that scale over CPUs (`kbs`,
`peerpods-webhook`): one supervisor so both stop alike on a signal or when a worker ends."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerExit:
    code: int  # the process's exit code (-N: killed by signal N)
    terminated: bool  # the supervisor ended it (a signal came, or another worker ended first)


@dataclass(frozen=True)
class WorkersEnded:
    asked: bool  # a SIGTERM/SIGINT ended the run, not a worker of its own accord
    exits: tuple[WorkerExit, ...]


def run_workers(target: Callable[..., None], args: tuple[object, ...], count: int) -> WorkersEnded:
    """Start `count` spawned processes running `target(*args)`; on SIGTERM or SIGINT, or when one of
    them ends, terminate the others and wait for all."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=target, args=args) for _ in range(count)]
    for worker in workers:
        worker.start()
    terminated: set[int] = set()
    asked = False

    def stop_all() -> None:
        for index, worker in enumerate(workers):
            if worker.is_alive():
                terminated.add(index)
                worker.terminate()

    def on_signal(signum: int, frame: object) -> None:
        nonlocal asked
        asked = True
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    multiprocessing.connection.wait([worker.sentinel for worker in workers])
    first_end_was_asked = asked
    stop_all()
    for worker in workers:
        worker.join()
    exits = tuple(
        WorkerExit(worker.exitcode or 0, index in terminated) for index, worker in enumerate(workers)
    )
    return WorkersEnded(first_end_was_asked, exits)
