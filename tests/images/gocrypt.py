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


def provider_config(
    path: Path, *, args: list[str] | None = None, grpc: str | None = None, name: str = PROVIDER_NAME
) -> Path:
    """An ocicrypt key-provider config naming our key provider: `cmd` (this Python running
    `-m kbs.keyprovider` with `args`) or `grpc` (host:port)."""
    attrs: dict[str, object]
    if grpc is not None:
        attrs = {"grpc": grpc}
    else:
        attrs = {"cmd": {"path": sys.executable, "args": ["-m", "kbs.keyprovider", *(args or [])]}}
    path.write_text(json.dumps({"key-providers": {name: attrs}}))
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


async def encrypt_oci_image(src: Path, dst: Path, key: str, config: Path, tag: str = "latest") -> None:
    """Copy the OCI layout image `src:tag` to `dst:tag` with every layer encrypted by Go ocicrypt through
    the key provider (what `skopeo copy --encryption-key provider:...` does with a recent skopeo)."""
    import hashlib

    from tests.images.registry import read_oci_image, write_oci_image

    manifest, blobs = read_oci_image(src, tag)
    layers = []
    for index, (descriptor, blob) in enumerate(zip(manifest["layers"], blobs, strict=True)):
        plain, cipher, annotations = (
            dst.parent / f"{dst.name}-{index}.{ext}" for ext in ("plain", "enc", "json")
        )
        plain.write_bytes(blob)
        status, err = await ocicrypt_go("encrypt", key, plain, cipher, annotations, config)
        assert status == 0, err
        data = cipher.read_bytes()
        layers.append(
            (
                {
                    "mediaType": descriptor["mediaType"] + "+encrypted",
                    "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
                    "size": len(data),
                    "annotations": json.loads(annotations.read_text()),
                },
                data,
            )
        )
        for path in (plain, cipher, annotations):
            path.unlink()
    write_oci_image(dst, src, manifest, layers, tag)
