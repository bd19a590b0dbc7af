"""What an image is made of (Debian suite, mirror, packages) and where the build keeps its cache.

The mirror defaults to the one apt already uses on the build host, so the image comes from the same
archive (or snapshot) as the host's own packages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Debian packages of the image, on top of debootstrap's minbase. Two kernels: the standard flavour
# boots from the ESP (clouds, OVMF, confidential VMs: it has the sev-guest driver the attestation
# agent needs, which the cloud flavour lacks); the cloud flavour (LZ4, ext4 built in, far fewer
# drivers to probe) is published beside the disk for direct kernel boot of non-confidential libvirt
# pod VMs, whose cidata drive is then a virtio disk (the cloud flavour has no AHCI driver).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "zstd",
    "python3",
    "python3-venv",
    "iproute2",
    "iptables",  # the pod network tunnel's NOTRACK rules
    "cryptsetup-bin",  # the CDH's secure mounts and the encrypted scratch space (LUKS2)
    "e2fsprogs",  # mkfs.ext4 on them
    "ca-certificates",
)
# Timestamps inside the image (files, file systems, pyc) are clamped to this unless overridden.
DEFAULT_SOURCE_DATE_EPOCH = 1735689600  # 2025-01-01T00:00:00Z
VENV = "/opt/peerpods"
# The console scripts the units run, linked into /usr/local/bin like upstream's binaries.
COMMANDS = ("process-user-data", "agent-protocol-forwarder", "peerpods-standin-agent")
# Linked when the project has them: the guest attestation agent and its REST API front.
OPTIONAL_COMMANDS = ("attestation-agent", "api-server-rest", "confidential-data-hub")
# Kernel flavours (the suffix of the kernel version): in the unified kernel image, and for direct boot.
FIRMWARE_FLAVOUR = "amd64"
DIRECT_FLAVOUR = "cloud-amd64"
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")

_ONE_LINE = re.compile(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")


def default_cache_dir() -> Path:
    """Outside any clone, so every checkout and CI run on the machine shares one cache."""
    configured = os.environ.get("PEERPODS_IMAGE_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/peerpods-image")
    return Path.home() / ".cache" / "peerpods-image"


def mirror_from_sources(texts: Iterable[str], suite: str = SUITE) -> str | None:
    """The Debian archive URI apt uses for `suite`, from sources.list or deb822 .sources texts."""
    for text in texts:
        for line in text.splitlines():
            match = _ONE_LINE.match(line)
            if match and match.group(2) == suite:
                return match.group(1).rstrip("/")
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip().lower()] = value.strip()
            types = fields.get("types", "").split()
            if "deb" in types and suite in fields.get("suites", "").split():
                return fields.get("uris", "").split()[0].rstrip("/") if fields.get("uris") else None
    return None


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror for the image's suite, or deb.debian.org when none is configured."""
    paths = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    texts = []
    for path in paths:
        if path.suffix in (".list", ".sources") and path.is_file():
            texts.append(path.read_text(errors="replace"))
    return mirror_from_sources(texts) or FALLBACK_MIRROR


@dataclass(frozen=True)
class ImageConfig:
    """One build's choices. Everything here is part of the cache key."""

    cache_dir: Path
    mirror: str = FALLBACK_MIRROR
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    extras: tuple[str, ...] = ()
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH
    kata_agent: Path | None = None
    project_root: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])
