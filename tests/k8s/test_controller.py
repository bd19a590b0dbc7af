"""peerpods-controller against a real API server and garbage collector, with each cloud's provider code.

The adaptor is killed with its pods running, then the pods are deleted: the garbage collector marks
their PeerPods deleted, their finalizer holds them, and the controller must delete every instance
and let every PeerPod go. The check is the chaos test's: the cloud holds exactly the instances of
running pods (here: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster import peerpod
from cluster.controller.clouds import Clouds
from cluster.controller.leader import LeaderElector
from cluster.controller.reconcile import PeerPodController
from cluster.kubeapi import KubeClient
from providers.base import CreateRequest
from shimdriver.driver import shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import aws_cloud
from tests.fakes.arm import FakeArm
from tests.fakes.gce import FakeCompute
from tests.fakes.identity import FakeManagedIdentity
from tests.k8s.cluster import ControlPlane, free_port
from tests.k8s.conftest import create_node, create_pod

pytestmark = [pytest.mark.usefixtures("crd"), pytest.mark.timeout(240)]
PODS = 50


@contextlib.asynccontextmanager
async def running(controller: PeerPodController) -> AsyncIterator[None]:
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def delete_pods(kube: KubeClient, namespace: str, names: list[str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Background",
    }
    await asyncio.gather(
        *(kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", body) for name in names)
    )


async def until_no_peerpods(kube: KubeClient, namespace: str, timeout_s: float = 150.0) -> None:
    """Watch the namespace's PeerPods until none is left (the garbage collector and the controller
    work asynchronously: this is what a user would wait for)."""
    async with asyncio.timeout(timeout_s):
        while True:
            listing = await kube.list(peerpod.collection(namespace))
            if not listing["items"]:
                return
            version = listing["metadata"]["resourceVersion"]
            async for event in kube.watch(peerpod.collection(namespace), version, timeout_s=5):
                if event["type"] in ("DELETED", "ERROR"):
                    break


async def test_orphans_of_a_killed_adaptor_are_deleted(
    plane: ControlPlane, kube: KubeClient, namespace: str, moto_url: str, tmp_path: Path, short_dir: Path
) -> None:
    node = f"worker-{namespace}"
    await create_node(kube, node)
    names = [f"pod-{i}" for i in range(PODS)]
    await asyncio.gather(*(create_pod(kube, namespace, name) for name in names))
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url) as cloud:
        owner = f"k8s-{node}"
        env = cloud.adaptor_env(owner, KUBECONFIG=str(plane.kubeconfig), NODE_NAME=node,
                                POD_UID=str(uuid.uuid4()), CLOUD_PROVIDER="aws")  # fmt: skip
        (short_dir / "adaptor").mkdir()
        adaptor = AdaptorProcess(short_dir / "adaptor", env)
        await adaptor.start()
        hypervisor = adaptor.hypervisor

        async def start(name: str) -> None:
            await hypervisor.create_vm(f"sb-{name}", shim_annotations(name, namespace))
            await hypervisor.start_vm(f"sb-{name}")

        await asyncio.gather(*(start(name) for name in names))
        assert len(await cloud.owned_instances(owner)) == PODS
        assert len((await kube.list(peerpod.collection(namespace)))["items"]) == PODS
        await adaptor.kill()  # the node is lost: nobody will StopVM these

        controller = PeerPodController(kube, Clouds(env), workers=16)
        async with running(controller):
            await delete_pods(kube, namespace, names)
            await until_no_peerpods(kube, namespace)
        await controller.clouds.close()
        assert await cloud.owned_instances(owner) == {}  # owned == running (none): 0 leaked
        assert controller.deleted_instances == PODS


def gcp_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    return json.dumps({"type": "service_account", "project_id": "test-project", "private_key_id": "0" * 40,
                       "private_key": pem, "client_email": "caa@test-project.iam.gserviceaccount.com",
                       "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"})  # fmt: skip


async def orphans_cleaned(
    kube: KubeClient, namespace: str, provider_name: str, env: Mapping[str, str]
) -> None:
    """A few pods whose instances the provider made and whose PeerPods an adaptor made, then deleted."""
    clouds = Clouds(env)
    provider = await clouds.provider(provider_name)
    names = [f"{provider_name}-{i}" for i in range(3)]
    for name in names:
        pod = await create_pod(kube, namespace, name)
        instance = await provider.create_instance(
            CreateRequest(f"podvm-{name}", f"sb-{name}", b"#cloud-config\n")
        )
        body = peerpod.new_peerpod(pod, peerpod.peerpod_name(name, f"sb-{name}"), instance.id, provider_name)
        await kube.create(peerpod.collection(namespace), body)
    assert len(await provider.list_instances()) == len(names)
    controller = PeerPodController(kube, clouds, workers=4)
    async with running(controller):
        await delete_pods(kube, namespace, names)
        await until_no_peerpods(kube, namespace)
    assert await provider.list_instances() == []
    await clouds.close()


async def test_azure_orphans(kube: KubeClient, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeArm() as arm, FakeManagedIdentity() as identity:
        for name, value in identity.environment.items():  # azure-identity reads the process environment
            monkeypatch.setenv(name, value)
        env = {"AZURE_IMAGE_ID": arm.add_image(), "AZURE_REGION": arm.location,
               "AZURE_RESOURCE_GROUP": arm.resource_group, "AZURE_SUBNET_ID": arm.add_subnet(),
               "AZURE_SUBSCRIPTION_ID": arm.subscription_id, "AZURE_CLIENT_ID": str(uuid.uuid4()),
               "AZURE_TENANT_ID": str(uuid.uuid4()), "AZURE_ARM_ENDPOINT": arm.base_url,
               **identity.environment}  # fmt: skip
        await orphans_cleaned(kube, namespace, "azure", env)


async def test_gcp_orphans(kube: KubeClient, namespace: str) -> None:
    """GCP too (upstream's peerpod-ctrl has no GCP provider)."""
    with FakeCompute("test-project", ("us-central1-a",)) as gce:
        gce.add_image("podvm", disk_size_gb=10)
        gce.add_network("peerpods")
        gce.add_subnetwork("peerpods", "us-central1", "10.8.0.0/24", network="peerpods")
        env = {"GCP_CREDENTIALS": gcp_key(), "GCP_PROJECT_ID": "test-project", "GCP_ZONE": "us-central1-a",
               "GCP_NETWORK": "peerpods", "PODVM_IMAGE_NAME": "podvm", "GCP_MACHINE_TYPE": "n2d-standard-2",
               "GCP_CONFIDENTIAL_TYPE": "SEV_SNP", "GCP_API_ENDPOINT": gce.endpoint}  # fmt: skip
        await orphans_cleaned(kube, namespace, "gcp", env)


async def test_older_duplicate_of_a_pod_is_deleted(kube: KubeClient, namespace: str) -> None:
    """As upstream (#1517): two PeerPods of one pod, the older goes (its finalizer: instance deleted)."""
    pod = await create_pod(kube, namespace, "dup")
    older = peerpod.new_peerpod(pod, "dup-resource-old", "", "local")
    older["metadata"]["finalizers"] = []
    await kube.create(peerpod.collection(namespace), older)
    await asyncio.sleep(1.1)  # creationTimestamp has a resolution of one second: make them differ
    await kube.create(
        peerpod.collection(namespace), peerpod.new_peerpod(pod, "dup-resource-new", "", "local")
    )
    before = (await kube.list(peerpod.collection(namespace)))["metadata"]["resourceVersion"]
    controller = PeerPodController(kube, Clouds({}), workers=2)
    async with running(controller), asyncio.timeout(30):
        async for event in kube.watch(peerpod.collection(namespace), before):
            if event["type"] == "DELETED":
                assert event["object"]["metadata"]["name"] == "dup-resource-old"
                break
    names = [p["metadata"]["name"] for p in (await kube.list(peerpod.collection(namespace)))["items"]]
    assert names == ["dup-resource-new"]


async def test_unknown_cloud_is_retried_not_fatal(kube: KubeClient, namespace: str) -> None:
    pod = await create_pod(kube, namespace, "odd")
    await kube.create(
        peerpod.collection(namespace), peerpod.new_peerpod(pod, "odd-resource-x", "i-1", "nowhere")
    )
    controller = PeerPodController(kube, Clouds({}), workers=1)
    async with running(controller):
        await delete_pods(kube, namespace, ["odd"])
        async with asyncio.timeout(60):
            while not controller._failures:
                await asyncio.sleep(0.05)
    stuck = await kube.get(peerpod.item(namespace, "odd-resource-x"))
    assert peerpod.has_finalizer(stuck)  # kept: the instance may still exist
    await peerpod.remove_finalizer(kube, namespace, "odd-resource-x")


async def test_leader_election_one_leader_and_takeover(kube: KubeClient, namespace: str) -> None:
    first = LeaderElector(kube, namespace, "first", lease_s=2, renew_s=0.5, retry_s=0.2)
    second = LeaderElector(kube, namespace, "second", lease_s=2, renew_s=0.5, retry_s=0.2)
    await first.acquire()
    assert not await second._try()  # held and fresh
    await first.release()
    await asyncio.wait_for(second.acquire(), 10)  # released: no need to wait for the expiry
    lease = await kube.get(second.path)
    assert lease["spec"]["holderIdentity"] == "second" and lease["spec"]["leaseTransitions"] == 1


async def test_controller_process_leads_and_steps_down(plane: ControlPlane, kube: KubeClient, namespace: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """`peerpods-controller --leader-elect` as the chart runs it: takes the Lease, ready once synced,
    and gives the Lease up on SIGTERM (a successor need not wait for it to expire)."""
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "PEERPODS_NAMESPACE": namespace,
        "POD_NAME": "ctrl-0",
    }
    binary = Path(sys.executable).with_name("peerpods-controller")
    with (tmp_path / "controller.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "--leader-elect",
            f"--health-probe-bind-address=127.0.0.1:{port}",
            env=env,
            stderr=log,
        )
    lease = LeaderElector(kube, namespace, "probe").path
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession() as http:
            while True:  # until it serves /readyz 200 (it has listed the PeerPods)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.1)
        assert (await kube.get(lease))["spec"]["holderIdentity"].startswith("ctrl-0_")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert (await kube.get(lease))["spec"].get("holderIdentity") is None
