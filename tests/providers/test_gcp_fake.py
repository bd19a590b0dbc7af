"""The Compute fake itself, through the raw SDK, and the GCP error classification on real SDK errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from providers.base import CapacityError, CreateRequest, InvalidRequestError, ProviderError
from providers.gcp import GcpProvider
from providers.gcp.config import parse_config
from providers.gcp.errors import classify, operation_failure, retry_after
from providers.retry import ErrorKind, RateLimiter, RetryPolicy
from tests.fakes.gce import FakeCompute

PROJECT, ZONE = "test-project", "us-central1-a"


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(PROJECT, (ZONE,)) as server:
        server.add_image("podvm", disk_size_gb=10)
        yield server


def clients(fake: FakeCompute) -> tuple[Any, Any]:
    args: dict[str, Any] = {
        "credentials": AnonymousCredentials(),
        "client_options": ClientOptions(api_endpoint=fake.endpoint),
        "transport": "rest",
    }
    return compute_v1.InstancesClient(**args), compute_v1.ZoneOperationsClient(**args)


def instance(name: str, labels: dict[str, str]) -> compute_v1.Instance:
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{ZONE}/machineTypes/e2-medium",
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=f"projects/{PROJECT}/global/images/podvm"
                ),
            )
        ],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
        labels=labels,
    )


def caught(call: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_fake_filters_pages_conflicts_and_operations(fake: FakeCompute) -> None:
    instances, operations = clients(fake)
    for name, env in (("a", "prod"), ("b", "test"), ("c", "prod")):
        op = instances.insert(project=PROJECT, zone=ZONE, instance_resource=instance(name, {"env": env}))
        done = operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
        assert done.status == compute_v1.Operation.Status.DONE
        assert operations.get(project=PROJECT, zone=ZONE, operation=op.name).status == done.status

    def names(expression: str) -> list[str]:
        listed = instances.list(
            request=compute_v1.ListInstancesRequest(
                project=PROJECT, zone=ZONE, filter=expression, max_results=1
            )
        )
        return [i.name for i in listed]

    assert names("labels.env = prod") == ["a", "c"]
    assert names('(labels.env != "prod") AND (name = b)') == ["b"]
    assert names("") == ["a", "b", "c"]
    bad_filter = caught(lambda: names("labels.env ~ prod"))
    assert isinstance(bad_filter, api_exceptions.BadRequest)
    assert classify(bad_filter) is ErrorKind.INVALID

    conflict = caught(
        lambda: instances.insert(project=PROJECT, zone=ZONE, instance_resource=instance("a", {}))
    )
    assert isinstance(conflict, api_exceptions.Conflict)
    assert "already exists" in str(conflict)

    got = instances.get(project=PROJECT, zone=ZONE, instance="a")
    assert got.network_interfaces[0].network_i_p == "10.128.0.2"
    assert got.disks[0].auto_delete and got.status == "RUNNING"

    missing = caught(lambda: instances.get(project=PROJECT, zone=ZONE, instance="zz", retry=None))
    assert isinstance(missing, api_exceptions.NotFound)
    assert classify(missing) is ErrorKind.NOT_FOUND


def test_fake_rejects_what_compute_rejects(fake: FakeCompute) -> None:
    instances, _ = clients(fake)
    body = instance("x", {"Bad.Key": "v"})
    rejected = caught(lambda: instances.insert(project=PROJECT, zone=ZONE, instance_resource=body))
    assert isinstance(rejected, api_exceptions.BadRequest) and "resource.labels" in str(rejected)

    body = instance("x", {})
    body.machine_type = f"zones/{ZONE}/machineTypes/n9-huge"
    rejected = caught(lambda: instances.insert(project=PROJECT, zone=ZONE, instance_resource=body))
    assert "Machine type with name 'n9-huge' does not exist" in str(rejected)

    body = instance("x", {})
    body.disks[0].initialize_params.disk_size_gb = 5
    rejected = caught(lambda: instances.insert(project=PROJECT, zone=ZONE, instance_resource=body))
    assert "cannot be smaller than the image size (10 GB)" in str(rejected)
    assert fake.instances() == {} and fake.disks() == {}


def test_throttle_errors_carry_retry_after(fake: FakeCompute) -> None:
    instances, _ = clients(fake)
    fake.fail("instances.get", 429, retry_after=7)
    throttled = caught(lambda: instances.get(project=PROJECT, zone=ZONE, instance="a", retry=None))
    assert isinstance(throttled, api_exceptions.TooManyRequests)
    assert classify(throttled) is ErrorKind.THROTTLED
    assert retry_after(throttled) == 7.0
    fake.fail("instances.get", 500)
    server_error = caught(lambda: instances.get(project=PROJECT, zone=ZONE, instance="a", retry=None))
    assert classify(server_error) is ErrorKind.TRANSIENT
    assert retry_after(server_error) is None


def test_operation_failures_map_to_provider_errors() -> None:
    capacity = operation_failure([("ZONE_RESOURCE_POOL_EXHAUSTED", "no room")], 503, "SERVICE UNAVAILABLE")
    assert isinstance(capacity, CapacityError)
    assert str(capacity) == "ZONE_RESOURCE_POOL_EXHAUSTED: no room (HTTP 503 SERVICE UNAVAILABLE)"
    assert isinstance(operation_failure([("INVALID_USAGE", "no")], 400, "BAD REQUEST"), InvalidRequestError)
    other = operation_failure([], 500, "INTERNAL")
    assert type(other) is ProviderError and "INTERNAL" in str(other)


async def test_unreachable_endpoint_is_transient_then_gives_up() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = parse_config(
        {
            "gcp_project_id": PROJECT,
            "zone": ZONE,
            "network": "default",
            "image_name": "podvm",
            "disable_cvm": True,
            "root_volume_size": 10,
            "gcp_api_endpoint": f"http://127.0.0.1:{port}",
        }
    )
    provider = GcpProvider(
        config,
        "owner",
        AnonymousCredentials(),
        RateLimiter(1000, 1000),
        policy=RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01),
    )
    with pytest.raises(ProviderError, match="gave up after 2 attempts"):
        await provider.create_instance(CreateRequest(name="vm", sandbox_id="s", user_data=b""))
    await provider.teardown()
