"""The Debian base system of the image: debootstrap, small initrds, and the first-boot cleanup.

Everything happens in a plain directory (no loop devices, no image mounts); the only mount is /proc
inside the chroot while tools that need it run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from podvm.image.config import DIRECT_FLAVOUR, FIRMWARE_FLAVOUR
from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner

# Build-time caches, logs and scratch that differ on every build (emptied, kept as directories),
# and docs, manuals and translations nobody reads in a pod VM.
_EMPTIED = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
    "tmp",
    "var/tmp",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
)
# Removed: backups dpkg/debconf keep, ldconfig's cache, debootstrap's leftovers, the build host's
# identity (machine-id stays empty, so each VM makes its own at boot).
_REMOVED = (
    "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/config.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/cache/ldconfig/aux-cache",
    "var/lib/dbus/machine-id",
    "debootstrap",
)


@contextmanager
def proc_mounted(root: Path, runner: Runner) -> Iterator[None]:
    """/proc inside the chroot, for tools that read it (update-initramfs, pip)."""
    proc = root / "proc"
    runner.run(["mount", "-t", "proc", "proc", proc])
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)


def chroot(runner: Runner, root: Path, argv: Sequence[str], capture: bool = False) -> str:
    return runner.run(["chroot", root, *argv], capture=capture)


def debootstrap(runner: Runner, target: Path, suite: str, mirror: str, packages: Sequence[str]) -> None:
    """A minbase system with `packages` in `target` (which must not exist). The kernel's own
    initrd (every module) is skipped: `make_initrds` makes the small ones once the config is in."""
    runner.run(
        env={"INITRD": "No"},
        argv=[
            "debootstrap",
            "--variant=minbase",
            "--components=main",
            f"--include={','.join(packages)}",
            suite,
            target,
            mirror,
        ],
    )


# The initrd configuration of each kernel flavour: the standard one (root disk drivers of every
# cloud) and the direct-boot one (the virtio disk only).
INITRAMFS_CONFIGS = {
    FIRMWARE_FLAVOUR: ("etc/initramfs-tools", ("modules", "conf.d/peerpods.conf")),
    DIRECT_FLAVOUR: ("etc/initramfs-tools-direct", ("initramfs.conf", "modules")),
}


def initramfs_config_files() -> list[str]:
    """The files of `INITRAMFS_CONFIGS`, relative to the image root (base-stage inputs)."""
    return [f"{directory}/{name}" for directory, names in INITRAMFS_CONFIGS.values() for name in names]


def install_initramfs_config(files: Path, root: Path) -> None:
    """The initrd settings of `files` (MODULES=list, zstd): a small initrd boots faster."""
    for rel in initramfs_config_files():
        destination = root / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files / rel, destination)


def kernel_version(root: Path, flavour: str) -> str:
    """The version of the image's one kernel of `flavour` (e.g. "6.1.0-50-cloud-amd64")."""
    pattern = re.compile(rf"vmlinuz-(\d+\.\d+\.\d+-\d+-{re.escape(flavour)})")
    kernels = [k.name for k in sorted((root / "boot").glob("vmlinuz-*"))]
    versions = [match.group(1) for name in kernels if (match := pattern.fullmatch(name))]
    if len(versions) != 1:
        raise ImageBuildError(f"expected one {flavour} kernel in {root / 'boot'}, found {kernels}")
    return versions[0]


def make_initrds(runner: Runner, root: Path) -> None:
    """The initrd of each kernel flavour, from the config `install_initramfs_config` put in."""
    with proc_mounted(root, runner):
        for flavour, (confdir, _) in INITRAMFS_CONFIGS.items():
            version = kernel_version(root, flavour)
            initrd = f"/boot/initrd.img-{version}"
            (root / initrd.lstrip("/")).unlink(missing_ok=True)
            chroot(runner, root, ["mkinitramfs", "-d", f"/{confdir}", "-o", initrd, version])


def package_versions(runner: Runner, root: Path) -> dict[str, str]:
    """Installed Debian packages and versions, read from the image's dpkg database."""
    out = runner.run(
        ["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f", "${Package}\t${Version}\n"],
        capture=True,
    )
    versions: dict[str, str] = {}
    for line in out.splitlines():
        name, _, version = line.partition("\t")
        if name and version:
            versions[name] = version
    if not versions:
        raise ImageBuildError(f"no packages found in {root}'s dpkg database")
    return versions


def kernel_files(root: Path, flavour: str) -> tuple[Path, Path]:
    """The image's kernel and initrd of `flavour`."""
    version = kernel_version(root, flavour)
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ImageBuildError(f"no initrd {initrd.name} beside vmlinuz-{version}")
    return root / "boot" / f"vmlinuz-{version}", initrd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean(root: Path) -> None:
    """Remove what differs between builds or identifies the build host (see _EMPTIED, _REMOVED)."""
    for rel in _EMPTIED:
        directory = root / rel
        if directory.is_dir():
            for child in directory.iterdir():
                _remove(child)
    for rel in _REMOVED:
        _remove(root / rel)
    (root / "etc/machine-id").write_text("")
    hostname = root / "etc/hostname"
    hostname.write_text("peerpod\n")
    hostname.chmod(0o644)
