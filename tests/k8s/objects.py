"""Applying manifests (helm template output) to the test API server, and reading them back."""

from __future__ import annotations

from typing import Any

import yaml

from cluster.kubeapi import KubeClient, path_segment

# kind -> (API group/version path, plural, namespaced): the kinds the charts render.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "RuntimeClass": ("/apis/node.k8s.io/v1", "runtimeclasses", False),
    "MutatingWebhookConfiguration": (
        "/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
}  # fmt: skip
FIRST = ("Namespace", "CustomResourceDefinition")


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def object_path(obj: dict[str, Any], namespace: str | None = None) -> str:
    base, plural, namespaced = RESOURCES[obj["kind"]]
    metadata = obj["metadata"]
    if namespaced:
        ns = metadata.get("namespace") or namespace
        base = f"{base}/namespaces/{path_segment(str(ns))}"
    return f"{base}/{plural}/{path_segment(metadata['name'])}"


async def apply_all(kube: KubeClient, objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Server-side apply in dependency order; the objects as the server stored them."""
    ordered = sorted(
        objects, key=lambda o: (o["kind"] not in FIRST, FIRST.index(o["kind"]) if o["kind"] in FIRST else 0)
    )
    stored = []
    for obj in ordered:
        if RESOURCES[obj["kind"]][2]:
            obj = {
                **obj,
                "metadata": {**obj["metadata"], "namespace": obj["metadata"].get("namespace") or namespace},
            }
        await kube.apply(object_path(obj, namespace), obj, "peerpods-tests")
        stored.append(await kube.get(object_path(obj, namespace)))
    return stored
