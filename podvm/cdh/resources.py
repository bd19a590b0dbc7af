"""Resources by URI: `kbs:///repo/type/tag` from the KBS (attesting first; the KBS address is the CDH's
own, never the URI's) and `file:///path` from the pod VM's file system."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from podvm.cdh.errors import ResourceError
from protocols.kbs_client.errors import KbsClientError
from protocols.kbs_client.rcar import KbsClient
from protocols.kbs_client.resource_uri import parse_resource_path, parse_resource_uri

log = logging.getLogger(__name__)
MAX_FILE_RESOURCE = 4 * 1024 * 1024


class Resources:
    def __init__(self, kbs: KbsClient | None) -> None:
        self._kbs = kbs
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._kbs is not None:
            await self._kbs.close()

    async def get(self, uri: str) -> bytes:
        """The resource's bytes, or `ResourceError("Get Resource failed")` (cause logged)."""
        if uri.startswith("file://"):
            return _read_file(Path(uri.removeprefix("file://")))
        try:
            resource = parse_resource_uri(uri) if "://" in uri else parse_resource_path(uri)
        except KbsClientError as exc:
            log.warning("resource %r: %s", uri[:200], exc)
            raise ResourceError("Get Resource failed") from None
        if self._kbs is None:
            log.warning("resource %s: no KBS configured ([kbc] url in cdh.toml)", resource)
            raise ResourceError("Get Resource failed")
        async with self._lock:  # one RCAR conversation at a time
            try:
                return await self._kbs.get_resource(resource)
            except KbsClientError as exc:
                log.warning("resource %s from the KBS: %s", resource, exc)
                raise ResourceError("Get Resource failed") from None


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            data = source.read(MAX_FILE_RESOURCE + 1)
    except OSError as exc:
        log.warning("resource file %s: %s", path, exc.strerror)
        raise ResourceError("Get Resource failed") from None
    if len(data) > MAX_FILE_RESOURCE:
        raise ResourceError("Get Resource failed")
    return data
