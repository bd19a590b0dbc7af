"""Fixtures of the end-to-end run: skip reasons, the image, libvirtd, the scratch pool.

The test runs where /dev/kvm can boot a standard UEFI guest and the tools are installed; elsewhere it
skips and says why. `PEERPODS_E2E_DOMAIN_TYPE=qemu` runs it under QEMU's TCG emulation instead
(slow; needs a libvirt provider with the LIBVIRT_DOMAIN_TYPE setting).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from podvm.image.build import BuildResult, build
from podvm.image.config import ImageConfig, default_cache_dir, host_mirror
from tests.e2e.stack import LibvirtDaemon, ScratchPool, kvm_problem, new_run_id, tool_problem

DOMAIN_TYPE = os.environ.get("PEERPODS_E2E_DOMAIN_TYPE", "kvm")


def image_config() -> ImageConfig:
    return ImageConfig(cache_dir=default_cache_dir(), mirror=host_mirror())


def e2e_skip_reason() -> str | None:
    problem = tool_problem()
    if problem is None and DOMAIN_TYPE == "kvm":
        problem = kvm_problem()
        if problem is not None:
            problem += " (PEERPODS_E2E_DOMAIN_TYPE=qemu runs the test under TCG emulation)"
    return problem


@pytest.fixture(scope="session")
def e2e_ready() -> None:
    reason = e2e_skip_reason()
    if reason is not None:
        pytest.skip(f"end-to-end test not run: {reason}")


@pytest.fixture(scope="session")
def podvm_image(e2e_ready: None) -> Iterator[BuildResult]:
    """The pod VM image, built now or taken from the cache outside the clone."""
    began = time.monotonic()
    result = build(image_config())
    how = "cached" if result.cached else "built"
    print(f"\npod VM image ({how}, {time.monotonic() - began:.1f}s): {result.qcow2}")
    yield result


@pytest.fixture(scope="session")
def libvirtd(e2e_ready: None) -> Iterator[LibvirtDaemon]:
    with LibvirtDaemon() as daemon:
        yield daemon


@pytest.fixture(scope="session")
def run_id() -> str:
    return new_run_id()


@pytest.fixture(scope="session")
def scratch_pool(libvirtd: LibvirtDaemon, podvm_image: BuildResult, run_id: str) -> Iterator[ScratchPool]:
    pool = ScratchPool.create(run_id, podvm_image.qcow2)
    yield pool
    pool.remove()
