"""`signedBy` (GPG simple signing) as image-rs checks it: the signatures of an image are the files in
`<sigstore>/<repository>@sha256=<hex>/` of the sigstore lookaside that the sigstore config
(containers-registries.d YAML: `docker` namespaces, then `default-docker`) names for the image (file
URLs only, as image-rs); each is an OpenPGP signed message, verified with `gpgv` against the
policy's keyring, whose payload must name the manifest digest and fit `signedIdentity` (default
`matchRepoDigestOrExact`). One good signature is enough."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from podvm.cdh.identity import IdentityMismatch, check_identity
from podvm.cdh.reference import ImageReference

GPGV = "/usr/bin/gpgv"
MAX_SIGNATURES = 16
MAX_SIGNATURE_BYTES = 64 * 1024
DEFAULT_IDENTITY = {"type": "matchRepoDigestOrExact"}


class SimpleSigningError(Exception):
    """No signature fits; the message says why."""


def sigstore_base(config_yaml: bytes, image: ImageReference, namespaces: list[str]) -> str:
    """The sigstore base URL for `image`: the most specific `docker` namespace, else `default-docker`."""
    try:
        doc = yaml.safe_load(config_yaml) or {}
        docker = doc.get("docker") or {}
        for namespace in namespaces:
            entry = docker.get(namespace)
            if isinstance(entry, dict) and isinstance(entry.get("sigstore"), str):
                return str(entry["sigstore"])
        default = doc.get("default-docker") or {}
        if isinstance(default.get("sigstore"), str):
            return str(default["sigstore"])
    except (yaml.YAMLError, AttributeError, TypeError):
        raise SimpleSigningError("Invalid simple signing sigstore config") from None
    raise SimpleSigningError("The sigstore base url is none")


def read_signatures(base: str, image: ImageReference, manifest_digest: str) -> list[bytes]:
    """The signature files of `image@manifest_digest` under a `file://` sigstore."""
    if not base.startswith("file://"):
        raise SimpleSigningError(f"only file:// sigstores are supported, not {base[:80]!r}")
    algorithm, _, value = manifest_digest.partition(":")
    directory = Path(base.removeprefix("file://")) / f"{image.repository}@{algorithm}={value}"
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())[:MAX_SIGNATURES]
        return [p.read_bytes()[:MAX_SIGNATURE_BYTES] for p in files]
    except OSError:
        return []


async def verify_payload(keyring: bytes, signature: bytes) -> dict[str, Any]:
    """The payload of an OpenPGP signed message whose signature `gpgv` accepts with `keyring`."""
    with tempfile.TemporaryDirectory(prefix="cdh-gpgv-") as scratch:
        keyring_path, signature_path = Path(scratch) / "keyring.gpg", Path(scratch) / "signature"
        keyring_path.write_bytes(keyring)
        signature_path.write_bytes(signature)
        process = await asyncio.create_subprocess_exec(
            GPGV,
            "--homedir",
            scratch,
            "--keyring",
            str(keyring_path),
            "--output",
            "-",
            str(signature_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        payload, _ = await process.communicate()
    if process.returncode != 0:
        raise SimpleSigningError("signature does not verify with the policy's keyring")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise SimpleSigningError("signature payload is not JSON") from None
    if not isinstance(doc, dict):
        raise SimpleSigningError("signature payload is not a JSON object")
    return doc


async def check_simple_signing(
    keyring: bytes,
    signatures: list[bytes],
    image: ImageReference,
    manifest_digest: str,
    identity: dict[str, Any] | None,
) -> None:
    """Accept if one signature verifies and names this image; else SimpleSigningError with reasons."""
    reasons = []
    for signature in signatures:
        try:
            payload = await verify_payload(keyring, signature)
            critical = payload.get("critical") or {}
            if (critical.get("image") or {}).get("docker-manifest-digest") != manifest_digest:
                raise SimpleSigningError("Manifest digest does not match signature.")
            signed = (critical.get("identity") or {}).get("docker-reference")
            if not isinstance(signed, str):
                raise SimpleSigningError("signature payload has no docker-reference")
            check_identity(identity or DEFAULT_IDENTITY, image, signed)
            return
        except (SimpleSigningError, IdentityMismatch, AttributeError) as exc:
            reasons.append(str(exc))
    raise SimpleSigningError(
        f"The signatures do not satisfied! Reject reason: {reasons or ['Can not find any signatures.']}"
    )
