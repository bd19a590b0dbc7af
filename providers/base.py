"""The provider interface: the handful of calls the adaptor makes on a cloud.

Everything cloud-specific lives behind these calls, so the sandbox manager can create, delete and
reconcile instances without knowing which cloud it talks to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Tag keys put on every instance, so that owned instances can be listed and reconciled.
OWNER_TAG = "peerpods.owner"
SANDBOX_TAG = "peerpods.sandbox-id"


@dataclass(frozen=True)
class InstanceSpec:
    """What the pod asked for (from the CreateVM annotations); zero means "not set"."""

    instance_type: str = ""
    vcpus: int = 0
    memory_mib: int = 0
    gpus: int = 0
    image: str = ""


@dataclass(frozen=True)
class CreateRequest:
    """One instance to create: its name, its sandbox, the pod's wishes and the cloud-config user data."""

    name: str
    sandbox_id: str
    user_data: bytes
    spec: InstanceSpec = InstanceSpec()
    tags: Mapping[str, str] = field(default_factory=dict)
    # ENABLE_SCRATCH_SPACE: a second disk of this many GiB, deleted with the instance (0: none).
    scratch_space_gib: int = 0


@dataclass(frozen=True)
class Instance:
    """An instance as the cloud reports it. `id` is what `delete_instance` takes.

    `forwarder_port` is set only when the pod VM's forwarder is not on the adaptor's configured
    port (for example behind a port forward on the host); None means the configured one.

    `delete_info` is what `create_instance` knows about deleting it (say, that no public address
    was allocated): the sandbox record keeps it and hands it back to `DeletesRecorded.delete_recorded`,
    which can then delete without looking anything up. It is no part of the instance's identity:
    a listed instance carries none and still compares equal.
    """

    id: str
    name: str
    ips: tuple[IPAddress, ...] = ()
    sandbox_id: str = ""
    forwarder_port: int | None = None
    delete_info: Mapping[str, str] = field(default_factory=dict, compare=False)


class ProviderError(Exception):
    """A cloud call failed; the message carries the cloud's own reason for the shim to see."""


class InstanceNotFound(ProviderError):
    """The instance does not exist (already deleted, or never created)."""


class CapacityError(ProviderError):
    """The cloud has no capacity for this instance type right now; another type may work."""


class InvalidRequestError(ProviderError):
    """The cloud rejected the request itself (bad image, subnet, type): retrying cannot help."""


@runtime_checkable
class Provider(Protocol):
    """A cloud as the adaptor sees it. Every call is safe to retry after a crash.

    A provider is built with the owner id of the adaptor that uses it; it tags what it creates with
    that owner and lists only instances carrying it.
    """

    name: str

    async def validate(self) -> None:
        """Check the settings against the cloud (credentials included) before the adaptor serves.

        Raise `ConfigError` listing every problem found, or `ProviderError` if the cloud cannot be
        asked at all; the adaptor then stops with one line per problem.
        """
        ...

    async def create_instance(self, request: CreateRequest) -> Instance:
        """Create and start an instance tagged with `OWNER_TAG`/`SANDBOX_TAG`; return it with its IPs."""
        ...

    async def delete_instance(self, instance_id: str) -> None:
        """Delete the instance and what was created with it; raise `InstanceNotFound` if it is gone."""
        ...

    async def list_instances(self) -> list[Instance]:
        """The instances this adaptor owns (tagged with its owner id), in any state but deleted."""
        ...

    async def teardown(self) -> None:
        """Release clients and background work; instances are left as they are."""
        ...


@runtime_checkable
class DeletesRecorded(Protocol):
    """A provider whose created instances carry `delete_info`, so that a delete needs no look-up.

    `Provider.delete_instance` knows only an id, so it asks the cloud what goes with the instance
    (addresses, leftovers of a create); with what the create recorded, one call is enough.
    """

    async def delete_recorded(self, instance_id: str, delete_info: Mapping[str, str]) -> None:
        """Delete the instance `create_instance` returned with this `delete_info`, and what it made.

        An instance already gone is success (or `InstanceNotFound`); the cloud may finish the
        deletion after the call returns: what it fails to delete still carries the owner tag, and
        reconciliation at start-up deletes it.
        """
        ...


async def delete_as_recorded(provider: Provider, instance_id: str, delete_info: Mapping[str, str]) -> None:
    """The cheapest delete `provider` offers for what the record holds; records written before
    `delete_info` existed (empty) take the full `delete_instance`."""
    if delete_info and isinstance(provider, DeletesRecorded):
        await provider.delete_recorded(instance_id, delete_info)
    else:
        await provider.delete_instance(instance_id)
