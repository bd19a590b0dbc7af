"""The Azure provider driving the real azure-mgmt-compute/-network SDKs against the fake ARM server."""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import NetworkInterface, PublicIPAddress

from providers.azure.bodies import nic_body, public_ip_body, vm_body
from providers.azure.clients import build_clients
from providers.azure.config import SETTINGS, AzureConfig, load_config
from providers.azure.provider import AzureProvider
from providers.base import (
    OWNER_TAG,
    SANDBOX_TAG,
    CapacityError,
    CreateRequest,
    InstanceNotFound,
    InstanceSpec,
    InvalidRequestError,
    Provider,
    ProviderError,
)
from providers.retry import RateLimiter, RetryPolicy
from providers.settings import add_arguments, resolve
from tests.fakes.arm import FakeArm, RecordedRequest
from tests.providers.stop_support import StopBench, one_gone_one_busy

OWNER = "adaptor-1"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBn0ZxX0bGb6yq0yqB9bH5m0Kx4xWcZlY0t5x9CqJ2v1 test"
FAST = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05)


class StaticCredential:
    """A TokenCredential that needs no Microsoft Entra ID (the fake only checks that a bearer is sent)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass
class Cloud:
    fake: FakeArm
    subnet: str
    image: str
    key_file: Path
    providers: list[AzureProvider] = field(default_factory=list)

    def load(
        self, flags: tuple[str, ...], env: dict[str, str], ssh_key: bool
    ) -> tuple[AzureConfig, RateLimiter]:
        """Configuration as the adaptor gets it: environment variables plus upstream-style flags."""
        parser = argparse.ArgumentParser()
        add_arguments(parser, SETTINGS)
        environ = {
            "AZURE_SUBSCRIPTION_ID": self.fake.subscription_id,
            "AZURE_REGION": self.fake.location,
            "AZURE_RESOURCE_GROUP": self.fake.resource_group,
            "AZURE_SUBNET_ID": self.subnet,
            "AZURE_IMAGE_ID": self.image,
            "AZURE_ARM_ENDPOINT": self.fake.base_url,
            "TAGS": "team=peerpods,env=test",
            "CLOUD_API_RATE_LIMIT": "1000",
            **env,
        }
        args = [*(["-ssh-key-path", str(self.key_file)] if ssh_key else []), *flags]
        return load_config(resolve(SETTINGS, parser.parse_args(args), environ))

    def config(self, *flags: str, **env: str) -> AzureConfig:
        return self.load(flags, env, ssh_key=True)[0]

    def provider(
        self, *flags: str, owner: str = OWNER, poll: float = 0.0, ssh_key: bool = True, **env: str
    ) -> AzureProvider:
        config, limiter = self.load(flags, env, ssh_key)
        provider = AzureProvider(
            config, owner, limiter, credential=StaticCredential(), poll_interval_s=poll, retry_policy=FAST
        )
        self.providers.append(provider)
        return provider

    def sdk(self) -> tuple[ComputeManagementClient, NetworkManagementClient]:
        """Plain SDK clients on the fake, to set up situations behind the provider's back."""
        return build_clients(self.config(), StaticCredential(), 0.0)

    def vm_puts(self) -> list[RecordedRequest]:
        return [r for r in self.fake.requests_matching("PUT", "/virtualMachines/") if r.status in (200, 201)]

    def names(self) -> list[str]:
        return sorted(r["name"] for r in self.fake.all_resources())


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with FakeArm() as server:
        yield server


@pytest.fixture
async def cloud(fake: FakeArm, tmp_path: Path) -> AsyncIterator[Cloud]:
    key_file = tmp_path / "id.pub"
    key_file.write_text(SSH_KEY + "\n")
    env = Cloud(fake, fake.add_subnet("vnet", "pods"), fake.add_image(), key_file)
    yield env
    for provider in env.providers:
        await provider.teardown()


def request(name: str = "podvm-a", sandbox: str = "sandbox-a", **spec: Any) -> CreateRequest:
    return CreateRequest(
        name=name,
        sandbox_id=sandbox,
        user_data=b"#cloud-config\nwrite_files: []\n",
        spec=InstanceSpec(**spec),
        tags={"pod": name},
    )


def vm_body_sent(cloud: Cloud) -> dict[str, Any]:
    puts = cloud.vm_puts()
    assert puts, "no VM PUT reached the fake"
    body: dict[str, Any] = puts[-1].body
    return body


async def test_create_list_delete_confidential_vm(cloud: Cloud) -> None:
    provider = cloud.provider()
    assert isinstance(provider, Provider)
    instance = await provider.create_instance(request())

    rg_id = cloud.fake.rg_id()
    assert instance.id == f"{rg_id}/providers/Microsoft.Compute/virtualMachines/podvm-a"
    assert instance.name == "podvm-a"
    assert instance.sandbox_id == "sandbox-a"
    assert len(instance.ips) == 1 and instance.ips[0] in ipaddress.ip_network("10.0.0.0/16")

    body = vm_body_sent(cloud)
    props = body["properties"]
    assert props["hardwareProfile"] == {"vmSize": "Standard_DC2as_v5"}
    assert props["securityProfile"] == {
        "securityType": "ConfidentialVM",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
    }
    os_disk = props["storageProfile"]["osDisk"]
    assert os_disk["name"] == "podvm-a-disk"
    assert os_disk["createOption"] == "FromImage"
    assert os_disk["deleteOption"] == "Delete"
    assert os_disk["managedDisk"] == {
        "storageAccountType": "Premium_LRS",
        "securityProfile": {"securityEncryptionType": "VMGuestStateOnly"},
    }
    assert "diskSizeGB" not in os_disk
    assert props["storageProfile"]["imageReference"] == {"id": cloud.image}
    nic_ref = props["networkProfile"]["networkInterfaces"][0]
    assert nic_ref["id"].endswith("/networkInterfaces/podvm-a-net")
    assert nic_ref["properties"]["deleteOption"] == "Delete"
    assert base64.b64decode(props["userData"]) == request().user_data
    assert props["osProfile"]["adminUsername"] == "peerpod"
    assert props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"] == SSH_KEY
    assert body["location"] == "eastus"
    assert body["tags"] == {
        "team": "peerpods",
        "env": "test",
        "pod": "podvm-a",
        OWNER_TAG: OWNER,
        SANDBOX_TAG: "sandbox-a",
    }
    nic_put = cloud.fake.requests_matching("PUT", "/networkInterfaces/podvm-a-net")[0].body
    assert nic_put["properties"]["ipConfigurations"][0]["properties"]["subnet"] == {"id": cloud.subnet}
    assert cloud.names() == ["podvm-a", "podvm-a-disk", "podvm-a-net"]

    other = cloud.provider(owner="adaptor-2")
    await other.create_instance(request("podvm-b", "sandbox-b"))
    listed = await provider.list_instances()
    assert [(i.id, i.name, i.sandbox_id) for i in listed] == [(instance.id, "podvm-a", "sandbox-a")]

    await provider.delete_instance(instance.id)
    assert cloud.names() == ["podvm-b", "podvm-b-disk", "podvm-b-net"]  # the cascade took disk and NIC
    assert await provider.list_instances() == []
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance(instance.id)


async def test_public_ip_comes_first_and_goes_with_the_vm(cloud: Cloud) -> None:
    provider = cloud.provider(USE_PUBLIC_IP="true", ROOT_VOLUME_SIZE="64")
    instance = await provider.create_instance(request())
    assert len(instance.ips) == 2
    assert instance.ips[0] in ipaddress.ip_network("20.0.0.0/16") and instance.ips[1].is_private
    pip = cloud.fake.requests_matching("PUT", "/publicIPAddresses/podvm-a-ip")[0].body
    assert pip["sku"] == {"name": "Standard"}
    assert pip["properties"]["deleteOption"] == "Delete"
    nic = cloud.fake.requests_matching("PUT", "/networkInterfaces/podvm-a-net")[0].body
    assert nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"].endswith(
        "/podvm-a-ip"
    )
    assert vm_body_sent(cloud)["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] == 64

    await provider.delete_instance(instance.id)
    assert cloud.fake.all_resources() == []


async def test_nsg_secure_boot_and_community_image(cloud: Cloud) -> None:
    nsg = cloud.fake.add_nsg("pods-nsg")
    community = cloud.fake.add_image("/CommunityGalleries/cocos-1234/Images/podvm/Versions/0.1.0")
    provider = cloud.provider(AZURE_NSG_ID=nsg, ENABLE_SECURE_BOOT="true")
    await provider.create_instance(request(image=community))
    props = vm_body_sent(cloud)["properties"]
    assert props["storageProfile"]["imageReference"] == {"communityGalleryImageId": community}
    assert props["securityProfile"]["uefiSettings"] == {"secureBootEnabled": True, "vTpmEnabled": True}
    nic = cloud.fake.requests_matching("PUT", "/networkInterfaces/")[0].body
    assert nic["properties"]["networkSecurityGroup"] == {"id": nsg}


async def test_tdx_size_from_the_allow_list(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC2es_v5")
    await provider.create_instance(request(instance_type="Standard_DC2es_v5"))
    props = vm_body_sent(cloud)["properties"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_DC2es_v5"
    assert props["securityProfile"]["securityType"] == "ConfidentialVM"


async def test_size_from_vcpus_and_memory_uses_the_vm_sizes_list(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC8as_v5,Standard_DC4as_v5")
    await provider.create_instance(request(vcpus=3, memory_mib=12000))
    assert vm_body_sent(cloud)["properties"]["hardwareProfile"]["vmSize"] == "Standard_DC4as_v5"
    assert len(cloud.fake.requests_matching("GET", "/vmSizes")) == 1
    await provider.create_instance(request("podvm-b", "sandbox-b", vcpus=8, memory_mib=32768))
    assert vm_body_sent(cloud)["properties"]["hardwareProfile"]["vmSize"] == "Standard_DC8as_v5"
    assert len(cloud.fake.requests_matching("GET", "/vmSizes")) == 1  # listed once


async def test_size_not_in_the_allow_list_is_refused_before_any_put(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5")
    with pytest.raises(InvalidRequestError, match="not part of supported instance types list"):
        await provider.create_instance(request(instance_type="Standard_DC8as_v5"))
    assert cloud.fake.requests_matching("PUT") == []


async def test_allowed_size_missing_from_the_region(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC96as_v5")
    with pytest.raises(InvalidRequestError, match="Standard_DC96as_v5"):
        await provider.create_instance(request())


async def test_disable_cvm_sends_an_ordinary_vm(cloud: Cloud) -> None:
    provider = cloud.provider(DISABLECVM="true", AZURE_INSTANCE_SIZE="Standard_D2as_v5")
    await provider.create_instance(request())
    props = vm_body_sent(cloud)["properties"]
    assert "securityProfile" not in props
    assert props["storageProfile"]["osDisk"]["managedDisk"] == {"storageAccountType": "Premium_LRS"}
    assert props["hardwareProfile"]["vmSize"] == "Standard_D2as_v5"


async def test_confidential_vm_on_an_ordinary_size_surfaces_arm_error(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZE="Standard_D2as_v5")
    with pytest.raises(InvalidRequestError, match=r"InvalidParameter.*not supported for the security type"):
        await provider.create_instance(request())
    assert cloud.fake.all_resources() == []


async def test_throttling_is_retried_after_retry_after(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.inject(
        429,
        "TooManyRequests",
        "Rate limit exceeded",
        method="PUT",
        path_contains="/virtualMachines/",
        retry_after=1,
    )
    await provider.create_instance(request())
    puts = cloud.fake.requests_matching("PUT", "/virtualMachines/")
    assert [p.status for p in puts] == [429, 201]
    assert puts[1].at - puts[0].at >= 0.95  # the cloud's Retry-After, not our 10 ms backoff


async def test_server_errors_are_retried(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.inject(500, "InternalServerError", method="PUT", path_contains="/networkInterfaces/", times=2)
    await provider.create_instance(request())
    assert [r.status for r in cloud.fake.requests_matching("PUT", "/networkInterfaces/")] == [500, 500, 201]


async def test_a_failed_poll_resumes_polling_without_a_second_put(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.latency_s = 0.05
    cloud.fake.inject(503, "ServiceUnavailable", method="GET", path_contains="/operations/", times=1)
    instance = await provider.create_instance(request())
    assert instance.name == "podvm-a"
    assert [r.status for r in cloud.fake.requests_matching("PUT", "/virtualMachines/")] == [201]


async def test_retries_give_up_with_the_cloud_message(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.inject(
        500,
        "InternalServerError",
        "ARM is down",
        method="PUT",
        path_contains="/networkInterfaces/",
        times=None,
    )
    with pytest.raises(Exception, match="ARM is down") as info:
        await provider.create_instance(request())
    assert "gave up after 4 attempts" in str(info.value)
    assert cloud.fake.all_resources() == []


async def test_unreachable_arm_is_retried_then_reported(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.stop()  # connection refused from now on
    with pytest.raises(ProviderError, match="gave up after 4 attempts"):
        await provider.list_instances()


async def test_concurrent_deletes_of_one_vm(cloud: Cloud) -> None:
    cloud.fake.latency_s = 0.1
    provider = cloud.provider(poll=0.02)
    instance = await provider.create_instance(request())
    outcomes = await asyncio.gather(
        provider.delete_instance(instance.id), provider.delete_instance(instance.id), return_exceptions=True
    )
    assert all(o is None or isinstance(o, InstanceNotFound) for o in outcomes), outcomes
    assert cloud.fake.all_resources() == []


@pytest.mark.parametrize("sync", [False, True], ids=["allocation-failed-lro", "sku-not-available-409"])
async def test_capacity_falls_back_to_the_next_allowed_size(cloud: Cloud, sync: bool) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC4as_v5,Standard_DC8as_v5")
    code = "SkuNotAvailable" if sync else "AllocationFailed"
    cloud.fake.inject_capacity("Standard_DC2as_v5", code, sync=sync)
    instance = await provider.create_instance(request())
    sizes = [
        r.body["properties"]["hardwareProfile"]["vmSize"]
        for r in cloud.fake.requests_matching("PUT", "/virtualMachines/")
    ]
    assert sizes == ["Standard_DC2as_v5", "Standard_DC4as_v5"]
    vm = cloud.fake.resource(instance.id)
    assert vm is not None and vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_DC4as_v5"
    assert vm["properties"]["provisioningState"] == "Succeeded"
    assert cloud.names() == ["podvm-a", "podvm-a-disk", "podvm-a-net"]


async def test_no_capacity_anywhere_fails_with_the_reason_and_leaves_nothing(cloud: Cloud) -> None:
    provider = cloud.provider(AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC4as_v5", USE_PUBLIC_IP="1")
    cloud.fake.inject_capacity("Standard_DC2as_v5", "ZonalAllocationFailed")
    cloud.fake.inject_capacity("Standard_DC4as_v5", "AllocationFailed")
    with pytest.raises(CapacityError, match="AllocationFailed") as info:
        await provider.create_instance(request())
    assert "Standard_DC2as_v5, Standard_DC4as_v5" in str(info.value)
    assert cloud.fake.all_resources() == []


async def test_bad_image_surfaces_arm_error_and_leaves_no_nic(cloud: Cloud) -> None:
    provider = cloud.provider()
    missing = cloud.image.replace("0.0.1", "9.9.9")
    with pytest.raises(InvalidRequestError, match=r"ImageNotFound.*9\.9\.9.*is not available"):
        await provider.create_instance(request(image=missing))
    assert len(cloud.fake.requests_matching("PUT", "/virtualMachines/")) == 1  # never retried
    assert cloud.fake.all_resources() == []


async def test_malformed_image_is_refused_by_arm(cloud: Cloud) -> None:
    provider = cloud.provider()
    with pytest.raises(InvalidRequestError, match="InvalidParameter"):
        await provider.create_instance(request(image="podvm-image"))
    assert cloud.fake.all_resources() == []


@pytest.mark.parametrize(
    ("subnet", "code"),
    [("vnet/subnets/nope", "InvalidResourceReference"), ("other-vnet/subnets/pods", "NotFound")],
)
async def test_bad_subnet_surfaces_arm_error_and_leaves_nothing(cloud: Cloud, subnet: str, code: str) -> None:
    bad = f"{cloud.fake.rg_id()}/providers/Microsoft.Network/virtualNetworks/{subnet}"
    provider = cloud.provider(AZURE_SUBNET_ID=bad, USE_PUBLIC_IP="true")
    with pytest.raises(InvalidRequestError, match=code) as info:
        await provider.create_instance(request())
    assert bad.split("/subnets/")[0] in str(info.value)  # ARM names what it could not find
    assert len(cloud.fake.requests_matching("PUT", "/networkInterfaces/")) == 1
    assert cloud.fake.requests_matching("PUT", "/virtualMachines/") == []
    assert cloud.fake.all_resources() == []  # the public IP made before the NIC is gone too


async def test_user_data_over_64_kib_is_refused_before_any_call(cloud: Cloud) -> None:
    provider = cloud.provider()
    big = CreateRequest(name="podvm-a", sandbox_id="s", user_data=b"x" * 50_000)
    with pytest.raises(InvalidRequestError, match="at most 65536 bytes of base64 user data"):
        await provider.create_instance(big)
    assert cloud.fake.requests == []


async def test_create_after_a_crash_returns_the_existing_vm(cloud: Cloud) -> None:
    first = await cloud.provider().create_instance(request())
    cloud.fake.clear_requests()
    restarted = cloud.provider()  # a new adaptor process, same owner
    again = await restarted.create_instance(request())
    assert again == first
    assert cloud.fake.requests_matching("PUT") == []
    assert cloud.names() == ["podvm-a", "podvm-a-disk", "podvm-a-net"]


async def test_create_after_a_crash_waits_for_a_vm_still_provisioning(cloud: Cloud) -> None:
    config = cloud.config()
    compute, network = cloud.sdk()
    rg = config.resource_group
    tags = {OWNER_TAG: OWNER, SANDBOX_TAG: "sandbox-a"}
    nic = network.network_interfaces.begin_create_or_update(
        rg, "podvm-a-net", NetworkInterface(nic_body(config, tags, None))
    ).result()
    cloud.fake.latency_s = 0.3
    body = vm_body(
        config,
        vm_name="podvm-a",
        size="Standard_DC2as_v5",
        image=cloud.image,
        nic_id=str(nic.id),
        ssh_public_key=SSH_KEY,
        user_data_b64="",
        tags=tags,
    )
    compute.virtual_machines.begin_create_or_update(
        rg, "podvm-a", VirtualMachine(body), polling=False
    )  # "crash"
    vm = cloud.fake.resource(f"{cloud.fake.rg_id()}/providers/Microsoft.Compute/virtualMachines/podvm-a")
    assert vm is not None and vm["properties"]["provisioningState"] == "Creating"

    instance = await cloud.provider(poll=0.05).create_instance(request())
    assert instance.name == "podvm-a" and instance.ips
    assert len(cloud.fake.requests_matching("PUT", "/virtualMachines/")) == 1
    compute.close()
    network.close()


async def test_create_after_a_failed_attempt_starts_over(cloud: Cloud) -> None:
    provider = cloud.provider()
    cloud.fake.inject_capacity("Standard_DC2as_v5", times=1)
    with pytest.raises(CapacityError):
        await provider.create_instance(request())
    assert cloud.fake.all_resources() == []
    instance = await provider.create_instance(request())
    assert cloud.fake.resource(instance.id) is not None


async def test_a_vm_of_another_sandbox_with_the_same_name_is_left_alone(cloud: Cloud) -> None:
    provider = cloud.provider()
    await provider.create_instance(request("podvm-a", "sandbox-a"))
    with pytest.raises(InvalidRequestError, match="already exists"):
        await provider.create_instance(request("podvm-a", "sandbox-other"))
    assert cloud.names() == ["podvm-a", "podvm-a-disk", "podvm-a-net"]


async def test_delete_removes_leftovers_of_a_create_that_died_halfway(cloud: Cloud) -> None:
    config = cloud.config(USE_PUBLIC_IP="true")
    compute, network = cloud.sdk()
    rg = config.resource_group
    pip = network.public_ip_addresses.begin_create_or_update(
        rg, "podvm-a-ip", PublicIPAddress(public_ip_body(config, {}))
    ).result()
    network.network_interfaces.begin_create_or_update(
        rg, "podvm-a-net", NetworkInterface(nic_body(config, {}, pip.id))
    ).result()
    assert cloud.names() == ["podvm-a-ip", "podvm-a-net"]

    vm_id = f"{cloud.fake.rg_id()}/providers/Microsoft.Compute/virtualMachines/podvm-a"
    with pytest.raises(InstanceNotFound):
        await cloud.provider().delete_instance(vm_id)
    assert cloud.fake.all_resources() == []
    compute.close()
    network.close()


@pytest.mark.parametrize(
    "bad_id",
    [
        "podvm-a",
        "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/podvm-a-net",
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/other-rg/providers/"
        "Microsoft.Compute/virtualMachines/podvm-a",
    ],
)
async def test_bad_instance_ids_are_refused_clearly(cloud: Cloud, bad_id: str) -> None:
    with pytest.raises(InvalidRequestError, match="instance id"):
        await cloud.provider().delete_instance(bad_id)
    assert cloud.fake.requests == []


async def test_instance_id_is_matched_case_insensitively(cloud: Cloud) -> None:
    provider = cloud.provider()
    instance = await provider.create_instance(request())
    rg = cloud.fake.resource_group
    await provider.delete_instance(
        instance.id.replace(f"/resourceGroups/{rg}/", f"/resourcegroups/{rg.upper()}/").replace(
            "Microsoft.Compute", "microsoft.compute"
        )
    )
    assert cloud.fake.all_resources() == []


async def test_list_follows_pages(cloud: Cloud) -> None:
    cloud.fake.page_size = 2
    provider = cloud.provider(poll=0.01)
    await asyncio.gather(*(provider.create_instance(request(f"podvm-{i}", f"sb-{i}")) for i in range(5)))
    listed = await provider.list_instances()
    assert sorted(i.name for i in listed) == [f"podvm-{i}" for i in range(5)]
    assert len(cloud.fake.requests_matching("GET", "/virtualMachines")) >= 3


async def test_concurrent_creates_and_deletes_leave_nothing(cloud: Cloud) -> None:
    cloud.fake.latency_s = 0.1
    provider = cloud.provider(poll=0.02)
    instances = await asyncio.gather(
        *(provider.create_instance(request(f"podvm-{i}", f"sb-{i}")) for i in range(8))
    )
    assert len({i.ips[0] for i in instances}) == 8
    await asyncio.gather(*(provider.delete_instance(i.id) for i in instances))
    assert cloud.fake.all_resources() == []


async def test_throwaway_ssh_key_is_rsa_and_never_logged(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyless = cloud.provider(ssh_key=False)
    cloud.fake.inject(500, "InternalServerError", method="GET", path_contains="/operations/", times=1)
    await keyless.create_instance(request())
    key = vm_body_sent(cloud)["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0][
        "keyData"
    ]
    assert key.startswith("ssh-rsa ")
    assert len(base64.b64decode(key.split()[1])) > 500  # RSA-4096
    assert caplog.records  # the resumed poll was logged ...
    assert all(key.split()[1] not in r.getMessage() for r in caplog.records)  # ... without the key


# -- StopVM: one call when the record knows the VM ----------------------------------------------------


def calls(cloud: Cloud) -> list[tuple[str, str]]:
    """What reached ARM: method and the path's last two segments (type and name)."""
    return [(r.method, "/".join(r.path.split("/")[-2:])) for r in cloud.fake.requests]


async def test_stopvm_of_a_recorded_vm_is_one_delete(cloud: Cloud, tmp_path: Path) -> None:
    provider = cloud.provider()
    instances = [await provider.create_instance(request(f"podvm-{i}", f"sb-{i}")) for i in range(3)]
    assert [i.delete_info for i in instances] == [{"public_ip": "no"}] * 3
    stops = StopBench(tmp_path, provider)
    for instance in instances:
        stops.record(instance)
    cloud.fake.clear_requests()
    for instance in instances:
        await stops.stop(instance.sandbox_id)
    assert calls(cloud) == [("DELETE", f"virtualMachines/podvm-{i}") for i in range(3)]  # no poll
    assert cloud.fake.all_resources() == []  # NIC and disk went with the VMs (deleteOption)
    await stops.close()


async def test_stopvm_of_a_record_without_delete_info_takes_the_full_delete(
    cloud: Cloud, tmp_path: Path
) -> None:
    provider = cloud.provider()
    instance = await provider.create_instance(request())
    stops = StopBench(tmp_path, provider)
    stops.record_legacy(instance)
    cloud.fake.clear_requests()
    await stops.stop(instance.sandbox_id)
    assert [call for call in calls(cloud) if not call[1].startswith("operations/")] == [
        ("GET", "virtualMachines/podvm-a"),
        ("DELETE", "virtualMachines/podvm-a"),
        ("DELETE", "networkInterfaces/podvm-a-net"),
        ("DELETE", "publicIPAddresses/podvm-a-ip"),
        ("DELETE", "disks/podvm-a-disk"),
    ]
    assert cloud.fake.all_resources() == []
    await stops.close()


async def test_stopvm_with_a_public_ip_deletes_it_after_the_vm(cloud: Cloud, tmp_path: Path) -> None:
    provider = cloud.provider(USE_PUBLIC_IP="true")
    instance = await provider.create_instance(request())
    assert instance.delete_info == {"public_ip": "yes"}
    # An address that did not go with the VM (say, created before deleteOption existed) goes after it.
    pip_id = f"{cloud.fake.rg_id()}/providers/Microsoft.Network/publicIPAddresses/podvm-a-ip"
    cloud.fake.set_properties(pip_id, deleteOption="Detach")
    stops = StopBench(tmp_path, provider)
    stops.record(instance)
    cloud.fake.clear_requests()
    await stops.stop(instance.sandbox_id)
    assert [call for call in calls(cloud) if not call[1].startswith("operations/")] == [
        ("DELETE", "virtualMachines/podvm-a"),
        ("DELETE", "publicIPAddresses/podvm-a-ip"),
    ]
    assert cloud.fake.all_resources() == []
    await stops.close()


async def test_stopvm_of_a_vm_already_gone_or_throttled(cloud: Cloud, tmp_path: Path) -> None:
    stops, gone, throttled = await one_gone_one_busy(tmp_path, cloud.provider(), request)
    cloud.fake.clear_requests()
    cloud.fake.inject(429, "TooManyRequests", method="DELETE", path_contains="/podvm-busy", times=1)
    await stops.stop(gone.sandbox_id)  # ARM answers 204: nothing to delete
    await stops.stop(throttled.sandbox_id)
    assert [(r.method, r.path.rsplit("/", 1)[1], r.status) for r in cloud.fake.requests] == [
        ("DELETE", "podvm-gone", 204),
        ("DELETE", "podvm-busy", 429),
        ("DELETE", "podvm-busy", 202),
    ]
    assert cloud.fake.all_resources() == []
    await stops.close()
