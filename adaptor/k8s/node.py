"""The node's peer pod capacity: the extended resource the webhook makes every peer pod request.

At start the adaptor marks itself the node's owner (annotation kata.peerpods.io/caa-owner = its pod
UID) and advertises PEERPODS_LIMIT_PER_NODE units of kata.peerpods.io/vm in the node's status
capacity (the kubelet copies extended resources to allocatable). Merge patches on nodes/status, so
other capacity entries are untouched and a node without any capacity yet works too (upstream's JSON
patch `add /status/capacity/...` fails there). During a rolling update the new
adaptor starts beside the old one and takes ownership, so at shutdown an adaptor withdraws the
capacity only if it is still the owner, as upstream's.

Limit semantics (the chart's, documented in its values): negative = nothing advertised; 0 =
unlimited, advertised as UNLIMITED units (upstream's code advertises 0, so no pod could schedule,
although its chart says "0 = unlimited"); otherwise the number.
"""

from __future__ import annotations

import logging

from cluster.kubeapi import KubeClient, path_segment

log = logging.getLogger(__name__)

OWNER_ANNOTATION = "kata.peerpods.io/caa-owner"
RESOURCE = "kata.peerpods.io/vm"
UNLIMITED = 1_000_000


def advertised(limit: int) -> int | None:
    """The capacity a PEERPODS_LIMIT_PER_NODE value stands for; None = not advertised."""
    if limit < 0:
        return None
    return UNLIMITED if limit == 0 else limit


async def claim(client: KubeClient, node: str, pod_uid: str, limit: int) -> None:
    """Become the node's owner and advertise the capacity."""
    path = f"/api/v1/nodes/{path_segment(node)}"
    await client.patch(path, {"metadata": {"annotations": {OWNER_ANNOTATION: pod_uid}}})
    capacity = advertised(limit)
    if capacity is None:
        log.info("node %s: %s not advertised (PEERPODS_LIMIT_PER_NODE %d)", node, RESOURCE, limit)
        return
    await client.patch(f"{path}/status", {"status": {"capacity": {RESOURCE: str(capacity)}}})
    log.info("node %s: capacity %s = %d", node, RESOURCE, capacity)


async def release(client: KubeClient, node: str, pod_uid: str) -> bool:
    """Withdraw the capacity if this adaptor still owns the node; False if another one took over."""
    path = f"/api/v1/nodes/{path_segment(node)}"
    current = await client.get(path)
    owner = (current.get("metadata", {}).get("annotations") or {}).get(OWNER_ANNOTATION)
    if owner != pod_uid:
        log.info("node %s is owned by adaptor pod %s now: capacity left in place", node, owner)
        return False
    if RESOURCE not in (current.get("status", {}).get("capacity") or {}):
        return True
    await client.patch(f"{path}/status", {"status": {"capacity": {RESOURCE: None}}})
    log.info("node %s: capacity %s withdrawn", node, RESOURCE)
    return True
