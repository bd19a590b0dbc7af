"""A small OCI distribution client (aiohttp): manifests (an index resolves to linux/amd64) and blobs
streamed to files with their digests checked, Bearer-token and Basic authentication with credentials
from an auth.json. Loopback registries are spoken to over plain HTTP, as Docker does by default."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from podvm.cdh.errors import PullError
from podvm.cdh.reference import DOCKER_HUB, ImageReference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
MAX_MANIFEST = 4 * 1024 * 1024
MAX_CONFIG = 8 * 1024 * 1024
CHUNK = 1024 * 1024
PLATFORM = ("linux", "amd64")
_LOOPBACK = ("127.", "localhost", "[::1]")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")

Credentials = dict[str, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """`doc` is the platform manifest, `digest` its digest; `list_digest` is the digest of the index
    it was resolved through (what a tag of a multi-arch image names), if any."""

    doc: dict[str, Any]
    digest: str
    list_digest: str | None = None


def parse_auth_json(raw: bytes) -> Credentials:
    """containers-auth.json(5): `{"auths": {"<registry>": {"auth": base64("user:password")}}}`."""
    try:
        doc = json.loads(raw)
        auths = doc.get("auths", {}) if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            raise ValueError("auths must be an object")
        result: Credentials = {}
        for registry, entry in auths.items():
            user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            host = registry.removeprefix("https://").removeprefix("http://").split("/")[0]
            result["docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host] = (
                user,
                password,
            )
        return result
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
        raise PullError("Illegal registry auth", "auth.json is not a containers-auth.json document") from None


class RegistryClient:
    def __init__(self, session: aiohttp.ClientSession, ref: ImageReference, credentials: Credentials) -> None:
        self._session = session
        self._ref = ref
        self._credentials = credentials.get(ref.registry)
        host = "registry-1.docker.io" if ref.registry == DOCKER_HUB else ref.registry
        scheme = "http" if host.startswith(_LOOPBACK) else "https"
        self._base = f"{scheme}://{host}/v2/{ref.repository}"
        self._authorization: str | None = None

    async def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(manifest bytes, media type, digest) of a tag or digest."""
        body, media_type = await self._get_small(f"{self._base}/manifests/{reference}", ACCEPT, MAX_MANIFEST)
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if reference.startswith("sha256:") and reference != digest:
            raise PullError("Failed to pull image manifest", f"manifest digest {digest} is not {reference}")
        return body, media_type, digest

    async def image_manifest(self) -> ImageManifest:
        """The image manifest, resolving an index to its linux/amd64 entry."""
        body, media_type, digest = await self.manifest(self._ref.reference)
        doc = json_object(body, "manifest")
        list_digest = None
        if media_type in (OCI_INDEX, DOCKER_LIST) or doc.get("manifests") is not None:
            entry = _platform_entry(doc)
            if not _DIGEST.fullmatch(entry):
                raise PullError("Failed to pull image manifest", "index entry digest is not sha256:<64 hex>")
            list_digest = digest
            body, media_type, digest = await self.manifest(entry)
            doc = json_object(body, "manifest")
        if not isinstance(doc.get("layers"), list) or not isinstance(doc.get("config"), dict):
            raise PullError("Failed to pull image manifest", "manifest has no config or layers")
        return ImageManifest(doc, digest, list_digest)

    async def small_blob(self, descriptor: dict[str, Any], limit: int = MAX_CONFIG) -> bytes:
        body, _ = await self._get_small(f"{self._base}/blobs/{descriptor_digest(descriptor)}", "*/*", limit)
        _check_digest(hashlib.sha256(body).hexdigest(), descriptor)
        return body

    async def blob_to_file(
        self, descriptor: dict[str, Any], target: Path, on_chunk: Callable[[bytes], None] | None = None
    ) -> None:
        """Stream a blob into `target`, checking its size and sha256 digest."""
        size = descriptor.get("size")
        if not isinstance(size, int) or size < 0:
            raise PullError("Errors happened when pulling image", "layer descriptor without a size")
        digest = hashlib.sha256()
        received = 0
        loop = asyncio.get_running_loop()
        with target.open("wb") as out:

            def consume(data: bytes) -> None:
                digest.update(data)
                if on_chunk is not None:
                    on_chunk(data)
                out.write(data)

            # Hashing and writing run in a worker thread (they release the GIL), one batch behind the
            # network, so receiving and hashing overlap.
            pending: asyncio.Future[None] | None = None
            batch = bytearray()
            try:
                async with await self._get(
                    f"{self._base}/blobs/{descriptor_digest(descriptor)}", "*/*"
                ) as response:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        received += len(chunk)
                        if received > size:
                            raise PullError(
                                "Errors happened when pulling image", "blob larger than its descriptor"
                            )
                        batch += chunk
                        if len(batch) >= CHUNK:
                            if pending is not None:
                                await pending
                            pending = loop.run_in_executor(None, consume, bytes(batch))
                            batch.clear()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PullError("Errors happened when pulling image", f"blob download: {exc}") from None
            finally:
                if pending is not None:
                    await pending
            await loop.run_in_executor(None, consume, bytes(batch))
        if received != size:
            raise PullError("Errors happened when pulling image", "blob shorter than its descriptor")
        _check_digest(digest.hexdigest(), descriptor)

    async def _get_small(self, url: str, accept: str, limit: int) -> tuple[bytes, str]:
        async with await self._get(url, accept) as response:
            body = bytearray()
            try:
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise PullError(
                            "Failed to pull image manifest", f"{url} is larger than {limit} bytes"
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PullError("Failed to pull image manifest", f"{url}: {exc}") from None
            return bytes(body), response.headers.get("Content-Type", "").split(";")[0]

    async def _get(self, url: str, accept: str) -> aiohttp.ClientResponse:
        """GET with authentication: on a 401 the challenge is answered once (Bearer token or Basic)."""
        try:
            response = await self._session.get(url, headers=self._headers(accept))
            if response.status == 401 and self._authorization is None:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                self._authorization = await self._answer(challenge)
                response = await self._session.get(url, headers=self._headers(accept))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PullError(
                "Failed to pull image manifest", f"registry {self._ref.registry}: {exc}"
            ) from None
        if response.status != 200:
            response.release()
            raise PullError("Failed to pull image manifest", f"{url}: HTTP {response.status}")
        return response

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _basic(self) -> str | None:
        if self._credentials is None:
            return None
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def _answer(self, challenge: str) -> str | None:
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self._basic()
        if scheme.lower() != "bearer":
            return None
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise PullError("Failed to pull image manifest", "registry token realm is not an http(s) URL")
        params.setdefault("scope", f"repository:{self._ref.repository}:pull")
        basic = self._basic()
        async with self._session.get(
            realm, params=params, headers={"Authorization": basic} if basic else {}
        ) as reply:
            if reply.status != 200:
                raise PullError(
                    "Failed to pull image manifest", f"registry token endpoint: HTTP {reply.status}"
                )
            doc = json_object(await reply.content.read(MAX_MANIFEST), "token response")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str):
            raise PullError("Failed to pull image manifest", "registry token response has no token")
        return f"Bearer {token}"


def _platform_entry(index: dict[str, Any]) -> str:
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        if (platform.get("os"), platform.get("architecture")) == PLATFORM and isinstance(
            entry.get("digest"), str
        ):
            return str(entry["digest"])
    raise PullError("Failed to pull image manifest", "image index has no linux/amd64 manifest")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object from the registry, or the manifest pull error."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise PullError("Failed to pull image manifest", f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise PullError("Failed to pull image manifest", f"{what} is not a JSON object")
    return doc


def descriptor_digest(descriptor: dict[str, Any]) -> str:
    """The descriptor's sha256 digest, checked before it becomes part of a URL or a file name."""
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise PullError("Errors happened when pulling image", "descriptor digest is not sha256:<64 hex>")
    return digest


def _check_digest(hexdigest: str, descriptor: dict[str, Any]) -> None:
    if descriptor.get("digest") != f"sha256:{hexdigest}":
        raise PullError(
            "Errors happened when pulling image", f"blob digest is not {descriptor.get('digest')}"
        )
