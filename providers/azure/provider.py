"""The Azure provider: a confidential VM per pod sandbox, with its NIC, OS disk and optional public IP.

Create: public IP `<name>-ip` (if USE_PUBLIC_IP), NIC `<name>-net`, then the VM whose OS disk
`<name>-disk` is made from the image; all three are marked `deleteOption: Delete`, so deleting the VM
deletes them. A create that fails halfway deletes what it made, by name, before the error is returned,
and a capacity failure moves on to the next allowed size. Create is safe to retry after a crash: a VM
of that name carrying the request's sandbox tag is returned (or waited for, or cleaned up if Failed).

Delete: StopVM deletes the VM alone (`delete_recorded`, one call) and ARM takes the NIC and the disk
with it; a public IP is deleted by name after the VM. `delete_instance` (an id and nothing else:
reconciliation, records from before `delete_info`) also deletes any of the three left by name.

Tags: OWNER_TAG and SANDBOX_TAG are Azure tags of the same names (Azure allows dots in tag names).
The instance id is the VM's full ARM resource id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.polling import LROPoller
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.network.models import NetworkInterface, PublicIPAddress

from providers.azure.bodies import (
    disk_name,
    encode_user_data,
    instance_tags,
    nic_body,
    nic_name,
    public_ip_body,
    public_ip_name,
    vm_body,
)
from providers.azure.clients import build_clients, build_credential
from providers.azure.config import AzureConfig
from providers.azure.errors import classify, retry_after
from providers.azure.ids import parse_resource_id, vm_name_from_id
from providers.azure.sshkey import throwaway_public_key
from providers.base import (
    OWNER_TAG,
    SANDBOX_TAG,
    CapacityError,
    CreateRequest,
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InvalidRequestError,
    IPAddress,
    ProviderError,
)
from providers.instance_types import InstanceTypeSpec, fallback_types, select_instance_type
from providers.retry import CloudCaller, ErrorKind, RateLimiter, RetryPolicy
from providers.settings import ConfigError

_log = logging.getLogger(__name__)

T = TypeVar("T")

_IN_PROGRESS = frozenset({"Creating", "Updating", "Deleting", "Migrating"})
# How long a VM found mid-provisioning (after an adaptor crash) is waited for.
_SETTLE_DEADLINE_S = 30 * 60.0
_DEFAULT_POLICY = RetryPolicy()


def _raise(exc: BaseException) -> NoReturn:
    raise exc


async def _until_done(poller: LROPoller[Any]) -> None:
    """Wait for azure-core's polling thread to finish, without holding one of our worker threads."""
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def notify(_method: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone by the time a late poll ends
            loop.call_soon_threadsafe(finished.set)

    poller.add_done_callback(notify)
    while not poller.done():
        # The callback can be missed if the poller finishes while it is being added: re-check now and then.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=1.0)


class AzureProvider:
    name = "azure"

    def __init__(
        self,
        config: AzureConfig,
        owner: str,
        limiter: RateLimiter,
        *,
        credential: TokenCredential | None = None,
        poll_interval_s: float = 2.0,
        retry_policy: RetryPolicy = _DEFAULT_POLICY,
    ) -> None:
        self._config = config
        self._owner = owner
        self._credential = credential if credential is not None else build_credential(config)
        self._compute, self._network = build_clients(config, self._credential, poll_interval_s)
        self._caller = CloudCaller(classify, limiter, retry_policy, retry_after, provider="azure")
        self._policy = retry_policy
        self._poll_interval_s = poll_interval_s
        self._sizes: dict[str, InstanceTypeSpec] | None = None
        self._sizes_lock = asyncio.Lock()
        self._ssh_key = config.ssh_public_key
        self._ssh_key_lock = asyncio.Lock()

    # -- long-running operations ----------------------------------------------------------------------

    async def _lro(self, begin: Callable[..., LROPoller[T]], *args: Any) -> T:
        """Start a long-running operation through CloudCaller and wait for its end.

        azure-core polls in a thread of its own, without retries (see clients.py); when a poll is
        throttled or fails transiently, polling resumes from the operation's continuation token rather
        than sending the PUT/DELETE again. The operation's own failure (e.g. AllocationFailed) is mapped
        to our errors by CloudCaller like any other.
        """
        poller = await self._caller.call(begin, *args)
        for _ in range(self._policy.attempts):
            await _until_done(poller)
            try:
                return poller.result()
            except AzureError as exc:
                token = exc.continuation_token
                if classify(exc) not in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT) or not token:
                    # Not retryable: let CloudCaller turn it into our error type with ARM's message.
                    return await self._caller.call(_raise, exc)
                _log.warning("polling %s failed, resuming: %s", getattr(begin, "__name__", "operation"), exc)
                await asyncio.sleep(retry_after(exc) or self._poll_interval_s)
                poller = await self._caller.call(begin, *args, continuation_token=token)
        raise ProviderError(
            f"gave up polling a long-running operation after {self._policy.attempts} attempts"
        )

    # -- reads ----------------------------------------------------------------------------------------

    async def _get_vm(self, name: str) -> VirtualMachine | None:
        try:
            return await self._caller.call(
                self._compute.virtual_machines.get, self._config.resource_group, name
            )
        except InstanceNotFound:
            return None

    async def _size_specs(self) -> dict[str, InstanceTypeSpec]:
        """The region's VM sizes (cores, memory), listed once: upstream resolves them at start-up too."""
        async with self._sizes_lock:
            if self._sizes is None:

                def list_sizes() -> list[Any]:
                    return list(self._compute.virtual_machine_sizes.list(self._config.region))

                listed = await self._caller.call(list_sizes)
                self._sizes = {
                    str(s.name).lower(): InstanceTypeSpec(
                        str(s.name), int(s.number_of_cores), int(s.memory_in_mb)
                    )
                    for s in listed
                    if s.name and s.number_of_cores and s.memory_in_mb
                }
            return self._sizes

    async def validate(self) -> None:
        """The credentials get a token, and the default and allowed sizes are offered in the region."""
        try:
            await asyncio.to_thread(self._credential.get_token, self._config.credential_scope)
        except AzureError as exc:
            raise ConfigError(
                [
                    "Azure credentials: no token (set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                    "AZURE_CLIENT_SECRET, or use workload identity or a managed identity): "
                    + " ".join(str(exc).split())
                ]
            ) from None
        specs = await self._size_specs()
        sizes = dict.fromkeys([*self._config.instance_sizes, self._config.instance_size])
        missing = [size for size in sizes if size.lower() not in specs]
        if missing:
            raise ConfigError(
                [
                    f"AZURE_INSTANCE_SIZE / AZURE_INSTANCE_SIZES: {missing} are not VM sizes offered in "
                    f"region {self._config.region}"
                ]
            )

    async def _candidate_sizes(self, spec: InstanceSpec) -> list[str]:
        specs = await self._size_specs()
        missing = [size for size in self._config.instance_sizes if size.lower() not in specs]
        if missing:
            raise InvalidRequestError(
                f"AZURE_INSTANCE_SIZES {missing} are not VM sizes offered in region {self._config.region}"
            )
        allowed = [specs[size.lower()] for size in self._config.instance_sizes]
        default = self._config.instance_size
        selected = select_instance_type(spec, default, allowed, default_spec=specs.get(default.lower()))
        return fallback_types(selected, spec, allowed)

    async def _public_key(self) -> str:
        async with self._ssh_key_lock:
            if not self._ssh_key:
                self._ssh_key = await asyncio.to_thread(throwaway_public_key)
            return self._ssh_key

    async def _instance(self, vm: VirtualMachine, sandbox_id: str) -> Instance:
        """The VM with its IPs, read from its NICs: public addresses first when USE_PUBLIC_IP."""
        private: list[IPAddress] = []
        public: list[IPAddress] = []
        refs = (
            vm.properties.network_profile.network_interfaces
            if vm.properties and vm.properties.network_profile
            else None
        )
        for ref in refs or []:
            nic_id = parse_resource_id(ref.id or "")
            if nic_id is None:
                continue
            nic = await self._caller.call(
                self._network.network_interfaces.get, nic_id.resource_group, nic_id.name
            )
            for config in (nic.properties.ip_configurations if nic.properties else None) or []:
                props = config.properties
                if props is None:
                    continue
                if props.private_ip_address:
                    private.append(ipaddress.ip_address(props.private_ip_address))
                pip_id = (
                    parse_resource_id(props.public_ip_address.id or "") if props.public_ip_address else None
                )
                if pip_id is not None and self._config.use_public_ip:
                    pip = await self._caller.call(
                        self._network.public_ip_addresses.get, pip_id.resource_group, pip_id.name
                    )
                    if pip.properties and pip.properties.ip_address:
                        public.append(ipaddress.ip_address(pip.properties.ip_address))
        if not private and not public:
            raise ProviderError(f"VM {vm.name!r} has no IP address on its network interfaces")
        return Instance(id=str(vm.id), name=str(vm.name), ips=(*public, *private), sandbox_id=sandbox_id)

    # -- create ---------------------------------------------------------------------------------------

    async def create_instance(self, request: CreateRequest) -> Instance:
        user_data = encode_user_data(request.user_data)
        image = request.spec.image or self._config.image_id
        existing = await self._existing(request)
        if existing is not None:
            return existing
        sizes = await self._candidate_sizes(request.spec)
        tags = instance_tags(self._config.tags, request.tags, self._owner, request.sandbox_id)
        failure: CapacityError | None = None
        for size in sizes:
            try:
                return await self._create_once(request, size, image, user_data, tags)
            except CapacityError as exc:
                _log.warning("VM %s: no capacity for size %s: %s", request.name, size, exc)
                failure = exc
        raise CapacityError(f"no capacity for VM sizes {', '.join(sizes)}; last error: {failure}")

    async def _existing(self, request: CreateRequest) -> Instance | None:
        """The VM a crashed earlier attempt created for this sandbox, once settled; None to create anew."""
        vm = await self._get_vm(request.name)
        if vm is None:
            return None
        tags = vm.tags or {}
        if tags.get(SANDBOX_TAG) != request.sandbox_id or tags.get(OWNER_TAG) != self._owner:
            raise InvalidRequestError(
                f"a VM named {request.name!r} already exists and is not the VM of sandbox "
                f"{request.sandbox_id!r} created by this adaptor"
            )
        deadline = time.monotonic() + _SETTLE_DEADLINE_S
        while vm is not None and vm.properties and vm.properties.provisioning_state in _IN_PROGRESS:
            if time.monotonic() > deadline:
                raise ProviderError(f"VM {request.name!r} stayed {vm.properties.provisioning_state} too long")
            await asyncio.sleep(self._poll_interval_s)
            vm = await self._get_vm(request.name)
        if vm is not None and vm.properties and vm.properties.provisioning_state == "Succeeded":
            _log.info("VM %s already exists for sandbox %s: reusing it", request.name, request.sandbox_id)
            return await self._instance(vm, request.sandbox_id)
        await self._delete_everything(request.name)  # Failed, or gone meanwhile: start over
        return None

    async def _create_once(
        self, request: CreateRequest, size: str, image: str, user_data: str, tags: dict[str, str]
    ) -> Instance:
        rg, name, config = self._config.resource_group, request.name, self._config
        try:
            public_ip_id = None
            if config.use_public_ip:
                pip = await self._lro(
                    self._network.public_ip_addresses.begin_create_or_update,
                    rg,
                    public_ip_name(name),
                    PublicIPAddress(public_ip_body(config, tags)),
                )
                public_ip_id = pip.id
            nic = await self._lro(
                self._network.network_interfaces.begin_create_or_update,
                rg,
                nic_name(name),
                NetworkInterface(nic_body(config, tags, public_ip_id)),
            )
            body = VirtualMachine(
                vm_body(
                    config,
                    vm_name=name,
                    size=size,
                    image=image,
                    nic_id=str(nic.id),
                    ssh_public_key=await self._public_key(),
                    user_data_b64=user_data,
                    tags=tags,
                    scratch_gib=request.scratch_space_gib,
                )
            )
            vm = await self._lro(self._compute.virtual_machines.begin_create_or_update, rg, name, body)
            instance = await self._instance(vm, request.sandbox_id)
            return replace(instance, delete_info={"public_ip": "yes" if config.use_public_ip else "no"})
        except BaseException:
            await self._cleanup_after_failure(name)
            raise

    # -- delete ---------------------------------------------------------------------------------------

    async def _delete_everything(self, name: str) -> bool:
        """Delete the VM (cascading to its NIC, disk and public IP), then any of those left by name.

        Leftovers exist when a create failed before the VM took them over. Order matters on Azure: a
        NIC in use by a VM, or a public IP in use by a NIC, cannot be deleted. Returns whether the VM
        existed.
        """
        rg = self._config.resource_group
        existed = await self._get_vm(name) is not None
        if existed:
            await self._lro(self._compute.virtual_machines.begin_delete, rg, name)
        await self._lro(self._network.network_interfaces.begin_delete, rg, nic_name(name))
        await self._lro(self._network.public_ip_addresses.begin_delete, rg, public_ip_name(name))
        await self._lro(self._compute.disks.begin_delete, rg, disk_name(name))
        return existed

    async def _cleanup_after_failure(self, name: str) -> None:
        try:
            await self._delete_everything(name)
        except Exception as exc:
            # The original error matters more; startup reconciliation deletes what remains.
            _log.error("VM %s: cleanup after a failed create failed: %s", name, exc)

    async def delete_instance(self, instance_id: str) -> None:
        name = self._vm_name(instance_id)
        if not await self._delete_everything(name):
            raise InstanceNotFound(f"VM {name!r} does not exist ({instance_id})")

    async def delete_recorded(self, instance_id: str, delete_info: Mapping[str, str]) -> None:
        """One DELETE of a VM `_create_once` made, not waited for: its NIC and OS disk carry
        `deleteOption: Delete`, so ARM removes them with it, and a VM already gone answers 204.

        With a public IP of ours, the VM's deletion is waited for and the address deleted by name
        after it (204 if it went with the VM): ARM refuses to delete an address still on a NIC.
        """
        name, rg = self._vm_name(instance_id), self._config.resource_group
        if delete_info.get("public_ip") == "no":
            await self._caller.call(self._compute.virtual_machines.begin_delete, rg, name, polling=False)
        else:
            await self._lro(self._compute.virtual_machines.begin_delete, rg, name)
            await self._lro(self._network.public_ip_addresses.begin_delete, rg, public_ip_name(name))
        _log.info("VM %s: deletion accepted, with its NIC and disk", name)

    def _vm_name(self, instance_id: str) -> str:
        return vm_name_from_id(instance_id, self._config.subscription_id, self._config.resource_group)

    # -- list / teardown ------------------------------------------------------------------------------

    async def list_instances(self) -> list[Instance]:
        def list_vms() -> list[VirtualMachine]:
            return list(self._compute.virtual_machines.list(self._config.resource_group))

        owned = []
        for vm in await self._caller.call(list_vms):
            tags = vm.tags or {}
            if tags.get(OWNER_TAG) == self._owner:
                owned.append(Instance(id=str(vm.id), name=str(vm.name), sandbox_id=tags.get(SANDBOX_TAG, "")))
        return owned

    async def teardown(self) -> None:
        self._caller.close()
        self._compute.close()
        self._network.close()
        close = getattr(self._credential, "close", None)
        if callable(close):
            close()
