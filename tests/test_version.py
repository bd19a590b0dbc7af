"""`version`, `-version` and `--version` on every command this distribution installs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = sorted(importlib.metadata.distribution("peerpods").entry_points, key=lambda e: e.name)
VERSION = importlib.metadata.version("peerpods")


def test_every_command_is_covered() -> None:
    assert {e.name for e in COMMANDS} >= {
        "cloud-api-adaptor", "agent-protocol-forwarder", "process-user-data", "kbs", "kbs-client",
        "attestation-service", "attestation-agent", "api-server-rest", "peerpods-standin-agent",
        "kata-shim-driver", "peerpods-demo",
    }  # fmt: skip


@pytest.mark.parametrize("word", ["version", "-version", "--version"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda e: e.name)
def test_version(
    command: importlib.metadata.EntryPoint, word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        command.load()([word])
    assert done.value.code == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert first == f"{command.name} version {VERSION}"
    assert rest == [f"  python: {sys.version.split()[0]}"]


def test_version_of_the_installed_script_as_upstream_calls_it() -> None:
    script = Path(sys.executable).with_name("cloud-api-adaptor")
    done = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith(f"cloud-api-adaptor version {VERSION}\n")
