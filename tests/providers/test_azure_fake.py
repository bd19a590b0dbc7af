"""The fake ARM server itself, driven by the real SDK: the ARM behaviours the provider relies on."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import NetworkInterface, PublicIPAddress

from tests.fakes.arm import FakeArm


class StaticCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


class HttpBearer(ARMChallengeAuthenticationPolicy):
    def on_request(self, request: Any) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with FakeArm() as server:
        yield server


@pytest.fixture
def clients(fake: FakeArm) -> Iterator[tuple[ComputeManagementClient, NetworkManagementClient]]:
    credential = StaticCredential()
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "polling_interval": 0,
        "retry_total": 0,
        "authentication_policy": HttpBearer(credential, "https://management.azure.com/.default"),
    }
    compute = ComputeManagementClient(credential, fake.subscription_id, **options)
    network = NetworkManagementClient(credential, fake.subscription_id, **options)
    yield compute, network
    compute.close()
    network.close()


def nic(fake: FakeArm, network: NetworkManagementClient, name: str, pip_id: str | None = None) -> str:
    config: dict[str, Any] = {"subnet": {"id": fake.add_subnet()}}
    if pip_id:
        config["publicIPAddress"] = {"id": pip_id}
    body = {
        "location": fake.location,
        "properties": {"ipConfigurations": [{"name": "ip", "properties": config}]},
    }
    return str(
        network.network_interfaces.begin_create_or_update(fake.resource_group, name, NetworkInterface(body))
        .result()
        .id
    )


def vm(fake: FakeArm, name: str, nic_id: str, delete_option: str = "Delete", **props: Any) -> VirtualMachine:
    return VirtualMachine(
        {
            "location": fake.location,
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_B2s"},
                "storageProfile": {
                    "imageReference": {"id": fake.add_image()},
                    "osDisk": {
                        "name": f"{name}-disk",
                        "createOption": "FromImage",
                        "deleteOption": delete_option,
                    },
                },
                "osProfile": {"adminUsername": "u", "computerName": name},
                "networkProfile": {
                    "networkInterfaces": [{"id": nic_id, "properties": {"deleteOption": delete_option}}]
                },
                **props,
            },
        }
    )


def raw(fake: FakeArm, method: str, path: str, token: bool = True) -> tuple[int, dict[str, Any], Any]:
    request = urllib.request.Request(fake.base_url + path, method=method)
    if token:
        request.add_header("Authorization", "Bearer x")
    try:
        with urllib.request.urlopen(request) as response:
            body = response.read()
            return response.status, dict(response.headers), json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_errors_have_arm_shape_and_auth_is_required(fake: FakeArm) -> None:
    vms = f"{fake.rg_id()}/providers/Microsoft.Compute/virtualMachines"
    status, _, body = raw(fake, "GET", vms + "?api-version=2024-07-01", token=False)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    status, _, body = raw(fake, "GET", vms)
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"
    status, _, body = raw(fake, "GET", vms + "/nope?api-version=2024-07-01")
    assert status == 404 and set(body["error"]) == {"code", "message"}
    status, _, body = raw(
        fake, "GET", f"{fake.rg_id('nope')}/providers/Microsoft.Compute/virtualMachines?api-version=1"
    )
    assert status == 404 and body["error"]["code"] == "ResourceGroupNotFound"
    status, _, _ = raw(fake, "DELETE", vms + "/nope?api-version=2024-07-01")
    assert status == 204  # ARM deletes are idempotent


def test_injected_faults_fire_as_often_as_asked(fake: FakeArm) -> None:
    path = f"{fake.rg_id()}/providers/Microsoft.Compute/virtualMachines?api-version=1"
    fake.inject(
        429,
        "TooManyRequests",
        "slow down",
        method="GET",
        path_contains="virtualMachines",
        retry_after=7,
        times=2,
    )
    for _ in range(2):
        status, headers, body = raw(fake, "GET", path)
        assert (status, headers["Retry-After"], body["error"]["code"]) == (429, "7", "TooManyRequests")
    assert raw(fake, "GET", path)[0] == 200
    fake.inject(500, "InternalServerError", times=None)
    assert raw(fake, "GET", path)[0] == raw(fake, "GET", path)[0] == 500
    fake.clear_faults()
    assert raw(fake, "GET", path)[0] == 200


def test_vm_sizes(clients: tuple[ComputeManagementClient, NetworkManagementClient]) -> None:
    compute, _ = clients
    sizes = {
        s.name: (s.number_of_cores, s.memory_in_mb) for s in compute.virtual_machine_sizes.list("eastus")
    }
    assert sizes["Standard_DC2as_v5"] == (2, 8192)
    assert sizes["Standard_DC4es_v5"] == (4, 16384)
    assert list(compute.virtual_machine_sizes.list("westus")) == []


def test_vm_lifecycle_and_delete_cascade(
    fake: FakeArm, clients: tuple[ComputeManagementClient, NetworkManagementClient]
) -> None:
    compute, network = clients
    rg = fake.resource_group
    pip = network.public_ip_addresses.begin_create_or_update(
        rg, "a-ip", PublicIPAddress({"location": fake.location, "properties": {"deleteOption": "Delete"}})
    ).result()
    nic_id = nic(fake, network, "a-net", str(pip.id))
    created = compute.virtual_machines.begin_create_or_update(rg, "a", vm(fake, "a", nic_id)).result()
    assert created.properties is not None and created.properties.provisioning_state == "Succeeded"
    disk = compute.disks.get(rg, "a-disk")
    assert disk.managed_by == created.id

    with pytest.raises(HttpResponseError) as in_use:
        network.network_interfaces.begin_delete(rg, "a-net").result()
    assert in_use.value.error is not None and in_use.value.error.code == "NicInUse"
    with pytest.raises(HttpResponseError) as attached:
        compute.disks.begin_delete(rg, "a-disk").result()
    assert attached.value.status_code == 409
    with pytest.raises(HttpResponseError) as pip_in_use:
        network.public_ip_addresses.begin_delete(rg, "a-ip").result()
    assert pip_in_use.value.error is not None and pip_in_use.value.error.code == "PublicIPAddressInUse"

    compute.virtual_machines.begin_delete(rg, "a").result()
    assert fake.all_resources() == []


def test_detach_leaves_disk_and_nic(
    fake: FakeArm, clients: tuple[ComputeManagementClient, NetworkManagementClient]
) -> None:
    compute, network = clients
    nic_id = nic(fake, network, "b-net")
    compute.virtual_machines.begin_create_or_update(
        fake.resource_group, "b", vm(fake, "b", nic_id, "Detach")
    ).result()
    compute.virtual_machines.begin_delete(fake.resource_group, "b").result()
    left = {r["name"]: r for r in fake.all_resources()}
    assert sorted(left) == ["b-disk", "b-net"]
    assert left["b-disk"]["properties"]["diskState"] == "Unattached"
    with pytest.raises(ResourceExistsError, match="ConflictingUserInput"):
        compute.virtual_machines.begin_create_or_update(fake.resource_group, "b", vm(fake, "b", nic_id))


def test_confidential_vm_rules(
    fake: FakeArm, clients: tuple[ComputeManagementClient, NetworkManagementClient]
) -> None:
    compute, network = clients
    nic_id = nic(fake, network, "c-net")
    cvm: dict[str, Any] = {
        "securityProfile": {"securityType": "ConfidentialVM", "uefiSettings": {"vTpmEnabled": True}}
    }
    with pytest.raises(HttpResponseError, match="not supported for the security type"):
        compute.virtual_machines.begin_create_or_update(
            fake.resource_group, "c", vm(fake, "c", nic_id, **cvm)
        )
    body = vm(fake, "c", nic_id, **cvm)
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_DC2es_v5"
    with pytest.raises(HttpResponseError, match="securityEncryptionType is required"):
        compute.virtual_machines.begin_create_or_update(fake.resource_group, "c", body)
    assert fake.resources("virtualMachines") == []


def test_capacity_failure_as_a_failed_operation(
    fake: FakeArm, clients: tuple[ComputeManagementClient, NetworkManagementClient]
) -> None:
    compute, network = clients
    fake.inject_capacity("Standard_B2s", "ZonalAllocationFailed")
    with pytest.raises(HttpResponseError) as info:
        compute.virtual_machines.begin_create_or_update(
            fake.resource_group, "d", vm(fake, "d", nic(fake, network, "d-net"))
        ).result()
    assert info.value.error is not None and info.value.error.code == "ZonalAllocationFailed"
    (failed,) = fake.resources("virtualMachines")
    assert failed["properties"]["provisioningState"] == "Failed"


def test_provisioning_latency(
    fake: FakeArm, clients: tuple[ComputeManagementClient, NetworkManagementClient]
) -> None:
    compute, network = clients
    fake.latency_s = 0.2
    poller = compute.virtual_machines.begin_create_or_update(
        fake.resource_group, "e", vm(fake, "e", nic(fake, network, "e-net"))
    )
    assert fake.pending_operations() == 1
    assert poller.result().name == "e"
    assert fake.pending_operations() == 0
    assert len(fake.requests_matching("GET", "/operations/")) >= 1
