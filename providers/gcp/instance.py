"""The Compute Engine Instance body we send, and what we read back from an Instance (pure functions)."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from google.cloud import compute_v1

from protocols.scratch_disk import SCRATCH_DISK_NAME
from providers.base import Instance, IPAddress
from providers.gcp.config import GcpConfig, ImageRef
from providers.gcp.labels import OWNER_LABEL, OWNER_METADATA, SANDBOX_LABEL, SANDBOX_METADATA, label_value


@dataclass(frozen=True)
class InstancePlan:
    """Everything about one instance that is not a setting."""

    name: str
    machine_type: str
    image: ImageRef
    disk_size_gb: int
    user_data: bytes
    labels: Mapping[str, str]
    owner: str
    sandbox_id: str
    gpus: int = 0
    scratch_disk_gb: int = 0  # ENABLE_SCRATCH_SPACE: a second disk, auto-deleted with the instance


def build_instance(config: GcpConfig, plan: InstancePlan) -> compute_v1.Instance:
    """The Instance body for instances.insert, with upstream's fields.

    Confidential VMs get `confidentialInstanceConfig` and `onHostMaintenance: TERMINATE` (they cannot
    live-migrate); GPU machines need TERMINATE too. The user data travels base64-encoded in the
    `user-data` metadata item, with `user-data-encoding: base64` saying so.
    """
    metadata = {
        "user-data": base64.b64encode(plan.user_data).decode("ascii"),
        "user-data-encoding": "base64",
        OWNER_METADATA: plan.owner,
        SANDBOX_METADATA: plan.sandbox_id,
    }
    nic = compute_v1.NetworkInterface(network=config.network, stack_type="IPV4_ONLY")
    if config.subnetwork:
        nic.subnetwork = config.subnetwork
    if config.use_public_ip:
        nic.access_configs = [
            compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT", network_tier="STANDARD")
        ]
    instance = compute_v1.Instance(
        name=plan.name,
        machine_type=f"zones/{config.zone}/machineTypes/{plan.machine_type}",
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_size_gb=plan.disk_size_gb,
                    source_image=plan.image.source,
                    disk_type=f"zones/{config.zone}/diskTypes/{config.disk_type}",
                ),
            )
        ],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
        network_interfaces=[nic],
        labels=dict(plan.labels),
    )
    if plan.scratch_disk_gb > 0:
        instance.disks.append(scratch_disk(config, plan.scratch_disk_gb))
    if config.confidential_type is not None:
        instance.confidential_instance_config = compute_v1.ConfidentialInstanceConfig(
            confidential_instance_type=config.confidential_type, enable_confidential_compute=True
        )
    if config.confidential_type is not None or plan.gpus > 0:
        instance.scheduling = compute_v1.Scheduling(on_host_maintenance="TERMINATE")
    return instance


def scratch_disk(config: GcpConfig, gib: int) -> compute_v1.AttachedDisk:
    """An empty persistent disk the pod VM sees as /dev/disk/by-id/google-peerpods-scratch."""
    return compute_v1.AttachedDisk(
        boot=False,
        auto_delete=True,
        device_name=SCRATCH_DISK_NAME,
        initialize_params=compute_v1.AttachedDiskInitializeParams(
            disk_size_gb=gib, disk_type=f"zones/{config.zone}/diskTypes/{config.disk_type}"
        ),
    )


def _metadata(instance: compute_v1.Instance) -> dict[str, str]:
    return {item.key: item.value for item in instance.metadata.items}


def sandbox_of(instance: compute_v1.Instance) -> str:
    """The exact sandbox id (metadata), else the lossy label."""
    value = _metadata(instance).get(SANDBOX_METADATA) or instance.labels.get(SANDBOX_LABEL, "")
    return str(value)


def is_owned_by(instance: compute_v1.Instance, owner: str) -> bool:
    """Exact owner check: the metadata item when present, else the label."""
    exact = _metadata(instance).get(OWNER_METADATA)
    if exact is not None:
        return bool(exact == owner)
    return bool(instance.labels.get(OWNER_LABEL) == label_value(owner))


def belongs_to(instance: compute_v1.Instance, owner: str, sandbox_id: str) -> bool:
    """Whether an existing instance is the one an earlier attempt created for this sandbox."""
    if not is_owned_by(instance, owner):
        return False
    exact = _metadata(instance).get(SANDBOX_METADATA)
    if exact is not None:
        return bool(exact == sandbox_id)
    return bool(instance.labels.get(SANDBOX_LABEL) == label_value(sandbox_id))


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def to_instance(instance: compute_v1.Instance) -> Instance:
    """Our view of an Instance: id and name are the instance name; external (NAT) IPs come first."""
    external = [cfg.nat_i_p for nic in instance.network_interfaces for cfg in nic.access_configs]
    internal = [nic.network_i_p for nic in instance.network_interfaces]
    ips = tuple(ip for ip in (_ip(text) for text in [*external, *internal] if text) if ip is not None)
    return Instance(id=instance.name, name=instance.name, ips=ips, sandbox_id=sandbox_of(instance))
