"""The whole peer-pod flow on a real pod VM: the shim's calls to cloud-api-adaptor with the libvirt
provider, a VM booted from the image built by podvm/image, the agent tunnel, a container process in
the VM whose output comes back; then nothing is left (domains, volumes, QEMU processes, NVRAM)."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from podvm.image.build import BuildResult, build
from shimdriver.driver import run_pod
from tests.e2e.conftest import DOMAIN_TYPE, image_config
from tests.e2e.stack import (
    ConsoleWatcher,
    LibvirtAdaptor,
    ScratchPool,
    adaptor_env,
    leftovers,
    scratch_dir,
)

pytestmark = [pytest.mark.kvm, pytest.mark.timeout(1800)]

# Runs as a "container" process in the VM (the stand-in agent runs it directly).
PROGRAM = "import os; print('hello from the pod VM', os.uname().release)"


def test_cached_rebuild_returns_the_same_image(podvm_image: BuildResult) -> None:
    began = time.monotonic()
    again = build(image_config())
    took = time.monotonic() - began
    print(f"\ncached rebuild: {took:.2f}s")
    assert again.cached
    assert again.qcow2 == podvm_image.qcow2
    manifest = json.loads(again.manifest.read_text())
    assert set(manifest["outputs"]) == {"podvm.qcow2", "podvm.raw"}


async def test_pod_runs_in_a_real_vm(
    scratch_pool: ScratchPool, podvm_image: BuildResult, run_id: str
) -> None:
    manifest = json.loads(podvm_image.manifest.read_text())
    owner = f"e2e-{run_id}"
    sandbox_id = secrets.token_hex(32)
    slow = DOMAIN_TYPE != "kvm"
    env = adaptor_env(scratch_pool, DOMAIN_TYPE, PROXY_TIMEOUT="20m" if slow else "5m")
    with scratch_dir(run_id) as directory, ConsoleWatcher(owner) as consoles:
        adaptor = LibvirtAdaptor(directory, owner, env)
        await adaptor.start()
        try:
            result = await run_pod(
                adaptor.hypervisor, sandbox_id, ["/usr/bin/python3", "-c", PROGRAM], pod_name="e2e"
            )
        except BaseException:
            for console in consoles.consoles.values():
                print(f"--- serial console of {console.domain_name}:\n{console.text()}")
            print(f"--- adaptor log:\n{adaptor.log.read_text()}")
            raise
        finally:
            await adaptor.stop()
        names = [console.domain_name for console in consoles.consoles.values()]
        print(result.timeline.render())
    assert names, "no pod VM domain was seen"
    assert result.exit_status == 0, result.stderr
    assert result.stdout.decode().strip() == f"hello from the pod VM {manifest['kernel']}"
    assert leftovers(owner, names, scratch_pool) == []
