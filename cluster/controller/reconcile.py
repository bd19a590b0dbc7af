"""The PeerPod controller: delete the cloud instances nobody else will, as upstream's peerpod-ctrl.

A list-then-watch over all PeerPods feeds a de-duplicating work queue; workers reconcile one PeerPod
at a time each:

- being deleted with our finalizer still set (its pod is gone, the adaptor did not release it: node
  lost, adaptor deleted): delete `spec.instanceID` with `spec.cloudProvider`'s provider (gone already
  counts as deleted), then drop the finalizer, so the PeerPod goes;
- otherwise: an older PeerPod of the same pod (owner UID) is a leftover of an earlier start (upstream
  issue #1517): delete it, its finalizer then gets its instance deleted.

A failed reconcile is retried with capped exponential backoff; the cloud calls themselves are
rate-limited and retried by the provider's CloudCaller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import aiohttp

from cluster import peerpod
from cluster.controller.clouds import Clouds
from cluster.kubeapi import ApiError, Json, KubeClient, KubeConfigError
from providers.base import InstanceNotFound, ProviderError

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 60.0
WATCH_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError, KubeConfigError, ValueError)


@dataclass
class WorkQueue:
    """Each key at most once in the queue; a key being worked on and changed again is queued again."""

    queue: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    queued: set[Key] = field(default_factory=set)

    def add(self, key: Key) -> None:
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    async def get(self) -> Key:
        key = await self.queue.get()
        self.queued.discard(key)
        return key


class PeerPodController:
    def __init__(self, client: KubeClient, clouds: Clouds, workers: int = 32) -> None:
        self.client = client
        self.clouds = clouds
        self.workers = workers
        self.cache: dict[Key, Json] = {}
        self.work = WorkQueue()
        self._failures: dict[Key, int] = {}
        self.synced = asyncio.Event()
        self.deleted_instances = 0

    async def run(self) -> None:
        """Until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._informer())
            for _ in range(self.workers):
                tasks.create_task(self._worker())

    # Informer: list, then watch from the list's version; relist when the version is too old.

    async def _informer(self) -> None:
        while True:
            try:
                version = await self._list()
                self.synced.set()
                while True:
                    version = await self._watch(version)
            except _Relist:
                continue
            except WATCH_ERRORS as exc:
                log.warning("PeerPod watch failed, listing again: %s", exc)
                await asyncio.sleep(1.0)

    async def _list(self) -> str:
        listing = await self.client.list(peerpod.collection())
        seen = {}
        for obj in listing.get("items") or []:
            seen[_key(obj)] = obj
        for key in self.cache.keys() - seen.keys():
            del self.cache[key]
        self.cache.update(seen)
        for key in seen:
            self.work.add(key)
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        async for event in self.client.watch(peerpod.collection(), version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise _Relist
            version = str(obj.get("metadata", {}).get("resourceVersion", version))
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            if kind == "DELETED":
                self.cache.pop(key, None)
                self._failures.pop(key, None)
                continue
            self.cache[key] = obj
            self.work.add(key)
        return version

    # Workers

    async def _worker(self) -> None:
        while True:
            key = await self.work.get()
            try:
                await self.reconcile(key)
            except Exception as exc:  # one PeerPod's failure, whatever it is, must not stop the others
                if not isinstance(exc, (ProviderError, *WATCH_ERRORS)):
                    log.exception("PeerPod %s/%s: unexpected error", *key)
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
                log.warning("PeerPod %s/%s: %s; retrying in %.1f s", *key, exc, delay)
                asyncio.get_running_loop().call_later(delay, self.work.add, key)
            else:
                self._failures.pop(key, None)

    async def reconcile(self, key: Key) -> None:
        obj = self.cache.get(key)
        if obj is None:
            return
        metadata = obj.get("metadata", {})
        if metadata.get("deletionTimestamp"):
            if peerpod.has_finalizer(obj):
                await self._delete_instance(key, obj)
            return
        await self._delete_older_duplicates(key, obj)

    async def _delete_instance(self, key: Key, obj: Json) -> None:
        spec = obj.get("spec") or {}
        instance_id, provider_name = str(spec.get("instanceID", "")), str(spec.get("cloudProvider", ""))
        if instance_id:
            provider = await self.clouds.provider(provider_name)
            with contextlib.suppress(InstanceNotFound):
                await provider.delete_instance(instance_id)
            self.deleted_instances += 1
            log.info("PeerPod %s/%s: %s instance %s deleted", *key, provider_name, instance_id)
        await peerpod.remove_finalizer(self.client, *key)

    async def _delete_older_duplicates(self, key: Key, obj: Json) -> None:
        owner = peerpod.owner_uid(obj)
        if not owner:
            return
        created = str(obj["metadata"].get("creationTimestamp", ""))
        for other_key, other in list(self.cache.items()):
            other_meta = other.get("metadata", {})
            if (
                other_key != key
                and other_key[0] == key[0]
                and peerpod.owner_uid(other) == owner
                and not other_meta.get("deletionTimestamp")
                and str(other_meta.get("creationTimestamp", "")) < created
            ):
                try:
                    await self.client.delete(peerpod.item(*other_key))
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                log.info("PeerPod %s/%s: older duplicate %s of the same pod deleted", *key, other_key[1])


class _Relist(Exception):
    """The watch's resource version expired (410 Gone)."""


def _key(obj: Json) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))
