"""The whole build, in cached stages keyed by content hashes of their inputs.

Stages: the Debian base (debootstrap + initrd; minutes, rarely changes), the dependency wheels (from
PyPI, pinned), and the image itself (project wheel, units, disk assembly). A stage whose key exists
in the cache is reused; an image whose key exists is returned at once, so rebuilding unchanged
sources costs only the hashing. Builds are serialised by a lock in the cache directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podvm.image import boot, disk, initrd, inputs, pyenv, rootfs
from podvm.image.config import (
    COMMANDS,
    DIRECT_FLAVOUR,
    FIRMWARE_FLAVOUR,
    OPTIONAL_COMMANDS,
    STUB,
    VENV,
    ImageConfig,
)
from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner, build_env

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
UPSTREAM_AGENT_FILES = HERE / "upstream-agent"
QCOW2 = "podvm.qcow2"
RAW = "podvm.raw"
MANIFEST = "manifest.json"
# The direct-boot kernel and its initrd, published beside the disk (see boot.direct_cmdline).
KERNEL = "vmlinuz"
INITRD = "initrd.img"
ESP_BOOT_PATH = "EFI/BOOT/BOOTX64.EFI"
# Started by default (multi-user.target); attestation units only when the project has them.
ENABLED_UNITS = (
    "peerpods-boot-mark.service",
    "process-user-data.service",
    "kata-agent.service",
    "agent-protocol-forwarder.service",
    "systemd-networkd.service",
    "peerpods-boot-profile.service",
)
# Enabled when the project provides their command (unit -> command in /usr/local/bin).
OPTIONAL_UNITS = {
    "attestation-agent.service": "attestation-agent",
    "confidential-data-hub.service": "confidential-data-hub",
}
# Not wanted in a disposable, non-interactive pod VM, or slow on every first boot.
MASKED_UNITS = (
    "getty.target",
    "systemd-firstboot.service",
    "systemd-hwdb-update.service",
    "ldconfig.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-done.service",
    "systemd-networkd-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    # Every pod VM boot runs these, each a fork and exec that takes seconds in an emulated VM, for
    # nothing here: users are made at build time; the root file system is mounted read-write by
    # the kernel command line and there is no fstab; no module list, no binfmt, no logins; no
    # hugepages, kernel debug or trace file systems, no FUSE, no loop devices, no EFI pstore.
    "systemd-sysusers.service",
    "systemd-remount-fs.service",
    "systemd-modules-load.service",
    "systemd-network-generator.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-pstore.service",
    "dev-hugepages.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "modprobe@configfs.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    # device-mapper loads itself when cryptsetup opens /dev/mapper/control (a static node)
    "modprobe@dm_mod.service",
)
# Generators systemd runs before loading any unit, at every boot: the pod VM has no crypttab,
# integritytab or veritytab, no partitions to discover (its root is named on the command line), no
# SysV or rc.local scripts, no hibernation, no getty, no offline updates.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-sysv-generator",
    "systemd-rc-local-generator",
    "systemd-hibernate-resume-generator",
    "systemd-getty-generator",
    "systemd-system-update-generator",
)
# Base-stage inputs besides the settings: the initrd configurations and the code that uses them.
_BASE_FILES = rootfs.initramfs_config_files()


@dataclass(frozen=True)
class BuildResult:
    directory: Path
    qcow2: Path
    raw: Path
    manifest: Path
    cached: bool
    kernel: Path
    initrd: Path

    def direct_cmdline(self) -> str:
        """The kernel command line to boot `kernel` and `initrd` with (from the manifest)."""
        manifest = json.loads(self.manifest.read_text())
        return str(manifest["direct_boot"]["cmdline"])


@dataclass(frozen=True)
class Keys:
    base: str
    wheels: str
    image: str


def compute_keys(config: ImageConfig) -> tuple[Keys, list[str], pyenv.Lock, list[str]]:
    """The stage keys, plus what they were computed from (requirements, the lock, project files)."""
    base = inputs.combine(
        {
            "suite": config.suite,
            "mirror": config.mirror,
            "packages": sorted(config.packages),
            "files": inputs.listing_digest(FILES, _BASE_FILES),
            "code": inputs.file_digest(HERE / "rootfs.py"),
        }
    )
    pyproject = (config.project_root / "pyproject.toml").read_text()
    requirements = pyenv.runtime_requirements(pyproject, config.extras)
    lock = pyenv.read_lock((config.project_root / "requirements.lock").read_text())
    wheels = inputs.combine({"requirements": requirements, "constraints": lock.constraints})
    project_files = inputs.project_files(config.project_root)
    image = inputs.combine(
        {
            "base": base,
            "wheels": wheels,
            "extras": sorted(config.extras),
            "project": inputs.listing_digest(config.project_root, project_files),
            "files": inputs.listing_digest(FILES, inputs.tree_files(FILES, ".")),
            "code": inputs.listing_digest(HERE, [p.name for p in sorted(HERE.glob("*.py"))]),
            "stub": inputs.file_digest(STUB) if STUB.exists() else "",
            # init/main.go is among the project files; whether it can be built changes the initrd
            "go": initrd.go_toolchain() is not None,
            "kata_agent": inputs.file_digest(config.kata_agent) if config.kata_agent else "",
            "upstream_agent_files": inputs.listing_digest(
                UPSTREAM_AGENT_FILES, inputs.tree_files(UPSTREAM_AGENT_FILES, ".")
            ),
            "source_date_epoch": config.source_date_epoch,
        }
    )
    return Keys(base, wheels, image), requirements, lock, project_files


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _publish(staging: Path, final: Path) -> None:
    """Move a finished stage into place (a rename: readers never see half a stage)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)


def base_stage(config: ImageConfig, runner: Runner, key: str) -> Path:
    """The debootstrapped base system with a small initrd; its package versions beside it."""
    final = config.cache_dir / "base" / key
    if (final / "packages.json").exists():
        runner.say(f"Debian base {key[:12]}: cached")
        return final
    staging = _fresh_dir(config.cache_dir / "work" / f"base-{key}")
    root = staging / "rootfs"
    with runner.step(f"debootstrap {config.suite} from {config.mirror}"):
        rootfs.debootstrap(runner, root, config.suite, config.mirror, config.packages)
    with runner.step("small initrds (MODULES=list, zstd)"):
        rootfs.install_initramfs_config(FILES, root)
        rootfs.make_initrds(runner, root)
    versions = rootfs.package_versions(runner, root)
    rootfs.clean(root)
    (staging / "packages.json").write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    _publish(staging, final)
    return final


def wheels_stage(
    config: ImageConfig, runner: Runner, key: str, requirements: list[str], lock: pyenv.Lock
) -> Path:
    final = config.cache_dir / "wheels" / key
    if (final / ".complete").exists():
        runner.say(f"Python dependency wheels {key[:12]}: cached")
        return final
    staging = _fresh_dir(config.cache_dir / "work" / f"wheels-{key}")
    with runner.step("downloading dependency wheels from PyPI"):
        pyenv.fetch_wheels(runner, requirements, lock, staging)
    (staging / ".complete").write_text("")
    _publish(staging, final)
    return final


def _copy_tree(source: Path, root: Path) -> None:
    for rel in inputs.tree_files(source, "."):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        shutil.copy2(source / rel, target)


def _install_upstream_agent(config: ImageConfig, root: Path) -> None:
    assert config.kata_agent is not None
    target = root / "usr/local/bin/kata-agent"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.kata_agent, target)
    target.chmod(0o755)
    _copy_tree(UPSTREAM_AGENT_FILES, root)


def _units(runner: Runner, root: Path) -> list[str]:
    enabled = list(ENABLED_UNITS)
    for unit, command in OPTIONAL_UNITS.items():
        if (root / "usr/local/bin" / command).is_symlink():  # into the image's venv, absolute
            enabled.append(unit)
    runner.run(["systemctl", f"--root={root}", "enable", *enabled])
    runner.run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS])
    generators = root / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in MASKED_GENERATORS:
        (generators / name).unlink(missing_ok=True)
        (generators / name).symlink_to("/dev/null")
    return enabled


def _clamp_mtimes(root: Path, epoch: int) -> None:
    """Every timestamp at most `epoch`: file systems made from the tree then do not depend on when
    the build ran."""
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            if path.lstat().st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def _sha256_entry(path: Path) -> dict[str, object]:
    return {"sha256": inputs.file_digest(path), "bytes": path.stat().st_size}


def image_stage(
    config: ImageConfig,
    runner: Runner,
    keys: Keys,
    base: Path,
    wheels: Path,
    project_files: list[str],
) -> BuildResult:
    final = config.cache_dir / "images" / keys.image
    staging = _fresh_dir(config.cache_dir / "work" / f"image-{keys.image}")
    root = staging / "rootfs"
    with runner.step("copying the Debian base"):
        runner.run(["cp", "-a", "--reflink=auto", base / "rootfs", root])
    with runner.step("project wheel and venv"):
        wheel = pyenv.build_project_wheel(runner, config.project_root, project_files, staging / "wheel")
        pyenv.install_venv(
            runner, root, VENV, [wheels], wheel, config.extras, (*COMMANDS, *OPTIONAL_COMMANDS)
        )
    with runner.step("units and configuration"):
        _copy_tree(FILES, root)
        if config.kata_agent is not None:
            _install_upstream_agent(config, root)
        enabled = _units(runner, root)
        rootfs.clean(root)
    kernel, initrd = rootfs.kernel_files(root, FIRMWARE_FLAVOUR)
    direct_kernel, direct_initrd = rootfs.kernel_files(root, DIRECT_FLAVOUR)
    direct_init = _direct_init(config, runner, root, direct_kernel)
    if direct_init is not None:
        direct_initrd = direct_init
    cmdline = boot.kernel_cmdline(disk.ROOT_PARTUUID)
    with runner.step("unified kernel image"):
        uki = staging / "BOOTX64.EFI"
        boot.build_uki(
            runner, STUB, kernel, initrd, cmdline, root / "usr/lib/os-release", uki, config.source_date_epoch
        )
    _clamp_mtimes(root, config.source_date_epoch)
    if stale := pyenv.unusable_bytecode(root, (VENV, pyenv.STDLIB), pyenv.CACHE_TAG):
        raise ImageBuildError(f"{len(stale)} modules would be compiled or hashed at each start: {stale[:5]}")
    with runner.step("file systems and disk (no loop devices)"):
        root_size = disk.root_fs_size(disk.tree_size(root))
        layout = disk.plan_layout(disk.ESP_SIZE, root_size)
        epoch = config.source_date_epoch
        disk.make_root_fs(runner, root, staging / "root.ext4", layout.root_size, epoch)
        disk.make_esp(runner, staging / "esp.vfat", layout.esp_size, {ESP_BOOT_PATH: uki}, epoch)
        output = _fresh_dir(staging / "out")
        disk.assemble(runner, output / RAW, layout, staging / "esp.vfat", staging / "root.ext4")
    with runner.step("qcow2"):
        disk.to_qcow2(runner, output / RAW, output / QCOW2)
    for source, name in ((direct_kernel, KERNEL), (direct_initrd, INITRD)):
        shutil.copyfile(source, output / name)
        os.utime(output / name, (config.source_date_epoch, config.source_date_epoch))
    manifest = {
        "image": "peerpods-podvm",
        "build_key": keys.image,
        "suite": config.suite,
        "mirror": config.mirror,
        "source_date_epoch": config.source_date_epoch,
        "kernel": kernel.name.removeprefix("vmlinuz-"),
        "cmdline": cmdline,
        "root_partuuid": disk.ROOT_PARTUUID,
        "agent": "kata-agent (upstream)" if config.kata_agent else "peerpods-standin-agent",
        "direct_boot": {
            "kernel": KERNEL,
            "initrd": INITRD,
            "kernel_version": direct_kernel.name.removeprefix("vmlinuz-"),
            "init": "peerpods-init" if direct_init is not None else "initramfs-tools",
            "cmdline": boot.direct_cmdline(disk.ROOT_PARTUUID),
        },
        "units": enabled,
        "debian_packages": json.loads((base / "packages.json").read_text()),
        "python_packages": {**pyenv.wheel_versions(wheels), pyenv.PROJECT: wheel.name.split("-")[1]},
        "outputs": {name: _sha256_entry(output / name) for name in (RAW, QCOW2, KERNEL, INITRD)},
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _publish(output, final)
    shutil.rmtree(staging)
    return _result(final, cached=False)


def _direct_init(config: ImageConfig, runner: Runner, root: Path, kernel: Path) -> Path | None:
    """The direct-boot initrd with peerpods-init, or None without a Go toolchain (initramfs-tools'
    initrd then)."""
    go = initrd.go_toolchain()
    if go is None:
        runner.say("no Go toolchain: direct boot keeps initramfs-tools' initrd (slower to boot)")
        return None
    with runner.step("direct-boot initrd (peerpods-init)"):
        init = initrd.build_init(runner, go, config.cache_dir)
        version = kernel.name.removeprefix("vmlinuz-")
        archive = initrd.direct_initrd(
            init.read_bytes(), root / "lib/modules" / version, version, config.source_date_epoch
        )
        out = root.parent / "initrd-direct.img"
        out.write_bytes(archive)
    return out


def prune(directory: Path, current: str, keep_others: int = 1) -> None:
    """Delete all but `current` and the `keep_others` most recently built entries of a stage
    (images are large; a previous one stays for a quick switch back)."""
    if not directory.is_dir():
        return
    others = sorted(
        (entry for entry in directory.iterdir() if entry.name != current),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for entry in others[keep_others:]:
        shutil.rmtree(entry, ignore_errors=True)


def _result(directory: Path, cached: bool) -> BuildResult:
    return BuildResult(
        directory,
        directory / QCOW2,
        directory / RAW,
        directory / MANIFEST,
        cached,
        directory / KERNEL,
        directory / INITRD,
    )


def build(config: ImageConfig, runner: Runner | None = None, force: bool = False) -> BuildResult:
    """Build the image for `config`, or return the cached one with the same inputs."""
    if config.kata_agent is not None and not config.kata_agent.is_file():
        raise ImageBuildError(f"--kata-agent {config.kata_agent}: no such file")
    runner = runner or Runner(config.cache_dir / "build.log", build_env(config.source_date_epoch))
    with cache_lock(config.cache_dir):
        keys, requirements, lock, project_files = compute_keys(config)
        existing = config.cache_dir / "images" / keys.image
        if not force and (existing / MANIFEST).exists():
            runner.say(f"image {keys.image[:12]}: cached")
            return _result(existing, cached=True)
        if os.geteuid() != 0:
            raise ImageBuildError("building the image needs root (debootstrap, chroot)")
        if not STUB.exists():
            raise ImageBuildError(f"{STUB} is missing: install the systemd-boot-efi package")
        base = base_stage(config, runner, keys.base)
        wheels = wheels_stage(config, runner, keys.wheels, requirements, lock)
        result = image_stage(config, runner, keys, base, wheels, project_files)
        for stage, key in (("base", keys.base), ("wheels", keys.wheels), ("images", keys.image)):
            prune(config.cache_dir / stage, key)
        shutil.rmtree(config.cache_dir / "work", ignore_errors=True)
        latest = config.cache_dir / "latest"
        latest.unlink(missing_ok=True)
        latest.symlink_to(result.directory.relative_to(config.cache_dir))
        runner.say(f"image {keys.image[:12]} built in {result.directory}")
        return result
