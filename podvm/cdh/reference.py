"""Image references as kata-agent passes them (`[docker://]host[:port]/repo[:tag][@sha256:...]`), with
Docker Hub's defaults (`docker.io`, `library/`, tag `latest`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from podvm.cdh.errors import PullError

DOCKER_HUB = "docker.io"
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](?::[0-9]{1,5})?")
MAX_REFERENCE = 1024


@dataclass(frozen=True, slots=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the manifest is fetched by: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """`registry/repository`, what policy scopes and cosign identities match."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(url: str) -> ImageReference:
    if len(url) > MAX_REFERENCE:
        raise PullError("Failed to pull image manifest", f"image reference longer than {MAX_REFERENCE}")
    text = url.removeprefix("docker://")
    name, _, digest = text.partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _HOST.fullmatch(registry) or not _REPOSITORY.fullmatch(repository):
        raise PullError("Failed to pull image manifest", f"invalid image reference {url[:200]!r}")
    if tag is not None and not _TAG.fullmatch(tag):
        raise PullError("Failed to pull image manifest", f"invalid tag in {url[:200]!r}")
    if digest and not _DIGEST.fullmatch(digest):
        raise PullError("Failed to pull image manifest", f"invalid digest in {url[:200]!r}")
    if tag is None and not digest:
        tag = "latest"
    return ImageReference(registry, repository, tag, digest or None)
