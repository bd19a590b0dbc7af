"""PeerPod objects (confidentialcontainers.org/v1alpha1), as upstream's adaptor and peerpod-ctrl use them.

A PeerPod records "this pod runs in that cloud instance". The adaptor creates it right after the
instance exists, owned by the pod (so it goes when the pod goes) and held by the finalizer
`peer.pod/finalizer`; it releases the finalizer once it has deleted the instance. A PeerPod being
deleted with the finalizer still set therefore means nobody deleted the instance: the controller's
job. The name is `<pod>-resource-<5 characters>` as upstream's, but the suffix comes from the sandbox
id instead of a random source, so a restarted adaptor finds the object again from its persisted
sandbox record (upstream keeps the pod-to-PeerPod map in memory and loses it on restart).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cluster.kubeapi import JSON_PATCH, ApiError, Json, KubeClient, path_segment

GROUP = "confidentialcontainers.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PeerPod"
PLURAL = "peerpods"
FINALIZER = "peer.pod/finalizer"
NAME_INFIX = "-resource-"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String alphabet
_MAX_NAME = 253


def collection(namespace: str | None = None) -> str:
    """The API path of PeerPods in `namespace`, or of all of them."""
    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{path_segment(namespace)}/{PLURAL}"


def item(namespace: str, name: str) -> str:
    return f"{collection(namespace)}/{path_segment(name)}"


def peerpod_name(pod_name: str, sandbox_id: str) -> str:
    """`<pod>-resource-xxxxx`, the suffix derived from the sandbox id (five of upstream's letters)."""
    digest = int.from_bytes(hashlib.sha256(sandbox_id.encode()).digest()[:8], "big")
    suffix = ""
    for _ in range(5):
        digest, index = divmod(digest, len(_SUFFIX_ALPHABET))
        suffix += _SUFFIX_ALPHABET[index]
    head = pod_name[: _MAX_NAME - len(NAME_INFIX) - len(suffix)].rstrip("-.")
    return f"{head}{NAME_INFIX}{suffix}"


def new_peerpod(pod: Json, name: str, instance_id: str, cloud_provider: str) -> Json:
    """The object upstream's adaptor posts: controller owner reference to the pod, our finalizer."""
    metadata = pod["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "finalizers": [FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"instanceID": instance_id, "cloudProvider": cloud_provider},
    }


def owner_uid(peerpod: Json) -> str:
    """The pod the PeerPod belongs to (upstream compares ownerReferences[0].uid)."""
    owners = peerpod.get("metadata", {}).get("ownerReferences") or []
    return str(owners[0].get("uid", "")) if owners else ""


def has_finalizer(peerpod: Json) -> bool:
    return FINALIZER in (peerpod.get("metadata", {}).get("finalizers") or [])


async def remove_finalizer(client: KubeClient, namespace: str, name: str) -> bool:
    """Drop our finalizer, leaving any other; False if the PeerPod or the finalizer is already gone.

    A JSON patch with a `test` of the finalizer's index: a concurrent change of the list makes the
    patch fail (422) instead of removing someone else's entry, and the list is read again.
    """
    path = item(namespace, name)
    for _ in range(5):
        try:
            current = await client.get(path)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        finalizers: list[Any] = current.get("metadata", {}).get("finalizers") or []
        if FINALIZER not in finalizers:
            return False
        index = finalizers.index(FINALIZER)
        entry = f"/metadata/finalizers/{index}"
        patch = [{"op": "test", "path": entry, "value": FINALIZER}, {"op": "remove", "path": entry}]
        try:
            await client.patch(path, patch, JSON_PATCH)
        except ApiError as exc:
            if exc.not_found:
                return False
            if exc.status not in (409, 422):
                raise
            continue
        return True
    raise ApiError(409, "Conflict", f"finalizers of PeerPod {namespace}/{name} keep changing")
