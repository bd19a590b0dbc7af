"""Test support: Go ocicrypt (tests/images/ocicrypt-go, built by scripts/build-ocicrypt-go) encrypting
and decrypting one layer through a key provider named in an OCICRYPT_KEYPROVIDER_CONFIG file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

OCICRYPT_GO = Path(sys.executable).parent / "ocicrypt-go"
PROVIDER_NAME = "peerpods"


def provider_config(path: Path, *, args: list[str] | None = None, grpc: str | None = None) -> Path:
    """An ocicrypt key-provider config naming our key provider: `cmd` (this Python running
    `-m kbs.keyprovider` with `args`) or `grpc` (host:port)."""
    attrs: dict[str, object]
    if grpc is not None:
        attrs = {"grpc": grpc}
    else:
        attrs = {"cmd": {"path": sys.executable, "args": ["-m", "kbs.keyprovider", *(args or [])]}}
    path.write_text(json.dumps({"key-providers": {PROVIDER_NAME: attrs}}))
    return path


async def ocicrypt_go(
    command: str, key: str, source: Path, target: Path, annotations: Path, config: Path
) -> tuple[int, str]:
    """(exit status, stderr) of one `ocicrypt-go encrypt|decrypt` run."""
    if not OCICRYPT_GO.exists():
        pytest.fail(
            f"{OCICRYPT_GO} missing: scripts/bootstrap builds it (scripts/build-ocicrypt-go, needs Go)"
        )
    process = await asyncio.create_subprocess_exec(
        str(OCICRYPT_GO),
        command,
        key,
        str(source),
        str(target),
        str(annotations),
        env={**os.environ, "OCICRYPT_KEYPROVIDER_CONFIG": str(config)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, stderr.decode(errors="replace")
