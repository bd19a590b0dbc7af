"""An in-memory cloud behind the Provider interface, with faults to inject, for adaptor tests."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from dataclasses import dataclass, field

from providers.base import CreateRequest, Instance, InstanceNotFound, ProviderError


@dataclass
class MemoryCloud:
    """Instances live in a dict; `fail_create` makes the next creates raise, `refuse_delete` the
    deletes of those ids; `port` is where VMs listen."""

    instances: dict[str, Instance] = field(default_factory=dict)
    fail_create: ProviderError | None = None
    refuse_delete: set[str] = field(default_factory=set)
    port: int | None = None
    deleted: list[str] = field(default_factory=list)
    create_delay_s: float = 0.0
    name: str = "memory"
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def validate(self) -> None:
        pass

    async def create_instance(self, request: CreateRequest) -> Instance:
        if self.fail_create is not None:
            raise self.fail_create

        async def provision() -> Instance:
            await asyncio.sleep(self.create_delay_s)
            instance = Instance(
                f"i-{next(self._ids):04d}",
                request.name,
                (ipaddress.ip_address("127.0.0.1"),),
                request.sandbox_id,
                self.port,
            )
            self.instances[instance.id] = instance
            return instance

        # Like an SDK call in a worker thread: once sent, cancelling the caller does not stop it.
        return await asyncio.shield(asyncio.ensure_future(provision()))

    async def delete_instance(self, instance_id: str) -> None:
        if instance_id in self.refuse_delete:
            raise ProviderError(f"UnauthorizedOperation: not allowed to terminate {instance_id}")
        if self.instances.pop(instance_id, None) is None:
            raise InstanceNotFound(instance_id)
        self.deleted.append(instance_id)

    async def list_instances(self) -> list[Instance]:
        return list(self.instances.values())

    async def teardown(self) -> None:
        pass
