"""Test support: a real `docker-registry` (Debian's distribution registry) on 127.0.0.1, and small
OCI images made from files in an OCI layout directory (no network, no daemon)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REGISTRY = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"


def require_tools() -> None:
    for tool in (REGISTRY, SKOPEO):
        if not Path(tool).exists():
            pytest.fail(
                f"{tool} missing: scripts/bootstrap installs it (Debian packages skopeo, docker-registry)"
            )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_registry(tmp_path: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """`docker-registry serve` on a free loopback port with filesystem storage under tmp_path; yields
    `127.0.0.1:<port>` once the registry says it listens."""
    require_tools()
    port = _free_port()
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth}"
    )
    process = subprocess.Popen(
        [REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    listening = threading.Event()

    def drain() -> None:
        # Reads the log to its end: a full pipe would block the registry.
        assert process.stderr is not None
        for line in process.stderr:
            if "listening on" in line:
                listening.set()
        listening.set()  # EOF: the registry exited

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not listening.wait(60) or process.poll() is not None:
            pytest.fail(f"docker-registry did not listen (exit status {process.poll()})")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=30)


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def layer_tar(files: dict[str, bytes], mode: int = 0o755) -> bytes:
    """A gzip-compressed tar with regular files (reproducible: fixed times, owners and gzip header)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass(frozen=True)
class OciImage:
    layout: Path
    tag: str
    layers: list[bytes]  # the compressed layer blobs, in order

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def make_oci_image(layout: Path, layers: list[dict[str, bytes]], tag: str = "latest") -> OciImage:
    """An OCI layout directory holding one linux/amd64 image with the given layers."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blobs = [layer_tar(files) for files in layers]
    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(blob)).hexdigest()}" for blob in blobs]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(layout, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _blob(layout, blob),
                    "size": len(blob),
                }
                for blob in blobs
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _blob(layout, manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return OciImage(layout, tag, blobs)


def read_oci_image(layout: Path, tag: str = "latest") -> tuple[dict[str, Any], list[bytes]]:
    """(manifest, layer blobs) of the image tagged `tag` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    manifest = json.loads(_read_blob(layout, entry["digest"]))
    return manifest, [_read_blob(layout, layer["digest"]) for layer in manifest["layers"]]


def write_oci_image(
    layout: Path, source: Path, manifest: dict[str, Any], layers: list[tuple[dict[str, Any], bytes]], tag: str
) -> None:
    """An OCI layout holding `manifest` (config copied from `source`) with replaced layers."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    _blob(layout, _read_blob(source, manifest["config"]["digest"]))
    for descriptor, data in layers:
        assert _blob(layout, data) == descriptor["digest"]
    body = json.dumps({**manifest, "layers": [descriptor for descriptor, _ in layers]}).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _blob(layout, body),
        "size": len(body),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def _read_blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":")
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def skopeo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run skopeo (insecure policy: these tests check our policies, not skopeo's)."""
    return subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def wrap_in_index(layout: Path, tag: str = "latest") -> None:
    """Turn the image tagged `tag` into a multi-arch index with one linux/amd64 entry (what a tag of a
    multi-platform image resolves to); push it with `skopeo copy --all`."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    platform_entry = {k: v for k, v in entry.items() if k != "annotations"}
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{**platform_entry, "platform": {"architecture": "amd64", "os": "linux"}}],
        }
    ).encode()
    top = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": _blob(layout, body),
        "size": len(body),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
