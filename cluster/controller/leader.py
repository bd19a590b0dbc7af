"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

The Lease is upstream's (`33f6c5d6.confidentialcontainers.org` in the controller's namespace), so
upstream's peerpod-ctrl and this controller never act at the same time either. A candidate takes
the Lease when it is free or its holder has not renewed it for `leaseDurationSeconds`, and renews it
every `renew_s`; every write carries the resourceVersion it read, so two candidates cannot both win.
A leader that fails to renew before its lease would expire stops leading (the caller exits).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass

import aiohttp

from cluster.kubeapi import ApiError, Json, KubeClient, KubeConfigError, path_segment

log = logging.getLogger(__name__)

LEASE_NAME = "33f6c5d6.confidentialcontainers.org"
CALL_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError, KubeConfigError)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class LeaderElector:
    client: KubeClient
    namespace: str
    identity: str
    name: str = LEASE_NAME
    lease_s: float = 15.0
    renew_s: float = 10.0
    retry_s: float = 2.0

    @property
    def path(self) -> str:
        namespace = path_segment(self.namespace)
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{path_segment(self.name)}"

    async def acquire(self) -> None:
        """Return once this candidate holds the Lease."""
        while True:
            try:
                if await self._try():
                    log.info(
                        "leader election: %s now leads (%s/%s)", self.identity, self.namespace, self.name
                    )
                    return
            except CALL_ERRORS as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.retry_s)

    async def hold(self) -> None:
        """Renew until a renewal cannot be made before the lease expires; then return."""
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                if not await self._try():
                    log.error("leader election: %s lost the lease to another candidate", self.identity)
                    return
                last = asyncio.get_running_loop().time()
            except CALL_ERRORS as exc:
                log.warning("leader election: renewal failed: %s", exc)
                if asyncio.get_running_loop().time() - last > self.lease_s - self.retry_s:
                    log.error("leader election: %s could not renew in time", self.identity)
                    return

    async def release(self) -> None:
        """Give the Lease up (holder cleared), so a successor need not wait for it to expire."""
        try:
            lease = await self.client.get(self.path)
            if lease.get("spec", {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                await self.client.request("PUT", self.path, lease)
        except CALL_ERRORS as exc:
            log.warning("leader election: release failed: %s", exc)

    async def _try(self) -> bool:
        now = _now()
        try:
            lease = await self.client.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            return await self._create(now)
        spec: Json = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity:
            renewed = spec.get("renewTime") or spec.get("acquireTime")
            duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
            if renewed and _parse(renewed) + datetime.timedelta(seconds=duration) > now:
                return False
        if holder != self.identity:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=self.identity, leaseDurationSeconds=int(self.lease_s), renewTime=_micro_time(now)
        )
        try:
            await self.client.request("PUT", self.path, lease)  # carries the resourceVersion read
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def _create(self, now: datetime.datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_s),
                     "acquireTime": _micro_time(now), "renewTime": _micro_time(now), "leaseTransitions": 0},
        }  # fmt: skip
        try:
            await self.client.create(self.path.rsplit("/", 1)[0], body)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True
