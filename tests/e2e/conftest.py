"""Fixtures of the end-to-end run: skip reasons, the image, libvirtd, the scratch pool.

The test runs where the tools are installed and /dev/kvm can boot a standard UEFI guest, or, where it
cannot (e.g. nested kvm-pvm), under QEMU's TCG emulation if the libvirt provider has the
LIBVIRT_DOMAIN_TYPE setting; elsewhere it skips and says why. `python -m tests.e2e` prints the
decision (CI shows it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from podvm.image.build import BuildResult, build
from podvm.image.config import ImageConfig, default_cache_dir, host_mirror
from tests.e2e.stack import (
    LibvirtDaemon,
    ScratchPool,
    kvm_group_access,
    kvm_problem,
    new_run_id,
    tool_problem,
)


def provider_has_domain_type() -> bool:
    """Whether the libvirt provider can be told to use TCG (LIBVIRT_DOMAIN_TYPE=qemu)."""
    from providers.libvirt.config import SETTINGS

    return any(setting.env == "LIBVIRT_DOMAIN_TYPE" for setting in SETTINGS)


def image_config() -> ImageConfig:
    return ImageConfig(cache_dir=default_cache_dir(), mirror=host_mirror())


def choose_domain_type() -> tuple[str | None, str]:
    """("kvm" | "qemu", why) to run, or (None, why not). KVM when it can boot the pod VM; else
    QEMU's TCG emulation (slow, but the same firmware, kernel and services) if the provider has the
    setting; PEERPODS_E2E_DOMAIN_TYPE forces one."""
    problem = tool_problem()
    if problem is not None:
        return None, problem
    forced = os.environ.get("PEERPODS_E2E_DOMAIN_TYPE")
    if forced:
        return forced, f"PEERPODS_E2E_DOMAIN_TYPE={forced}"
    kvm = kvm_problem()
    if kvm is None:
        return "kvm", "KVM can boot the pod VM"
    if provider_has_domain_type():
        return "qemu", f"TCG emulation, because {kvm}"
    return None, f"{kvm}, and the libvirt provider has no LIBVIRT_DOMAIN_TYPE setting for TCG emulation"


@pytest.fixture(scope="session")
def domain_type() -> str:
    chosen, why = choose_domain_type()
    if chosen is None:
        pytest.skip(f"end-to-end test not run: {why}")
    print(f"\nend-to-end test on libvirt domain type {chosen}: {why}")
    return chosen


@pytest.fixture(scope="session")
def podvm_image(domain_type: str) -> Iterator[BuildResult]:
    """The pod VM image, built now or taken from the cache outside the clone."""
    began = time.monotonic()
    result = build(image_config())
    how = "cached" if result.cached else "built"
    print(f"\npod VM image ({how}, {time.monotonic() - began:.1f}s): {result.qcow2}")
    yield result


@pytest.fixture(scope="session")
def libvirtd(domain_type: str) -> Iterator[LibvirtDaemon]:
    with kvm_group_access(), LibvirtDaemon() as daemon:
        yield daemon


@pytest.fixture(scope="session")
def run_id() -> str:
    return new_run_id()


@pytest.fixture(scope="session")
def scratch_pool(libvirtd: LibvirtDaemon, podvm_image: BuildResult, run_id: str) -> Iterator[ScratchPool]:
    pool = ScratchPool.create(run_id, podvm_image)
    yield pool
    pool.remove()
