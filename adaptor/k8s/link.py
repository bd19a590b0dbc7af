"""The adaptor's calls to the Kubernetes API when it runs in a cluster (NODE_NAME set), as upstream's.

- start: node owner annotation and capacity (adaptor.k8s.node); shutdown: withdrawn by the owner only;
- StartVM: the pod's image pull secrets become the pod VM's auth.json (adaptor.k8s.pullsecrets),
  and a PeerPod is created as soon as the instance exists (cluster.peerpod);
- StopVM, or a failed StartVM, after the instance is deleted: the PeerPod's finalizer is released.

None of these calls may fail a pod: an unreachable API server is logged and the pod goes on, as
upstream's. The PeerPod's name is recomputed from the persisted sandbox (pod name, sandbox id), so a
restarted adaptor releases what an earlier process created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Protocol

import aiohttp

from adaptor.config import AUTH_JSON_LIMIT
from adaptor.k8s import node, pullsecrets
from adaptor.state import SandboxRecord, SandboxState
from cluster import peerpod
from cluster.kubeapi import ApiError, Json, KubeClient, KubeConfig, KubeConfigError, path_segment

log = logging.getLogger(__name__)

# What a failed API call can raise: refused, unreachable, timed out, token unreadable.
CALL_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError, KubeConfigError, OSError)


class Sandbox(Protocol):
    """What the link needs of a sandbox record (adaptor.state.SandboxRecord)."""

    @property
    def id(self) -> str: ...
    @property
    def pod_name(self) -> str: ...
    @property
    def pod_namespace(self) -> str: ...
    @property
    def instance_id(self) -> str: ...


class ClusterError(Exception):
    """In a cluster (NODE_NAME set), but the API server is unusable at start."""


def cluster_link(provider: str, limit: int, env: Mapping[str, str] = os.environ) -> ClusterLink | None:
    """The link when NODE_NAME is set (upstream's test for "in Kubernetes") and an API server is
    configured (in-cluster service account, or KUBECONFIG); None outside a cluster.

    NODE_NAME without any API server configuration runs without the link, and says so: the adaptor
    still serves pods, with no node capacity, PeerPods or pull secrets.
    """
    if not env.get("NODE_NAME"):
        return None
    if not env.get("KUBECONFIG") and not env.get("KUBERNETES_SERVICE_HOST"):
        log.info(
            "NODE_NAME is set but no Kubernetes API is configured (no service account, no KUBECONFIG): "
            "node capacity, PeerPods and image pull secrets are off"
        )
        return None
    try:
        config = KubeConfig.load(env)
    except KubeConfigError as exc:
        raise ClusterError(str(exc)) from None
    provider = env.get("CLOUD_PROVIDER") or provider
    return ClusterLink(KubeClient(config), env["NODE_NAME"], env.get("POD_UID", ""), provider, limit)


class ClusterLink:
    def __init__(self, client: KubeClient, node_name: str, pod_uid: str, provider: str, limit: int) -> None:
        self.client = client
        self.node_name = node_name
        self.pod_uid = pod_uid
        self.provider = provider
        self.limit = limit

    async def start(self) -> None:
        """Claim the node; as upstream, the adaptor does not start when it cannot (it is restarted)."""
        try:
            await node.claim(self.client, self.node_name, self.pod_uid, self.limit)
        except CALL_ERRORS as exc:
            await self.client.close()
            raise ClusterError(f"node {self.node_name}: cannot advertise peer pod capacity: {exc}") from None

    async def close(self) -> None:
        try:
            await node.release(self.client, self.node_name, self.pod_uid)
        except CALL_ERRORS as exc:
            log.error("node %s: cannot withdraw peer pod capacity: %s", self.node_name, exc)
        await self.client.close()

    async def auth_json(self, sandbox: Sandbox, default: str) -> str:
        """The pod VM's auth.json: AUTH_JSON_FILE's registries with the pod's pull secrets over them.

        Falls back to `default` when the secrets cannot be read or the result would not fit.
        """
        try:
            auths = await pullsecrets.registry_auths(self.client, sandbox.pod_namespace, sandbox.pod_name)
        except CALL_ERRORS as exc:
            log.warning("sandbox %s: image pull secrets not read: %s", sandbox.id, exc)
            return default
        if not auths:
            return default
        merged = pullsecrets.merge(default, auths)
        if len(merged) > AUTH_JSON_LIMIT:
            log.warning(
                "sandbox %s: registry credentials exceed %d bytes, not sent", sandbox.id, AUTH_JSON_LIMIT
            )
            return default
        return merged

    async def adopt(self, records: Iterable[SandboxRecord]) -> None:
        """At start: every running sandbox has its PeerPod (the adaptor may have been stopped between an
        instance and its PeerPod, or run outside the cluster until now)."""
        for record in records:
            if record.state == SandboxState.RUNNING and record.instance_id:
                await self.instance_created(record)

    async def instance_created(self, sandbox: Sandbox) -> None:
        """Create the sandbox's PeerPod, or bring the one already there (a retried StartVM, a restart)
        up to date: this instance, our finalizer."""
        name = peerpod.peerpod_name(sandbox.pod_name, sandbox.id)
        namespace = path_segment(sandbox.pod_namespace)
        try:
            pod = await self.client.get(
                f"/api/v1/namespaces/{namespace}/pods/{path_segment(sandbox.pod_name)}"
            )
            body = peerpod.new_peerpod(pod, name, sandbox.instance_id, self.provider)
            try:
                await self.client.create(peerpod.collection(sandbox.pod_namespace), body)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                await self._update(sandbox, name, body)
                return
        except CALL_ERRORS as exc:
            log.error("sandbox %s: failed to create PeerPod %s: %s", sandbox.id, name, exc)
            return
        log.info("sandbox %s: PeerPod %s/%s owns instance %s", sandbox.id, sandbox.pod_namespace, name,
                 sandbox.instance_id)  # fmt: skip

    async def _update(self, sandbox: Sandbox, name: str, wanted: Json) -> None:
        path = peerpod.item(sandbox.pod_namespace, name)
        current = await self.client.get(path)
        metadata = current["metadata"]
        if current.get("spec") == wanted["spec"] and peerpod.has_finalizer(current):
            return
        if metadata.get("deletionTimestamp"):
            log.error("sandbox %s: PeerPod %s is being deleted, instance %s not recorded", sandbox.id, name,
                      sandbox.instance_id)  # fmt: skip
            return
        if not peerpod.has_finalizer(current):
            metadata["finalizers"] = [*(metadata.get("finalizers") or []), peerpod.FINALIZER]
        current["spec"] = wanted["spec"]
        await self.client.request("PUT", path, current)  # carries the resourceVersion read
        log.info("sandbox %s: PeerPod %s/%s now owns instance %s", sandbox.id, sandbox.pod_namespace, name,
                 sandbox.instance_id)  # fmt: skip

    async def instance_deleted(self, sandbox: Sandbox) -> None:
        """Release the PeerPod's finalizer: the instance is gone, garbage collection may take it."""
        name = peerpod.peerpod_name(sandbox.pod_name, sandbox.id)
        try:
            released = await peerpod.remove_finalizer(self.client, sandbox.pod_namespace, name)
        except CALL_ERRORS as exc:
            log.error("sandbox %s: failed to release PeerPod %s: %s", sandbox.id, name, exc)
        else:
            if released:
                log.info("sandbox %s: PeerPod %s/%s released", sandbox.id, sandbox.pod_namespace, name)
