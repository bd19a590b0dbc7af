"""The sandbox manager: CreateVM/StartVM/StopVM semantics, persistence, and reconciliation.

Every step that creates something in the cloud is written to the state store first, and every
instance carries the owner and sandbox tags, so after a crash at any point `reconcile` can tell
which instances belong to live pods and delete the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from adaptor import podnetwork
from adaptor.annotations import (
    INIT_DATA,
    AnnotationError,
    check_sandbox_id,
    instance_name,
    instance_spec,
    pod_info,
)
from adaptor.config import AdaptorConfig
from adaptor.k8s.link import ClusterLink
from adaptor.logcontext import about_sandbox
from adaptor.state import SandboxRecord, SandboxState, StateStore
from adaptor.tunnel.authority import TunnelAuthority
from adaptor.tunnel.hooks import worker_interceptors
from adaptor.tunnel.proxy import SOCKET_NAME, AgentProxy
from adaptor.userdata import build_user_data, initdata_for
from protocols.cloudconfig import CloudConfigError
from protocols.initdata import InitDataError
from protocols.podnet.config import PodNetwork
from protocols.podnet.netlink import NetnsError
from protocols.podnet.notrack import IptablesError
from protocols.ttrpc.status import Code, TtrpcError
from providers.base import (
    CapacityError,
    CreateRequest,
    Instance,
    InstanceNotFound,
    InvalidRequestError,
    Provider,
    ProviderError,
    delete_as_recorded,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CLEANUP_TIMEOUT_S = 600.0
STRAY_RETRY_S = (5.0, 300.0)  # first and longest wait between deletes of a stray the cloud refused
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


@dataclass
class _SandboxLock:
    """A sandbox's lock and how many calls hold or await it: the entry goes when the last one leaves."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SandboxManager:
    def __init__(
        self,
        config: AdaptorConfig,
        provider: Provider,
        store: StateStore,
        authority: TunnelAuthority,
        cluster: ClusterLink | None = None,
    ) -> None:
        self.config = config
        self.cluster = cluster  # Kubernetes: PeerPods and pull secrets (adaptor.k8s)
        self.provider = provider
        self.store = store
        self.authority = authority
        self.proxies: dict[str, AgentProxy] = {}
        self._locks: dict[str, _SandboxLock] = {}
        self._changed = asyncio.Condition()
        self._allocating = asyncio.Lock()  # VNIs: from choosing one until the record holds it
        self._tls = authority.client_context(config.tls_min_version, config.tls_cipher_suites)
        self._stray_retries: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _locked(self, sandbox_id: str) -> AsyncIterator[None]:
        """Serialise calls on one sandbox; only sandboxes with a call in progress have an entry."""
        entry = self._locks.setdefault(sandbox_id, _SandboxLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[sandbox_id]

    def _user_data(
        self,
        name: str,
        pod_name: str,
        annotations: Mapping[str, str],
        pod_network: Mapping[str, Any],
        auth_json: str | None = None,
    ) -> bytes:
        server = self.authority.issue_server(name)
        initdata = initdata_for(self.config, annotations.get(INIT_DATA, ""))
        config = self.config if auth_json is None else replace(self.config, auth_json=auth_json)
        return build_user_data(config, self.authority, server, pod_name, initdata, pod_network)

    async def _inspect_pod_network(self, sandbox_id: str, netns: str) -> dict[str, Any]:
        """apf.json's pod-network for the pod's namespace, with the lowest VNI no sandbox holds
        (the caller holds `_allocating` until the record is stored)."""
        if not netns:
            return {}
        settings = self.config.pod_network
        taken = {record.pod_network.get("vxlan-id") for record in self.store.all() if record.id != sandbox_id}
        index = next(i for i in range(len(taken) + 1) if settings.vxlan_min_id + i not in taken)
        try:
            network = await asyncio.to_thread(podnetwork.inspect, netns, settings, index)
        except (NetnsError, NetlinkError) as exc:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"failed to inspect netns {netns}: {exc}") from None
        return network.to_document()

    # CreateVM

    async def create_vm(self, sandbox_id: str, annotations: dict[str, str], netns: str) -> str:
        """Record the sandbox and return its agent socket path; nothing is created in the cloud yet."""
        _check_id(sandbox_id)
        async with self._locked(sandbox_id), self._allocating:
            return await self._create(sandbox_id, annotations, netns)

    async def _create(self, sandbox_id: str, annotations: dict[str, str], netns: str) -> str:
        existing = self.store.get(sandbox_id)
        if existing is not None:
            return existing.socket_path
        try:
            pod = pod_info(annotations)
            name = instance_name(pod.name, sandbox_id)
        except AnnotationError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        pod_network = await self._inspect_pod_network(sandbox_id, netns)
        try:
            # Built now only to be checked against the pod VM's limits; StartVM builds its own.
            self._user_data(name, pod.name, annotations, pod_network)
        except (InitDataError, CloudConfigError) as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        directory = self.config.pods_dir / sandbox_id
        if len(str(directory / SOCKET_NAME)) > MAX_SOCKET_PATH:
            raise TtrpcError(
                Code.INVALID_ARGUMENT, f"agent socket path under {directory} is too long for a unix socket"
            )
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        record = SandboxRecord(
            id=sandbox_id,
            pod_name=pod.name,
            pod_namespace=pod.namespace,
            instance_name=name,
            socket_path=str(directory / SOCKET_NAME),
            netns=netns,
            pod_network=pod_network,
            annotations=dict(annotations),
        )
        self.store.put(record)
        log.info("sandbox %s created for pod %s/%s", sandbox_id, pod.namespace, pod.name)
        return record.socket_path

    # StartVM

    async def start_vm(self, sandbox_id: str, deadline_s: float | None) -> None:
        """Create the instance and bring the tunnel up; on any failure leave nothing behind."""
        _check_id(sandbox_id)
        async with self._locked(sandbox_id):
            record = self._require(sandbox_id)
            if record.state == SandboxState.RUNNING and sandbox_id in self.proxies:
                return
            if record.state not in (SandboxState.CREATED, SandboxState.FAILED):
                raise TtrpcError(Code.FAILED_PRECONDITION, f"sandbox {sandbox_id} is {record.state}")
            record = self.store.put(record.evolve(state=SandboxState.STARTING, error=""))
            try:
                await self._start(record, deadline_s)
            except BaseException as exc:
                reason = _describe(exc)
                log.error("StartVM %s failed: %s", sandbox_id, reason)
                await _shielded(self._abort_start(sandbox_id, reason))
                if isinstance(exc, (ProviderError, TimeoutError)):
                    raise TtrpcError(_code_for(exc), f"creating an instance: {reason}") from None
                raise

    async def _start(self, record: SandboxRecord, deadline_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        auth_json = await self.cluster.auth_json(record, self.config.auth_json) if self.cluster else None
        user_data = self._user_data(
            record.instance_name, record.pod_name, record.annotations, record.pod_network, auth_json
        )
        scratch_gib = self.config.scratch_space_gib if self.config.enable_scratch_space else 0
        request = CreateRequest(
            record.instance_name,
            record.id,
            user_data,
            instance_spec(record.annotations),
            scratch_space_gib=scratch_gib,
        )
        create = asyncio.ensure_future(self.provider.create_instance(request))
        try:
            async with asyncio.timeout(deadline_s):
                instance = await asyncio.shield(create)
        except BaseException:
            # The cloud call may still be running (SDK calls run in threads and cannot be
            # interrupted): let it finish, so the cleanup that follows sees what it made.
            with contextlib.suppress(Exception):
                await _shielded(create)
            raise
        if not instance.ips:
            raise ProviderError(f"instance {instance.id} has no IP address")
        record = self.store.put(
            record.evolve(
                instance_id=instance.id,
                delete_info=dict(instance.delete_info),
                ips=tuple(str(ip) for ip in instance.ips),
                forwarder_port=instance.forwarder_port,
            )
        )
        await self._notify()
        log.info("sandbox %s: instance %s at %s", record.id, instance.id, record.ips[0])
        if self.cluster:
            await self.cluster.instance_created(record)
        await self._setup_pod_network(record)
        proxy = self._proxy(record)
        self.proxies[record.id] = proxy
        await proxy.start()
        remaining = None if deadline_s is None else max(0.0, deadline_s - (loop.time() - started))
        async with asyncio.timeout(remaining):
            await proxy.connect()
        self.store.put(record.evolve(state=SandboxState.RUNNING))

    def _proxy(self, record: SandboxRecord, resumed: bool = False) -> AgentProxy:
        return AgentProxy(
            Path(record.socket_path),
            record.ips[0],
            record.forwarder_port or self.config.forwarder_port,
            self.authority.server_name(record.instance_name),
            self._tls,
            self.config.proxy_timeout_s,
            worker_interceptors(record.id, instance_spec(record.annotations).gpus),
            resumed=resumed,
        )

    async def _notify(self) -> None:
        """Wake GetInfo waiters: an instance was recorded, or a sandbox will never get one."""
        async with self._changed:
            self._changed.notify_all()

    async def _setup_pod_network(self, record: SandboxRecord) -> None:
        """Splice the pod's namespace to a VXLAN tunnel towards the instance (before the agent
        tunnel, as upstream: the forwarder listens only once its end is up)."""
        if not record.pod_network:
            return
        network = PodNetwork.from_document(record.pod_network)
        try:
            peer = podnetwork.tunnel_peer(network, record.ips)
            await asyncio.to_thread(podnetwork.setup, record.netns, network, peer)
        except (NetnsError, IptablesError, NetlinkError) as exc:
            raise TtrpcError(
                Code.INTERNAL, f"setting up pod network tunnel on netns {record.netns}: {exc}"
            ) from None
        log.info("sandbox %s: pod network %s up (VNI %d)", record.id, network.pod_ip, network.vxlan_id)

    async def _teardown_pod_network(self, record: SandboxRecord) -> None:
        """Undo `_setup_pod_network`; errors are logged, as upstream: the sandbox goes anyway."""
        if not record.pod_network:
            return
        network = PodNetwork.from_document(record.pod_network)
        peer = None
        with contextlib.suppress(NetnsError):
            peer = podnetwork.tunnel_peer(network, record.ips) if record.ips else None
        try:
            await asyncio.to_thread(podnetwork.teardown, record.netns, network, peer)
        except (NetnsError, IptablesError, NetlinkError) as exc:
            log.error("sandbox %s: tearing down netns %s: %s", record.id, record.netns, exc)

    async def _abort_start(self, sandbox_id: str, reason: str) -> None:
        proxy = self.proxies.pop(sandbox_id, None)
        if proxy is not None:
            await proxy.close()
        record = self._require(sandbox_id)
        await self._teardown_pod_network(record)
        try:
            await self._delete_instances(record, {})
        except ProviderError as exc:
            self.store.put(record.evolve(state=SandboxState.STOPPING, error=f"{reason}; cleanup: {exc}"))
        else:
            self.store.put(
                record.evolve(state=SandboxState.FAILED, instance_id="", delete_info={}, ips=(), error=reason)
            )
        await self._notify()

    async def _delete_instances(self, record: SandboxRecord, delete_info: Mapping[str, str]) -> None:
        """Delete the sandbox's instance, or, if none is recorded, any that a crash left tagged with it.

        A recorded instance is the only one: each start creates one, and what an earlier start left
        behind was deleted by its abort or by reconciliation. Listing every owned instance on each
        StopVM would make deleting N pods cost N full listings.

        `delete_info` (StopVM passes the record's) lets the provider delete with one call, without
        waiting for the cloud to finish. An aborted start passes none: its sandbox may be started
        again under the same instance name, which must not meet the instance still going away.
        """
        if record.instance_id:
            ids = {record.instance_id}
        else:
            ids = {i.id for i in await _retrying(self.provider.list_instances) if i.sandbox_id == record.id}
        for instance_id in ids:
            with contextlib.suppress(InstanceNotFound):
                await delete_as_recorded(self.provider, instance_id, delete_info)
            log.info("sandbox %s: instance %s deleted", record.id, instance_id)
        if ids and self.cluster:
            await self.cluster.instance_deleted(record)

    # StopVM

    async def stop_vm(self, sandbox_id: str) -> None:
        """Idempotent: an unknown or already stopped sandbox is fine."""
        _check_id(sandbox_id)
        async with self._locked(sandbox_id):
            record = self.store.get(sandbox_id)
            if record is None:
                return
            proxy = self.proxies.pop(sandbox_id, None)
            if proxy is not None:
                await proxy.close()
            record = self.store.put(record.evolve(state=SandboxState.STOPPING))
            try:
                await _shielded(self._delete_instances(record, record.delete_info))
            except ProviderError as exc:
                raise TtrpcError(Code.UNAVAILABLE, f"deleting instance of {sandbox_id}: {exc}") from None
            await _shielded(self._teardown_pod_network(record))
            self.store.delete(sandbox_id)
            shutil.rmtree(Path(record.socket_path).parent, ignore_errors=True)
            log.info("sandbox %s stopped", sandbox_id)
        await self._notify()

    # PodVMInfo

    async def instance_of(self, pod_name: str, pod_namespace: str, wait: bool) -> str:
        """The pod's instance id; with `wait`, once StartVM has one, for at most PROXY_TIMEOUT."""

        def find() -> SandboxRecord | None:
            for record in self.store.all():
                if (record.pod_name, record.pod_namespace) == (pod_name, pod_namespace):
                    return record
            return None

        def pending(record: SandboxRecord | None) -> bool:
            starting = (SandboxState.CREATED, SandboxState.STARTING)
            return record is not None and not record.instance_id and record.state in starting

        async with self._changed:
            record = find()
            try:
                async with asyncio.timeout(self.config.proxy_timeout_s):
                    while wait and pending(record):
                        await self._changed.wait()
                        record = find()
            except TimeoutError:
                raise TtrpcError(
                    Code.DEADLINE_EXCEEDED,
                    f"pod {pod_namespace}/{pod_name} has no instance after "
                    f"{self.config.proxy_timeout_s:g}s (PROXY_TIMEOUT)",
                ) from None
        if record is None:
            raise TtrpcError(Code.NOT_FOUND, f"no sandbox for pod {pod_namespace}/{pod_name}")
        if not record.instance_id:
            raise TtrpcError(Code.NOT_FOUND, f"pod {pod_namespace}/{pod_name} has no instance yet")
        return record.instance_id

    # start-up and shutdown

    async def reconcile(self) -> None:
        """Make the cloud match the records: resume live pods, delete strays, report lost ones."""
        records = {record.id: record for record in self.store.all()}
        instances = await _retrying(self.provider.list_instances)
        seen: set[str] = set()
        strays = []
        for instance in instances:
            record = records.get(instance.sandbox_id)
            if (
                record is not None
                and record.state == SandboxState.RUNNING
                and instance.id == record.instance_id
            ):
                seen.add(record.id)
            else:
                strays.append(instance)
        # Concurrently: after a crash there can be dozens; the provider's rate limiter paces the calls.
        await asyncio.gather(*(self._delete_stray(instance) for instance in strays))
        for record in records.values():
            if record.state == SandboxState.RUNNING and record.id not in seen:
                log.error("sandbox %s: instance %s vanished; marking it lost", record.id, record.instance_id)
                self.store.put(record.evolve(state=SandboxState.LOST, error="instance vanished"))
            elif record.state == SandboxState.RUNNING:
                with about_sandbox(record.id, record):  # the proxy's own tasks inherit the fields
                    proxy = self._proxy(record, resumed=True)
                    await proxy.start()
                    self.proxies[record.id] = proxy
                    log.info("sandbox %s resumed on %s", record.id, record.socket_path)
            elif record.state == SandboxState.STOPPING:
                await self._teardown_pod_network(record)
                self.store.delete(record.id)
                shutil.rmtree(Path(record.socket_path).parent, ignore_errors=True)
            elif record.state == SandboxState.STARTING:
                await self._teardown_pod_network(record)
                self.store.put(
                    record.evolve(
                        state=SandboxState.FAILED,
                        instance_id="",
                        delete_info={},
                        ips=(),
                        error="adaptor restarted mid-operation",
                    )
                )

    async def _delete_stray(self, instance: Instance) -> None:
        """A stray the cloud refuses to delete must not keep the adaptor (and its live pods) from
        starting: it is retried in the background until it goes."""
        log.warning("deleting stray instance %s (sandbox %r)", instance.id, instance.sandbox_id or "?")
        try:
            with contextlib.suppress(InstanceNotFound):
                await self.provider.delete_instance(instance.id)
        except ProviderError as exc:
            log.error("stray instance %s not deleted (%s); retrying in the background", instance.id, exc)
            task = asyncio.create_task(self._keep_deleting_stray(instance.id))
            self._stray_retries.add(task)
            task.add_done_callback(self._stray_retries.discard)

    async def _keep_deleting_stray(self, instance_id: str) -> None:
        wait_s, longest_s = STRAY_RETRY_S
        while True:
            await asyncio.sleep(wait_s)
            try:
                with contextlib.suppress(InstanceNotFound):
                    await self.provider.delete_instance(instance_id)
            except ProviderError as exc:
                wait_s = min(wait_s * 2, longest_s)
                log.error("stray %s still not deleted (%s); next try in %.0f s", instance_id, exc, wait_s)
                continue
            log.info("stray instance %s deleted", instance_id)
            return

    async def close(self) -> None:
        """Stop serving; pod VMs keep running and are resumed by the next start (which also takes
        up the deletes of strays still pending here)."""
        for task in list(self._stray_retries):
            task.cancel()
        for proxy in self.proxies.values():
            await proxy.close()
        self.proxies.clear()

    def _require(self, sandbox_id: str) -> SandboxRecord:
        record = self.store.get(sandbox_id)
        if record is None:
            raise TtrpcError(Code.NOT_FOUND, f"sandbox {sandbox_id} not found")
        return record


async def _shielded(work: Awaitable[T]) -> T:
    """Finish cleanup even when the caller is cancelled, however often: a half-done delete or an
    unawaited create leaks a VM. A cancellation is re-raised once the work is done."""
    task = asyncio.ensure_future(asyncio.wait_for(work, CLEANUP_TIMEOUT_S))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


async def _retrying(call: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    for attempt in range(attempts):
        try:
            return await call()
        except ProviderError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _check_id(sandbox_id: str) -> None:
    """Refused before the id can reach a path or a log line."""
    try:
        check_sandbox_id(sandbox_id)
    except AnnotationError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None


def _code_for(exc: Exception) -> Code:
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED
    if isinstance(exc, InvalidRequestError):
        return Code.INVALID_ARGUMENT
    if isinstance(exc, CapacityError):
        return Code.RESOURCE_EXHAUSTED
    return Code.UNKNOWN


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TtrpcError):
        return exc.message
    if isinstance(exc, (TimeoutError, asyncio.CancelledError)):
        return "deadline exceeded"
    return str(exc) or type(exc).__name__
