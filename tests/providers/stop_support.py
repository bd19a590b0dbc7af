"""StopVM through a real SandboxManager on the provider under test, counting what reaches the cloud.

The sandbox record is written as StartVM leaves it (instance id and the create's `delete_info`), or as
an adaptor from before `delete_info` wrote it: JSON without the key, straight into the SQLite file.
No tunnel is involved: a RUNNING record without a live proxy is what StopVM finds after a restart.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.sandbox import SandboxManager
from adaptor.state import SandboxRecord, SandboxState, StateStore
from adaptor.tunnel.authority import TunnelAuthority
from providers.base import CreateRequest, Instance, Provider
from providers.settings import resolve


class StopBench:
    """A sandbox manager with its state under `directory`, for StopVM on recorded instances."""

    def __init__(self, directory: Path, provider: Provider) -> None:
        values = resolve(SETTINGS, None, {})
        values.update(state_dir=str(directory / "state"), pods_dir=str(directory / "pods"))
        config = AdaptorConfig.from_values(values)
        self.db = config.state_dir / "sandboxes.db"
        self.store = StateStore(self.db)
        authority = TunnelAuthority.load_or_create(config.state_dir / "tls")
        self.manager = SandboxManager(config, provider, self.store, authority)
        self._pods = config.pods_dir

    def _record(self, instance: Instance) -> SandboxRecord:
        return SandboxRecord(
            id=instance.sandbox_id,
            pod_name="pod",
            pod_namespace="ns",
            instance_name=instance.name,
            socket_path=str(self._pods / instance.sandbox_id / "agent.ttrpc"),
            state=SandboxState.RUNNING,
            instance_id=instance.id,
            delete_info=dict(instance.delete_info),
            ips=tuple(str(ip) for ip in instance.ips),
        )

    def record(self, instance: Instance) -> None:
        """The record StartVM writes once the instance is up."""
        self.store.put(self._record(instance))

    def record_legacy(self, instance: Instance) -> None:
        """The same record as an adaptor without `delete_info` wrote it."""
        document = asdict(self._record(instance))
        del document["delete_info"]
        document["ips"] = list(document["ips"])
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            db.execute(
                "INSERT OR REPLACE INTO sandboxes (id, state, record) VALUES (?, ?, ?)",
                (instance.sandbox_id, SandboxState.RUNNING.value, json.dumps(document)),
            )
            db.commit()
        decoded = self.store.get(instance.sandbox_id)
        assert decoded is not None and decoded.delete_info == {}

    async def stop(self, sandbox_id: str) -> None:
        await self.manager.stop_vm(sandbox_id)
        assert self.store.get(sandbox_id) is None

    async def close(self) -> None:
        await self.manager.close()
        self.store.close()


async def one_gone_one_busy(
    directory: Path, provider: Provider, request: Callable[[str, str], CreateRequest]
) -> tuple[StopBench, Instance, Instance]:
    """Two recorded instances: one the cloud already deleted, one the test will throttle."""
    gone = await provider.create_instance(request("podvm-gone", "sb-gone"))
    busy = await provider.create_instance(request("podvm-busy", "sb-busy"))
    await provider.delete_instance(gone.id)
    stops = StopBench(directory, provider)
    stops.record(gone)
    stops.record(busy)
    return stops, gone, busy
