"""Guest image pull for the stand-in agent, as kata-agent does it with guest pull: a container whose
spec names its image (`io.kubernetes.cri.image-name`) gets it from the confidential data hub
(`api.ImagePullService/PullImage` into `<container dir>/rootfs`), and absolute program paths resolve
inside that rootfs. The stand-in still has no isolation: the program runs as a plain host process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from protocols.proto import cdh_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError

IMAGE_NAME_ANNOTATION = "io.kubernetes.cri.image-name"
PULL_TIMEOUT = 600.0


async def pull_image(cdh_socket: Path, image: str, bundle: Path) -> str:
    """Pull `image` into `bundle/rootfs` through the CDH; its error (upstream's text) is the caller's."""
    try:
        client = await Client.connect_unix(cdh_socket)
    except OSError as exc:
        raise TtrpcError(Code.UNAVAILABLE, f"confidential data hub at {cdh_socket}: {exc.strerror}") from None
    async with client:
        request = cdh_pb2.ImagePullRequest(image_url=image, bundle_path=str(bundle))
        response = await client.unary(
            "api.ImagePullService", "PullImage", request, cdh_pb2.ImagePullResponse, timeout=PULL_TIMEOUT
        )
    return response.manifest_digest


def in_rootfs(args: Sequence[str], bundle: Path) -> list[str]:
    """The process args with an absolute program path taken from the pulled rootfs when it is there."""
    rootfs = bundle / "rootfs"
    if not args or not args[0].startswith("/") or not rootfs.is_dir():
        return list(args)
    candidate = rootfs / args[0].lstrip("/")
    return [str(candidate), *args[1:]] if candidate.is_file() else list(args)
