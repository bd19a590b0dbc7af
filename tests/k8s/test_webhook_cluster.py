"""The webhook registered with a real API server: pods of the runtime class are stored mutated."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cluster.kubeapi import ApiError, Json, KubeClient
from cluster.webhook.mutate import CPU_ANNOTATION, GPU_ANNOTATION, MEMORY_ANNOTATION, MutationSettings
from cluster.webhook.server import ServingCertificate, serving
from tests.k8s.cluster import ControlPlane

HOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
RUNTIME_CLASSES = "/apis/node.k8s.io/v1/runtimeclasses"


def registration(name: str, url: str, ca_pem: bytes, namespace: str, policy: str = "Fail") -> Json:
    """As the chart's MutatingWebhookConfiguration, with a URL instead of a Service (no kube-proxy here)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "mwebhook.peerpods.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
            "failurePolicy": policy,
            "sideEffects": "None",
            "reinvocationPolicy": "IfNeeded",
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "matchConditions": [{"name": "peer-pods-runtime-class", "expression":
                "has(object.spec.runtimeClassName) && object.spec.runtimeClassName == 'kata-remote'"}],
            "timeoutSeconds": 10,
        }],
    }  # fmt: skip


def pod(name: str, runtime_class: str | None, resources: dict[str, Any] | None = None) -> Json:
    spec: Json = {"containers": [{"name": "app", "image": "busybox", "resources": resources or {}},
                                 {"name": "sidecar", "image": "busybox",
                                  "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}  # fmt: skip
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def ensure_runtime_class(kube: KubeClient) -> None:
    body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata-remote"},
            "handler": "kata-remote",
            "overhead": {"podFixed": {"memory": "120Mi", "cpu": "250m"}}}  # fmt: skip
    await kube.apply(f"{RUNTIME_CLASSES}/kata-remote", body, "peerpods-tests")


async def wait_active(kube: KubeClient, namespace: str) -> None:
    """Until the API server calls the new webhook (its configuration is picked up asynchronously)."""
    probe = pod("probe", "kata-remote")
    async with asyncio.timeout(30):
        while True:
            created = await kube.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods", probe, params={"dryRun": "All"}
            )
            if CPU_ANNOTATION in (created["metadata"].get("annotations") or {}):
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def webhook(
    plane: ControlPlane, tmp_path: Path, kube: KubeClient, namespace: str
) -> AsyncIterator[str]:
    certs = plane.ca.write_pair(tmp_path / "certs", "peer-pods-webhook", ["127.0.0.1"])
    name = f"peer-pods-webhook-{namespace}"
    async with serving(MutationSettings(), ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (
        port,
        _,
    ):
        await ensure_runtime_class(kube)
        await kube.create(
            HOOKS, registration(name, f"https://127.0.0.1:{port}/mutate-v1-pod", plane.ca.pem, namespace)
        )
        try:
            await wait_active(kube, namespace)
            yield name
        finally:
            await kube.delete(f"{HOOKS}/{name}")


async def test_pod_of_the_runtime_class_is_stored_mutated(
    kube: KubeClient, namespace: str, webhook: str
) -> None:
    resources = {"requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
                 "limits": {"cpu": "2", "memory": "3Gi", "nvidia.com/gpu": "1"}}  # fmt: skip
    stored = await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("peer", "kata-remote", resources))
    annotations = stored["metadata"]["annotations"]
    # cpu: requests 1 + 0.5 = 1.5, limits 2 (the sidecar has none) >= requests: 2. memory: limits 3Gi
    # (3072 MiB) >= requests 3Gi: 3072.
    assert annotations[CPU_ANNOTATION] == "2"
    assert annotations[MEMORY_ANNOTATION] == "3072"
    assert annotations[GPU_ANNOTATION] == "1"
    app, sidecar = stored["spec"]["containers"]
    assert app["resources"] == {
        "requests": {"kata.peerpods.io/vm": "1"},
        "limits": {"kata.peerpods.io/vm": "1"},
    }
    assert sidecar["resources"] == {}
    # The RuntimeClass admission plugin still charges the node the class's overhead.
    assert stored["spec"]["overhead"] == {"cpu": "250m", "memory": "120Mi"}


async def test_other_pods_are_untouched(kube: KubeClient, namespace: str, webhook: str) -> None:
    original = pod("plain", None, {"requests": {"cpu": "1"}})
    stored = await kube.create(f"/api/v1/namespaces/{namespace}/pods", original)
    assert CPU_ANNOTATION not in (stored["metadata"].get("annotations") or {})
    assert stored["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1"}}


async def test_webhook_down_refuses_the_pod(
    plane: ControlPlane, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    certs = plane.ca.write_pair(tmp_path / "certs", "peer-pods-webhook", ["127.0.0.1"])
    name = f"peer-pods-webhook-down-{namespace}"
    async with serving(MutationSettings(), ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (
        port,
        _,
    ):
        await ensure_runtime_class(kube)
        await kube.create(
            HOOKS, registration(name, f"https://127.0.0.1:{port}/mutate-v1-pod", plane.ca.pem, namespace)
        )
        await wait_active(kube, namespace)
    try:  # the server is gone; failurePolicy Fail
        with pytest.raises(ApiError) as refused:
            await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("refused", "kata-remote"))
        assert refused.value.status == 500 and "mwebhook.peerpods.io" in refused.value.message
        plain = await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("plain", None))
        assert plain["metadata"]["name"] == "plain"  # only the runtime class's pods need the webhook
    finally:
        await kube.delete(f"{HOOKS}/{name}")
