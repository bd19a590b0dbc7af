"""The wire JSON of what the provider PUTs to ARM: public IP, network interface and virtual machine.

Pure functions returning plain wire JSON (camelCase names, `properties` wrappers). The provider wraps
them in the SDK models (`VirtualMachine(mapping)`), which azure-mgmt-compute 39 / azure-mgmt-network
serialise back to exactly this JSON. (The SDKs' `types` TypedDicts cannot be used: their subclasses
make every key required.)

What upstream sends (caa.md §4.3): the OS disk `<name>-disk` from the image, Premium_LRS, deleted with
the VM; the NIC `<name>-net`, deleted with the VM; for confidential VMs (AMD SEV-SNP and Intel TDX sizes
alike) `securityType: ConfidentialVM` with vTPM on and secure boot as configured, and the OS disk's VM
guest state encrypted (`VMGuestStateOnly`); user data base64, at most 64 KiB.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from protocols.scratch_disk import AZURE_SCRATCH_LUN
from providers.azure.ids import is_community_image
from providers.base import OWNER_TAG, SANDBOX_TAG, InvalidRequestError

if TYPE_CHECKING:
    from providers.azure.config import AzureConfig

Json = dict[str, Any]

# ARM's limit is on the base64 text of userData.
MAX_USER_DATA_B64 = 64 * 1024


def nic_name(vm_name: str) -> str:
    return f"{vm_name}-net"


def disk_name(vm_name: str) -> str:
    return f"{vm_name}-disk"


def public_ip_name(vm_name: str) -> str:
    return f"{vm_name}-ip"


def encode_user_data(user_data: bytes) -> str:
    encoded = base64.b64encode(user_data).decode("ascii")
    if len(encoded) > MAX_USER_DATA_B64:
        raise InvalidRequestError(
            f"user data is {len(user_data)} bytes ({len(encoded)} base64-encoded); Azure accepts at most "
            f"{MAX_USER_DATA_B64} bytes of base64 user data"
        )
    return encoded


def instance_tags(
    config_tags: Mapping[str, str], request_tags: Mapping[str, str], owner: str, sandbox_id: str
) -> dict[str, str]:
    """Configured TAGS, then the request's tags, then ours, which always win (Azure tags map 1:1)."""
    return {**config_tags, **request_tags, OWNER_TAG: owner, SANDBOX_TAG: sandbox_id}


def public_ip_body(config: AzureConfig, tags: Mapping[str, str]) -> Json:
    return {
        "location": config.region,
        "tags": dict(tags),
        "sku": {"name": "Standard"},
        "properties": {
            "publicIPAllocationMethod": "Static",
            "publicIPAddressVersion": "IPv4",
            "deleteOption": "Delete",
        },
    }


def nic_body(config: AzureConfig, tags: Mapping[str, str], public_ip_id: str | None) -> Json:
    ip_config: Json = {
        "subnet": {"id": config.subnet_id},
        "privateIPAllocationMethod": "Dynamic",
        "primary": True,
    }
    if public_ip_id:
        ip_config["publicIPAddress"] = {"id": public_ip_id}
    properties: Json = {"ipConfigurations": [{"name": "ipconfig", "properties": ip_config}]}
    if config.nsg_id:
        properties["networkSecurityGroup"] = {"id": config.nsg_id}
    return {"location": config.region, "tags": dict(tags), "properties": properties}


def _image_reference(image: str) -> Json:
    if is_community_image(image):
        return {"communityGalleryImageId": image}
    return {"id": image}


def _os_disk(config: AzureConfig, vm_name: str) -> Json:
    managed: Json = {"storageAccountType": "Premium_LRS"}
    if not config.disable_cvm:
        managed["securityProfile"] = {"securityEncryptionType": "VMGuestStateOnly"}
    disk: Json = {
        "name": disk_name(vm_name),
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "deleteOption": "Delete",
        "managedDisk": managed,
    }
    if config.root_volume_size_gib:
        disk["diskSizeGB"] = config.root_volume_size_gib
    return disk


def scratch_data_disk(vm_name: str, gib: int) -> Json:
    """ENABLE_SCRATCH_SPACE: an empty managed data disk, deleted with the VM (`deleteOption`)."""
    return {
        "lun": AZURE_SCRATCH_LUN,
        "name": f"{vm_name}-scratch",
        "createOption": "Empty",
        "diskSizeGB": gib,
        "caching": "None",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": "Premium_LRS"},
    }


def vm_body(
    config: AzureConfig,
    *,
    vm_name: str,
    size: str,
    image: str,
    nic_id: str,
    ssh_public_key: str,
    user_data_b64: str,
    tags: Mapping[str, str],
    scratch_gib: int = 0,
) -> Json:
    properties: Json = {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {"imageReference": _image_reference(image), "osDisk": _os_disk(config, vm_name)},
        "osProfile": {
            "computerName": vm_name,
            "adminUsername": config.ssh_username,
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {
                    "publicKeys": [
                        {
                            "path": f"/home/{config.ssh_username}/.ssh/authorized_keys",
                            "keyData": ssh_public_key,
                        }
                    ]
                },
            },
        },
        "networkProfile": {
            "networkInterfaces": [{"id": nic_id, "properties": {"primary": True, "deleteOption": "Delete"}}]
        },
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        "userData": user_data_b64,
    }
    if scratch_gib > 0:
        properties["storageProfile"]["dataDisks"] = [scratch_data_disk(vm_name, scratch_gib)]
    if not config.disable_cvm:
        properties["securityProfile"] = {
            "securityType": "ConfidentialVM",
            "uefiSettings": {"secureBootEnabled": config.enable_secure_boot, "vTpmEnabled": True},
        }
    return {"location": config.region, "tags": dict(tags), "properties": properties}
