"""PullImage: manifest, signature policy, then each layer downloaded, decrypted when encrypted, and
unpacked into `<bundle>/rootfs`.

An encrypted layer is downloaded to a work file while its HMAC is computed; its key is unwrapped
(KEK from the KBS after attestation); only when the HMAC over the whole ciphertext matches is it
decrypted, streaming into decompression and unpacking. So no plaintext layer is ever written, and on
any failure the partial rootfs is removed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from podvm.cdh.errors import (
    CREATE_BUNDLE_FAILED,
    DECRYPT_LAYER_FAILED,
    PullError,
    ResourceError,
    UnwrapError,
)
from podvm.cdh.policy import SignatureVerifier
from podvm.cdh.reference import parse_reference
from podvm.cdh.registry import Credentials, RegistryClient, descriptor_digest, json_object, parse_auth_json
from podvm.cdh.resources import Resources
from podvm.cdh.unpack import unpack_layer
from protocols.ocicrypt import keyprovider, layer
from protocols.ocicrypt.errors import OcicryptError

log = logging.getLogger(__name__)

# Provider names whose annotation this CDH unwraps: upstream's pod VM config names the CoCo key
# provider `attestation-agent`; `peerpods` is what our README's skopeo command uses.
KEY_PROVIDER_NAMES = ("attestation-agent", "peerpods")
Unwrapper = Callable[[bytes], Awaitable[bytes]]


class ImagePuller:
    def __init__(
        self,
        resources: Resources,
        unwrap: Unwrapper,
        verifier: SignatureVerifier,
        work_dir: Path,
        credentials_uri: str | None,
    ) -> None:
        self._resources = resources
        self._unwrap = unwrap
        self._verifier = verifier
        self._work_dir = work_dir
        self._credentials_uri = credentials_uri

    async def pull(self, image_url: str, bundle_path: str) -> str:
        """Pull `image_url` into `<bundle_path>/rootfs`; returns the manifest digest."""
        ref = parse_reference(image_url)
        rootfs = Path(bundle_path) / "rootfs"
        credentials = await self._credentials()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as session:
            client = RegistryClient(session, ref, credentials)
            image = await client.image_manifest()
            manifest, digest = image.doc, image.digest
            await self._verifier.check(ref, image, client)
            config = json_object(await client.small_blob(manifest["config"]), "image config")
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            layers = manifest["layers"]
            if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
                raise PullError("Failed to pull image manifest", "config diff_ids do not match the layers")
            try:
                rootfs.mkdir(parents=True, exist_ok=False)
            except OSError as exc:
                raise PullError(CREATE_BUNDLE_FAILED, f"{rootfs}: {exc.strerror}") from None
            try:
                self._work_dir.mkdir(parents=True, exist_ok=True)
                for descriptor, diff_id in zip(layers, diff_ids, strict=True):
                    await self._layer(client, descriptor, str(diff_id), rootfs)
            except BaseException:
                shutil.rmtree(rootfs, ignore_errors=True)
                raise
        log.info("pulled %s (%s) into %s", ref, digest, rootfs)
        return digest

    async def _credentials(self) -> Credentials:
        if self._credentials_uri is None:
            return {}
        local = self._credentials_uri.startswith("file://")
        if local and not await asyncio.to_thread(Path(self._credentials_uri[7:]).exists):
            return {}  # no auth.json in this pod VM: anonymous pulls
        try:
            return parse_auth_json(await self._resources.get(self._credentials_uri))
        except ResourceError:
            raise PullError(f"Illegal registry auth from {self._credentials_uri}") from None

    async def _layer(self, client: RegistryClient, descriptor: Any, diff_id: str, rootfs: Path) -> None:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("mediaType"), str):
            raise PullError("Errors happened when pulling image", "layer descriptor without a media type")
        media_type: str = descriptor["mediaType"]
        digest = descriptor_digest(descriptor)
        fd, name = tempfile.mkstemp(prefix=f"{digest[7:19]}-", dir=self._work_dir)
        os.close(fd)
        work = Path(name)
        try:
            check = None
            if media_type.endswith(keyprovider.ENCRYPTED_SUFFIX):
                private, public = await self._layer_keys(descriptor)
                check = layer.HmacCheck(private, public)
                await client.blob_to_file(descriptor, work, check.update)
            else:
                await client.blob_to_file(descriptor, work)
            await asyncio.to_thread(_unpack, work, media_type, rootfs, diff_id, check)
        finally:
            await asyncio.to_thread(work.unlink, missing_ok=True)

    async def _layer_keys(
        self, descriptor: dict[str, Any]
    ) -> tuple[layer.PrivateOptions, layer.PublicOptions]:
        annotations = descriptor.get("annotations") or {}
        try:
            packets = [
                annotations[f"{keyprovider.ANNOTATION_PREFIX}{name}"]
                for name in KEY_PROVIDER_NAMES
                if f"{keyprovider.ANNOTATION_PREFIX}{name}" in annotations
            ]
            if not packets:
                raise UnwrapError("No decrypt config detected from the annotations of the image manifest")
            # ocicrypt joins several recipients of one scheme with commas.
            errors = []
            for encoded in packets[0].split(","):
                try:
                    optsdata = await self._unwrap(base64.b64decode(encoded, validate=True))
                    break
                except UnwrapError as exc:
                    errors.append(exc.detail)
                except (binascii.Error, ValueError) as exc:
                    errors.append(f"annotation packet is not base64: {exc}")
            else:
                raise UnwrapError("; ".join(errors))
            private = layer.parse_private(optsdata)
            public = layer.parse_public(
                base64.b64decode(annotations[keyprovider.PUBOPTS_ANNOTATION], validate=True)
            )
        except UnwrapError as exc:
            log.warning("layer key: %s", exc.detail)
            raise PullError(DECRYPT_LAYER_FAILED) from None
        except (OcicryptError, KeyError, binascii.Error, ValueError, TypeError) as exc:
            log.warning("layer key: %s", exc)
            raise PullError(DECRYPT_LAYER_FAILED) from None
        return private, public


def _unpack(work: Path, media_type: str, rootfs: Path, diff_id: str, check: layer.HmacCheck | None) -> None:
    """Unpack a downloaded layer; an encrypted one only after its HMAC matched, decrypting as it streams."""
    with work.open("rb") as source:
        if check is None:
            unpack_layer(source, media_type, rootfs, diff_id)
            return
        try:
            check.verify()
        except OcicryptError as exc:
            log.warning("layer %s: %s", work.name, exc)
            raise PullError(DECRYPT_LAYER_FAILED) from None
        unpack_layer(check.plaintext(source), media_type, rootfs, diff_id)
