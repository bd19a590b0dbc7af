"""What the pod VM's commands import at start-up. In an emulated pod VM every imported module costs
tens of milliseconds, and these commands are on the boot's critical path: modules only some runs
need are imported when they are needed (`bench/boot.py` shows the effect)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_at_start(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing `module`."""
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("command", "not_yet"),
    [
        # The config drive is read with open(): HTTP (and with it ssl and email) only for the clouds'
        # metadata services.
        ("podvm.userdata.cli", {"urllib.request", "http.client", "ssl", "importlib.metadata"}),
        # pyroute2 only to build a pod network; the package metadata only for `version`.
        ("podvm.forwarder.cli", {"pyroute2", "importlib.metadata"}),
        # The stand-in agent enters the pod network namespace with setns(2) itself.
        ("podvm.standin_agent.cli", {"pyroute2", "importlib.metadata"}),
    ],
)
def test_command_imports_only_what_every_start_needs(command: str, not_yet: set[str]) -> None:
    assert imported_at_start(command) & not_yet == set()
