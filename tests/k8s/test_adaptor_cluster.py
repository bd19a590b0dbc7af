"""A real `cloud-api-adaptor aws` (moto) in a real cluster: node capacity, PeerPods, pull secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor.k8s.node import OWNER_ANNOTATION, RESOURCE, UNLIMITED
from cluster import peerpod
from cluster.kubeapi import ApiError, KubeClient
from cluster.quantity import parse
from protocols.cloudconfig import parse_cloud_config
from shimdriver.driver import shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.k8s.cluster import ControlPlane
from tests.k8s.conftest import create_node, create_pod

pytestmark = pytest.mark.usefixtures("crd")


@pytest.fixture
async def cloud(moto_url: str, tmp_path: Path) -> AsyncIterator[AwsCloud]:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url) as running:
        yield running


def adaptor_for(
    plane: ControlPlane, cloud: AwsCloud, directory: Path, node: str, exist_ok: bool = False, **env: str
) -> AdaptorProcess:
    """As the DaemonSet runs it: NODE_NAME, POD_UID, CLOUD_PROVIDER (peer-pods-cm), and a kubeconfig
    standing in for the service account."""
    settings = {"KUBECONFIG": str(plane.kubeconfig), "NODE_NAME": node, "POD_UID": str(uuid.uuid4()),
                "CLOUD_PROVIDER": "aws", **env}  # fmt: skip
    directory.mkdir(parents=True, exist_ok=exist_ok)
    return AdaptorProcess(directory, cloud.adaptor_env(f"k8s-{node}", **settings))


async def user_files(cloud: AwsCloud, instance_id: str) -> dict[str, str]:
    """The files of an instance's cloud-config user data, as EC2 keeps it."""
    answer = await asyncio.to_thread(cloud.admin.describe_instance_attribute, InstanceId=instance_id,
                                     Attribute="userData")  # fmt: skip
    return {f.path: f.content for f in parse_cloud_config(base64.b64decode(answer["UserData"]["Value"]))}


async def node_of(kube: KubeClient, name: str) -> tuple[str | None, str | None]:
    node = await kube.get(f"/api/v1/nodes/{name}")
    owner = (node["metadata"].get("annotations") or {}).get(OWNER_ANNOTATION)
    return owner, (node.get("status", {}).get("capacity") or {}).get(RESOURCE)


async def test_peerpod_lifecycle_and_node_capacity(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    node = f"worker-{namespace}"
    await create_node(kube, node)
    pod = await create_pod(kube, namespace, "web")
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node)
    await adaptor.start()
    try:
        assert await node_of(kube, node) == (adaptor.env["POD_UID"], "10")
        sandbox = "sandbox-" + namespace
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("web", namespace))
        await adaptor.hypervisor.start_vm(sandbox)
        name = peerpod.peerpod_name("web", sandbox)
        created = await kube.get(peerpod.item(namespace, name))
        (instance_id,) = (await cloud.owned_instances(f"k8s-{node}")).keys()
        assert created["spec"] == {"instanceID": instance_id, "cloudProvider": "aws"}
        assert created["metadata"]["finalizers"] == [peerpod.FINALIZER]
        (owner,) = created["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": pod["metadata"]["uid"],
                         "controller": True, "blockOwnerDeletion": True}  # fmt: skip

        await adaptor.hypervisor.stop_vm(sandbox)
        released = await kube.get(peerpod.item(namespace, name))
        assert released["metadata"].get("finalizers") is None
        assert await cloud.owned_instances(f"k8s-{node}") == {}
    finally:
        await adaptor.stop()
    assert await node_of(kube, node) == (adaptor.env["POD_UID"], None)  # withdrawn by its owner


async def test_sigkill_and_restart_still_release(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    node = f"worker-{namespace}"
    await create_node(kube, node)
    await create_pod(kube, namespace, "db")
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node)
    await adaptor.start()
    sandbox = "sandbox-" + namespace
    await adaptor.hypervisor.create_vm(sandbox, shim_annotations("db", namespace))
    await adaptor.hypervisor.start_vm(sandbox)
    await adaptor.kill()
    await adaptor.start()  # the same state directory: the sandbox is resumed
    try:
        name = peerpod.peerpod_name("db", sandbox)
        assert peerpod.has_finalizer(await kube.get(peerpod.item(namespace, name)))
        await adaptor.hypervisor.stop_vm(sandbox)
        assert not peerpod.has_finalizer(await kube.get(peerpod.item(namespace, name)))
    finally:
        await adaptor.stop()


async def test_rolling_update_leaves_the_capacity_to_the_new_adaptor(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    """maxSurge 1: the new adaptor claims the node; the old one, stopping after, must not withdraw."""
    node = f"worker-{namespace}"
    await create_node(kube, node)
    old = adaptor_for(plane, cloud, short_dir / "old", node, PEERPODS_LIMIT_PER_NODE="0")
    new = adaptor_for(plane, cloud, short_dir / "new", node, PEERPODS_LIMIT_PER_NODE="3")
    await old.start()
    owner, capacity = await node_of(kube, node)
    assert owner == old.env["POD_UID"] and parse(str(capacity)) == UNLIMITED  # stored as "1M"
    await new.start()
    try:
        await old.stop()
        assert await node_of(kube, node) == (new.env["POD_UID"], "3")
    finally:
        await new.stop()
    assert await node_of(kube, node) == (new.env["POD_UID"], None)


async def test_no_capacity_with_a_negative_limit(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    node = f"worker-{namespace}"
    await create_node(kube, node)
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node, PEERPODS_LIMIT_PER_NODE="-1")
    await adaptor.start()
    try:
        assert await node_of(kube, node) == (adaptor.env["POD_UID"], None)
    finally:
        await adaptor.stop()


async def test_unknown_node_refuses_the_start(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", f"missing-{namespace}")
    await adaptor.spawn()
    assert adaptor.process is not None
    assert await adaptor.process.wait() == 2
    log = adaptor.log.read_text()
    assert "cannot advertise peer pod capacity" in log and "Traceback" not in log


async def test_pull_secrets_become_the_pod_vms_auth_json(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    base = f"/api/v1/namespaces/{namespace}"

    def docker_secret(name: str, kind: str, document: object) -> dict[str, object]:
        data = base64.b64encode(json.dumps(document).encode()).decode()
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": f"kubernetes.io/{kind.lstrip('.')}", "data": {kind: data}}  # fmt: skip

    await kube.create(f"{base}/secrets", docker_secret(
        "account-creds", ".dockercfg", {"quay.io": {"username": "robot", "password": "pw"}}))  # fmt: skip
    pod_auths = {"registry.example": {"auth": "dXNlcjpwdw==", "username": "user"},
                 "quay.io": {"auth": "b3ZlcnJpZGRlbg=="}}  # fmt: skip
    await kube.create(
        f"{base}/secrets", docker_secret("pod-creds", ".dockerconfigjson", {"auths": pod_auths})
    )
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
               "imagePullSecrets": [{"name": "account-creds"}]}  # fmt: skip
    await kube.create(f"{base}/serviceaccounts", account)
    await create_pod(kube, namespace, "app", serviceAccountName="builder",
                     imagePullSecrets=[{"name": "pod-creds"}, {"name": "not-there"}])  # fmt: skip
    node = f"worker-{namespace}"
    await create_node(kube, node)
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node)
    await adaptor.start()
    try:
        sandbox = "sandbox-" + namespace
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("app", namespace))
        await adaptor.hypervisor.start_vm(sandbox)
        (instance_id,) = (await cloud.owned_instances(f"k8s-{node}")).keys()
        files = await user_files(cloud, instance_id)
        assert json.loads(files["/run/peerpod/auth.json"]) == {"auths": {
            "quay.io": {"auth": "b3ZlcnJpZGRlbg=="},  # the pod's secret wins over its account's
            "registry.example": {"auth": "dXNlcjpwdw=="},  # username and password dropped
        }}  # fmt: skip
        await adaptor.hypervisor.stop_vm(sandbox)
    finally:
        await adaptor.stop()
    assert "dXNlcjpwdw==" not in adaptor.log.read_text()


async def test_missing_pod_does_not_fail_the_start(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    """The PeerPod of a pod that does not exist cannot be created: logged, the pod VM still starts."""
    node = f"worker-{namespace}"
    await create_node(kube, node)
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node)
    await adaptor.start()
    try:
        sandbox = "sandbox-" + namespace
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("ghost", namespace))
        await adaptor.hypervisor.start_vm(sandbox)
        with pytest.raises(ApiError) as missing:
            await kube.get(peerpod.item(namespace, peerpod.peerpod_name("ghost", sandbox)))
        assert missing.value.not_found
        await adaptor.hypervisor.stop_vm(sandbox)
    finally:
        await adaptor.stop()
    assert "failed to create PeerPod" in adaptor.log.read_text()


async def test_restart_into_the_cluster_adopts_running_sandboxes(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    """A sandbox started while the adaptor had no API server gets its PeerPod at the next start."""
    node = f"worker-{namespace}"
    await create_node(kube, node)
    await create_pod(kube, namespace, "early")
    outside = AdaptorProcess(short_dir / "adaptor", cloud.adaptor_env(f"k8s-{node}"))
    (short_dir / "adaptor").mkdir()
    await outside.start()
    sandbox = "sandbox-" + namespace
    await outside.hypervisor.create_vm(sandbox, shim_annotations("early", namespace))
    await outside.hypervisor.start_vm(sandbox)
    await outside.stop()
    inside = adaptor_for(plane, cloud, short_dir / "adaptor", node, exist_ok=True)
    await inside.start()
    try:
        (instance_id,) = (await cloud.owned_instances(f"k8s-{node}")).keys()
        adopted = await kube.get(peerpod.item(namespace, peerpod.peerpod_name("early", sandbox)))
        assert adopted["spec"]["instanceID"] == instance_id and peerpod.has_finalizer(adopted)
        await inside.hypervisor.stop_vm(sandbox)
    finally:
        await inside.stop()


async def test_a_new_instance_updates_the_existing_peerpod(
    plane: ControlPlane, kube: KubeClient, namespace: str, cloud: AwsCloud, short_dir: Path
) -> None:
    """StartVM again after a failed start: the PeerPod (released by the failure) records the new
    instance and holds the finalizer again."""
    node = f"worker-{namespace}"
    await create_node(kube, node)
    pod = await create_pod(kube, namespace, "retry")
    sandbox = "sandbox-" + namespace
    name = peerpod.peerpod_name("retry", sandbox)
    stale = peerpod.new_peerpod(pod, name, "i-gone", "aws")
    stale["metadata"]["finalizers"] = []
    await kube.create(peerpod.collection(namespace), stale)
    adaptor = adaptor_for(plane, cloud, short_dir / "adaptor", node)
    await adaptor.start()
    try:
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("retry", namespace))
        await adaptor.hypervisor.start_vm(sandbox)
        (instance_id,) = (await cloud.owned_instances(f"k8s-{node}")).keys()
        current = await kube.get(peerpod.item(namespace, name))
        assert current["spec"]["instanceID"] == instance_id and peerpod.has_finalizer(current)
        await adaptor.hypervisor.stop_vm(sandbox)
    finally:
        await adaptor.stop()
