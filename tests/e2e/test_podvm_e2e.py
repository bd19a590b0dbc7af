"""The whole peer-pod flow on a real pod VM: the shim's calls to cloud-api-adaptor with the libvirt
provider, a VM booted from the image built by podvm/image, the agent tunnel, a container process in
the VM whose output comes back, and the VM attesting to the KBS on the host (sample TEE, trusted by
this test's policy) to read a secret through the local CDH API; then nothing is left (domains,
volumes, QEMU processes, NVRAM)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podvm.image.build import BuildResult, build
from shimdriver.driver import run_pod
from tests.e2e.conftest import image_config
from tests.e2e.stack import (
    ConsoleWatcher,
    HostKbs,
    LibvirtAdaptor,
    ScratchPool,
    adaptor_env,
    kbs_initdata,
    leftovers,
    scratch_dir,
)

pytestmark = [pytest.mark.kvm, pytest.mark.timeout(1800)]

RESOURCE = "default/e2e/secret"
# Runs as a "container" process in the VM (the stand-in agent runs it directly): reads the secret
# through the local CDH API, which attests to the KBS first.
PROGRAM = f"""
import os, time, urllib.request
url = "http://127.0.0.1:8006/cdh/resource/{RESOURCE}"
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            secret = response.read().decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
print("hello from the pod VM", os.uname().release)
print("secret:", secret)
"""


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[HostKbs]:
    with HostKbs(tmp_path / "kbs", RESOURCE, secrets.token_hex(16).encode()) as server:
        yield server


def test_cached_rebuild_returns_the_same_image(podvm_image: BuildResult) -> None:
    began = time.monotonic()
    again = build(image_config())
    took = time.monotonic() - began
    print(f"\ncached rebuild: {took:.2f}s")
    assert again.cached
    assert again.qcow2 == podvm_image.qcow2
    manifest = json.loads(again.manifest.read_text())
    assert set(manifest["outputs"]) == {"podvm.qcow2", "podvm.raw", "vmlinuz", "initrd.img"}
    assert manifest["direct_boot"]["cmdline"] == again.direct_cmdline()
    assert again.kernel.is_file() and again.initrd.is_file()


async def test_pod_runs_in_a_real_vm(
    scratch_pool: ScratchPool, podvm_image: BuildResult, run_id: str, kbs: HostKbs, domain_type: str
) -> None:
    manifest = json.loads(podvm_image.manifest.read_text())
    assert "attestation-agent.service" in manifest["units"]
    owner = f"e2e-{run_id}"
    sandbox_id = secrets.token_hex(32)
    slow = domain_type != "kvm"
    env = adaptor_env(
        scratch_pool, domain_type, PROXY_TIMEOUT="20m" if slow else "5m", INITDATA=kbs_initdata(kbs.guest_url)
    )
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
            print(f"--- adaptor log:\n{adaptor.log.read_text()}\n--- KBS log:\n{kbs.log.read_text()}")
            raise
        finally:
            await adaptor.stop()
        names = list(consoles.domain_names)
        print(result.timeline.render())
    assert names, "no pod VM domain was seen"
    assert result.exit_status == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [
        # Booted directly (adaptor_env's default): the cloud kernel published beside the disk.
        f"hello from the pod VM {manifest['direct_boot']['kernel_version']}",
        f"secret: {kbs.secret.decode()}",
    ]
    assert leftovers(owner, names, scratch_pool) == []
