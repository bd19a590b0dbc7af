"""Resource URIs (`kbs[+plugin]://<kbs-address>/<repo>/<type>/<tag>[?query]`) and bare resource paths
(`repo/type/tag`), as the attestation agent and CDH name KBS resources (guest-components
`RESOURCE_URI.md`).

Each segment of a `resource` path follows the KBS's own rule (`[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*`, three
segments), checked here so that a bad name fails locally with a clear message instead of turning into
a surprising URL (`..`, `%2F`, an extra segment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.kbs_client.errors import ResourcePathError

SCHEME = "kbs"
DEFAULT_PLUGIN = "resource"
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*")
_PLUGIN = re.compile(r"[a-z0-9][a-z0-9_\-]*")
_ADDRESS = re.compile(r"[A-Za-z0-9.\-:\[\]]*")
_QUERY = re.compile(r"[A-Za-z0-9_\-.~%=&+,;:@/!$'()*]*")
MAX_URI_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class ResourceUri:
    """A parsed resource URI; `path` holds the segments after the plugin."""

    plugin: str
    path: tuple[str, ...]
    kbs_address: str = ""
    query: str | None = None

    @property
    def resource_path(self) -> str:
        return "/".join(self.path)

    def endpoint(self) -> str:
        """The KBS URL path below `/kbs/v0/` (upstream: `<plugin>/<path>[?query]`)."""
        tail = f"{self.plugin}/{self.resource_path}"
        return tail if self.query is None else f"{tail}?{self.query}"

    def __str__(self) -> str:
        scheme = SCHEME if self.plugin == DEFAULT_PLUGIN else f"{SCHEME}+{self.plugin}"
        uri = f"{scheme}://{self.kbs_address}/{self.resource_path}"
        return uri if self.query is None else f"{uri}?{self.query}"


def parse_resource_path(path: str) -> ResourceUri:
    """A bare `repo/type/tag` path (`kbs-client --path`), leading slash allowed."""
    return ResourceUri(plugin=DEFAULT_PLUGIN, path=_resource_segments(path.removeprefix("/")))


def parse_resource_uri(uri: str) -> ResourceUri:
    """A `kbs://` or `kbs+<plugin>://` URI."""
    if len(uri) > MAX_URI_LENGTH:
        raise ResourcePathError(f"resource URI is longer than {MAX_URI_LENGTH} characters")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ResourcePathError("resource URI must look like kbs://<kbs-address>/<repo>/<type>/<tag>")
    if scheme == SCHEME:
        plugin = DEFAULT_PLUGIN
    elif scheme.startswith(f"{SCHEME}+") and _PLUGIN.fullmatch(scheme[len(SCHEME) + 1 :]):
        plugin = scheme[len(SCHEME) + 1 :]
    else:
        raise ResourcePathError(f"resource URI scheme {scheme[:30]!r} is not kbs or kbs+<plugin>")
    rest, qmark, query = rest.partition("?")
    address, slash, path = rest.partition("/")
    if not slash:
        raise ResourcePathError("resource URI has no resource path")
    if not _ADDRESS.fullmatch(address):
        raise ResourcePathError(f"resource URI address {address[:60]!r} is not a host[:port]")
    if qmark and not _QUERY.fullmatch(query):
        raise ResourcePathError("resource URI query holds characters that are not URL-safe")
    segments = _resource_segments(path) if plugin == DEFAULT_PLUGIN else _plugin_segments(path)
    return ResourceUri(plugin=plugin, path=segments, kbs_address=address, query=query if qmark else None)


def _resource_segments(path: str) -> tuple[str, str, str]:
    segments = path.split("/")
    if len(segments) != 3:
        raise ResourcePathError(
            f"resource path {path[:100]!r} must have exactly three segments: <repo>/<type>/<tag>"
        )
    for segment in segments:
        _check_segment(segment, path)
    return segments[0], segments[1], segments[2]


def _plugin_segments(path: str) -> tuple[str, ...]:
    segments = tuple(path.split("/"))
    for segment in segments:
        _check_segment(segment, path)
    return segments


def _check_segment(segment: str, path: str) -> None:
    if not _SEGMENT.fullmatch(segment):
        raise ResourcePathError(
            f"resource path {path[:100]!r}: segment {segment[:60]!r} must match [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*"
        )
