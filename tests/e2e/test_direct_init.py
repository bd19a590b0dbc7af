"""peerpods-init, the direct-boot initrd's /init, in the real kernel under QEMU (no libvirt): it
mounts the partition root=PARTUUID= names and executes init there, and a root that never appears
ends in its own error on the console, not a hang.

The image's disk is attached read-only (`snapshot=on`); `init=/usr/bin/cat -- /proc/mounts` shows
what the new root looks like from inside, then the kernel panics as init exits and QEMU stops.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from podvm.image.build import BuildResult

PATIENCE_S = 300  # a kernel boot under TCG on a loaded machine; never the verdict


def _boot(image: BuildResult, cmdline: str) -> str:
    if json.loads(image.manifest.read_text())["direct_boot"]["init"] != "peerpods-init":
        pytest.skip("the image was built without a Go toolchain: its direct-boot initrd is initramfs-tools'")
    base = " ".join(word for word in image.direct_cmdline().split() if not word.startswith("root="))
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "512", "-display", "none",
        "-no-user-config", "-nodefaults", "-no-reboot", "-serial", "stdio",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", f"{base} loglevel=4 panic=-1 {cmdline}",
        "-drive", f"file={image.raw},format=raw,if=virtio,snapshot=on",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=PATIENCE_S, check=False)
    return done.stdout.decode(errors="replace")


def test_init_runs_from_the_root_partition_it_names(podvm_image: BuildResult) -> None:
    partuuid = json.loads(podvm_image.manifest.read_text())["root_partuuid"]
    console = _boot(podvm_image, f"root=PARTUUID={partuuid} rw init=/usr/bin/cat -- /proc/mounts")
    assert "peerpods-init: error" not in console, console[-3000:]
    mounts = [line.split() for line in console.splitlines() if line.startswith("/dev/vda")]
    assert mounts[0][:3] == ["/dev/vda2", "/", "ext4"], console[-3000:]
    assert mounts[0][3].startswith("rw"), mounts
    assert any(line.split()[:3] == ["devtmpfs", "/dev", "devtmpfs"] for line in console.splitlines())


def test_a_root_that_never_appears_is_named_on_the_console(podvm_image: BuildResult) -> None:
    missing = uuid.uuid4()
    console = _boot(podvm_image, f"root=PARTUUID={missing} peerpods.rootwait=1")
    assert f"peerpods-init: error: root=PARTUUID={missing} did not appear within 1s" in console, console[
        -3000:
    ]
    assert "vda2" in console.split("did not appear", 1)[1].splitlines()[0]  # what it saw instead
