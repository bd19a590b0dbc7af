"""The GCP provider driving the real google-cloud-compute SDK (REST) against the local Compute fake."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers import registry
from providers.base import (
    CapacityError,
    CreateRequest,
    InstanceNotFound,
    InstanceSpec,
    InvalidRequestError,
    Provider,
)
from providers.gcp import PLUGIN, GcpProvider
from providers.gcp.config import load_credentials, parse_config
from providers.retry import RateLimiter, RetryPolicy
from providers.settings import ConfigError, add_arguments, resolve
from tests.fakes.gce import FakeCompute, decode_user_data
from tests.providers.stop_support import StopBench, one_gone_one_busy

PROJECT = "test-project"
ZONE = "us-central1-a"
SANDBOX = "5f0c3b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"  # 64 hex digits, like Kata's
FAST = RetryPolicy(attempts=5, initial_s=0.01, max_s=0.05)


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(PROJECT, (ZONE,)) as server:
        server.add_image("podvm", disk_size_gb=12)
        server.add_network("peerpods")
        server.add_subnetwork("pods", "us-central1", "10.10.0.0/24", network="peerpods")
        yield server


def environment(fake: FakeCompute, **overrides: str) -> dict[str, str]:
    env = {
        "GCP_PROJECT_ID": PROJECT,
        "GCP_ZONE": ZONE,
        "GCP_NETWORK": "peerpods",
        "GCP_SUBNETWORK": "pods",
        "PODVM_IMAGE_NAME": "podvm",
        "GCP_MACHINE_TYPE": "n2d-standard-2",
        "GCP_CONFIDENTIAL_TYPE": "SEV_SNP",
        "GCP_API_ENDPOINT": fake.endpoint,
        "CLOUD_API_RATE_LIMIT": "1000",
        "CLOUD_API_BURST": "1000",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


def plugin_provider(fake: FakeCompute, owner: str = "owner-a", **overrides: str) -> GcpProvider:
    """Built the way the adaptor builds it: settings resolved from the environment, then the plugin."""
    return PLUGIN.create(resolve(PLUGIN.settings, None, environment(fake, **overrides)), owner)


def fast_provider(fake: FakeCompute, owner: str = "owner-a", **overrides: str) -> GcpProvider:
    """Like plugin_provider, with a quick retry policy for the fault tests."""
    values = resolve(PLUGIN.settings, None, environment(fake, **overrides))
    config = parse_config(values)
    return GcpProvider(
        config, owner, load_credentials("", config.endpoint), RateLimiter(1000, 1000), policy=FAST
    )


def request(
    name: str = "podvm-web-5f0c3b2a", sandbox: str = SANDBOX, spec: InstanceSpec | None = None
) -> CreateRequest:
    return CreateRequest(
        name=name,
        sandbox_id=sandbox,
        user_data=b"#cloud-config\nwrite_files: []\n",
        spec=spec or InstanceSpec(),
    )


async def test_create_list_delete(fake: FakeCompute) -> None:
    provider = plugin_provider(fake)
    assert isinstance(provider, Provider)
    created = await provider.create_instance(request())
    assert created.id == created.name == "podvm-web-5f0c3b2a"
    assert created.sandbox_id == SANDBOX
    assert created.ips == (ipaddress.ip_address("10.10.0.2"),)
    assert fake.instances()["podvm-web-5f0c3b2a"]["status"] == "RUNNING"
    assert list(fake.disks()) == ["podvm-web-5f0c3b2a"]

    assert await provider.list_instances() == [created]

    await provider.delete_instance(created.id)
    assert fake.instances() == {}
    assert fake.disks() == {}, "the boot disk is deleted with the instance"
    assert await provider.list_instances() == []
    with pytest.raises(InstanceNotFound, match="was not found"):
        await provider.delete_instance(created.id)
    await provider.teardown()


@pytest.mark.parametrize(
    ("kind", "machine_type"),
    [("SEV_SNP", "n2d-standard-2"), ("SEV", "n2d-standard-2"), ("TDX", "c3-standard-4")],
)
async def test_insert_body_carries_confidential_settings(
    fake: FakeCompute, kind: str, machine_type: str
) -> None:
    provider = plugin_provider(fake, GCP_CONFIDENTIAL_TYPE=kind, GCP_MACHINE_TYPE=machine_type)
    await provider.create_instance(request())
    [body] = fake.insert_bodies()
    assert body["confidentialInstanceConfig"] == {
        "confidentialInstanceType": kind,
        "enableConfidentialCompute": True,
    }
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE"}
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/{machine_type}"
    assert body["disks"] == [
        {
            "boot": True,
            "autoDelete": True,
            "initializeParams": {
                "diskSizeGb": "12",  # the image is larger than ROOT_VOLUME_SIZE (10)
                "sourceImage": f"projects/{PROJECT}/global/images/podvm",
                "diskType": f"zones/{ZONE}/diskTypes/pd-standard",
            },
        }
    ]
    assert body["networkInterfaces"] == [
        {
            "network": f"projects/{PROJECT}/global/networks/peerpods",
            "subnetwork": f"projects/{PROJECT}/regions/us-central1/subnetworks/pods",
            "stackType": "IPV4_ONLY",
        }
    ]
    assert decode_user_data(body) == b"#cloud-config\nwrite_files: []\n"
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["user-data-encoding"] == "base64"
    assert metadata["peerpods-sandbox-id"] == SANDBOX
    assert metadata["peerpods-owner"] == "owner-a"
    assert body["labels"] == {"peerpods_owner": "owner-a", "peerpods_sandbox-id": SANDBOX[:63]}
    await provider.teardown()


async def test_disable_cvm_omits_confidential_settings(fake: FakeCompute) -> None:
    provider = plugin_provider(fake, DISABLECVM="true", GCP_CONFIDENTIAL_TYPE="", GCP_MACHINE_TYPE="")
    await provider.create_instance(request())
    [body] = fake.insert_bodies()
    assert "confidentialInstanceConfig" not in body
    assert "scheduling" not in body
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/e2-medium"  # upstream's default
    await provider.teardown()


async def test_public_ip_root_volume_and_tags(fake: FakeCompute) -> None:
    provider = plugin_provider(
        fake, USE_PUBLIC_IP="true", ROOT_VOLUME_SIZE="30", TAGS="Team=Confidential.Pods, cost-center=42"
    )
    created = await provider.create_instance(request())
    [body] = fake.insert_bodies()
    assert body["networkInterfaces"][0]["accessConfigs"] == [
        {"name": "External NAT", "type": "ONE_TO_ONE_NAT", "networkTier": "STANDARD"}
    ]
    assert body["disks"][0]["initializeParams"]["diskSizeGb"] == "30"
    assert body["labels"] == {
        "team": "confidential_pods",
        "cost-center": "42",
        "peerpods_owner": "owner-a",
        "peerpods_sandbox-id": SANDBOX[:63],
    }
    nat_ip = fake.instances()[created.name]["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
    assert created.ips == (ipaddress.ip_address(nat_ip), ipaddress.ip_address("10.10.0.2"))
    await provider.teardown()


async def test_list_only_own_instances_across_pages(fake: FakeCompute) -> None:
    fake.page_size = 1
    mine, theirs = plugin_provider(fake, owner="owner-a"), plugin_provider(fake, owner="owner-b")
    for index in range(3):
        await mine.create_instance(request(f"mine-{index}", sandbox=f"sandbox-{index}"))
    await theirs.create_instance(request("theirs-0", sandbox="sandbox-x"))
    listed = await mine.list_instances()
    assert sorted((i.name, i.sandbox_id) for i in listed) == [
        ("mine-0", "sandbox-0"),
        ("mine-1", "sandbox-1"),
        ("mine-2", "sandbox-2"),
    ]
    assert [i.name for i in await theirs.list_instances()] == ["theirs-0"]
    list_calls = fake.requests_for("instances.list")
    assert list_calls[0].query["filter"] == ["labels.peerpods_owner = owner-a"]
    assert len(list_calls) == 4, "three pages for owner-a, one for owner-b"
    for provider in (mine, theirs):
        await provider.teardown()


@pytest.mark.parametrize("status", [429, 403])  # Compute also throttles with 403 rateLimitExceeded
async def test_throttling_is_retried_after_retry_after(fake: FakeCompute, status: int) -> None:
    provider = fast_provider(fake)
    fake.fail("instances.insert", status, times=2, retry_after=0.3, reason="rateLimitExceeded")
    created = await provider.create_instance(request())
    inserts = fake.requests_for("instances.insert")
    assert [r.status for r in inserts] == [status, status, 200]
    assert inserts[1].at - inserts[0].at >= 0.3, "Retry-After is honoured"
    assert list(fake.instances()) == [created.name]
    await provider.teardown()


@pytest.mark.parametrize("api", ["instances.insert", "zoneOperations.wait", "instances.get", "images.get"])
async def test_server_errors_are_retried(fake: FakeCompute, api: str) -> None:
    provider = fast_provider(fake)
    fake.fail(api, 503, times=1)
    fake.fail(api, 500, times=1)
    created = await provider.create_instance(request())
    assert [r.status for r in fake.requests_for(api)] == [503, 500, 200]
    assert list(fake.instances()) == [created.name]
    await provider.teardown()


async def test_google_api_core_retries_are_off(fake: FakeCompute) -> None:
    """A 503 on get reaches our retry loop at once: one HTTP call per attempt, no SDK-internal retries."""
    provider = GcpProvider(
        parse_config(resolve(PLUGIN.settings, None, environment(fake))),
        "owner-a",
        load_credentials("", fake.endpoint),
        RateLimiter(1000, 1000),
        policy=RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01),
    )
    fake.fail("instances.get", 503, times=10)
    with pytest.raises(Exception, match="gave up after 2 attempts"):
        await provider.create_instance(request())
    assert len(fake.requests_for("instances.get")) == 2
    await provider.teardown()


async def test_delete_is_retried_and_waits(fake: FakeCompute) -> None:
    provider = fast_provider(fake)
    created = await provider.create_instance(request())
    fake.fail("instances.delete", 429, times=1)
    fake.fail("zoneOperations.wait", 503, times=1)
    await provider.delete_instance(created.id)
    assert [r.status for r in fake.requests_for("instances.delete")] == [429, 200]
    assert fake.instances() == {} and fake.disks() == {}
    await provider.teardown()


async def test_gpu_machine_types_terminate_on_maintenance(fake: FakeCompute) -> None:
    fake.add_machine_type(ZONE, "g2-standard-4", 4, 16384, gpus=1)
    provider = plugin_provider(
        fake, DISABLECVM="true", GCP_MACHINE_TYPE="e2-medium", GCP_INSTANCE_TYPES="e2-medium,g2-standard-4"
    )
    await provider.create_instance(request(spec=InstanceSpec(gpus=1)))
    [body] = fake.insert_bodies()
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/g2-standard-4"
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE"}
    assert "confidentialInstanceConfig" not in body
    await provider.teardown()


async def test_lost_insert_response_is_adopted(fake: FakeCompute) -> None:
    provider = fast_provider(fake)
    fake.fail("instances.insert", 503, commit=True)  # created, but the answer never arrived
    created = await provider.create_instance(request())
    assert [r.status for r in fake.requests_for("instances.insert")] == [503, 409]
    assert list(fake.instances()) == [created.name]
    assert created.ips == (ipaddress.ip_address("10.10.0.2"),)
    await provider.teardown()


async def test_capacity_falls_back_to_next_allowed_type(fake: FakeCompute) -> None:
    provider = plugin_provider(fake, GCP_INSTANCE_TYPES="n2d-standard-8,n2d-standard-2,n2d-standard-4")
    fake.exhaust("n2d-standard-2")
    created = await provider.create_instance(request())
    assert [b["machineType"].rsplit("/", 1)[1] for b in fake.insert_bodies()] == [
        "n2d-standard-2",
        "n2d-standard-4",
    ]
    [instance] = fake.instances().values()
    assert instance["machineType"].endswith("/machineTypes/n2d-standard-4")
    assert instance["name"] == created.name
    assert list(fake.disks()) == [created.name]
    await provider.teardown()


async def test_capacity_everywhere_fails_with_gcp_reason(fake: FakeCompute) -> None:
    provider = plugin_provider(fake, GCP_INSTANCE_TYPES="n2d-standard-2,n2d-standard-4")
    fake.exhaust("n2d-standard-2")
    fake.exhaust("n2d-standard-4")
    with pytest.raises(
        CapacityError, match=r"ZONE_RESOURCE_POOL_EXHAUSTED: The zone .* does not have enough"
    ):
        await provider.create_instance(request())
    assert len(fake.insert_bodies()) == 2
    assert fake.instances() == {}
    assert fake.disks() == {}
    await provider.teardown()


async def test_annotations_select_the_machine_type(fake: FakeCompute) -> None:
    provider = plugin_provider(fake, GCP_INSTANCE_TYPES="n2d-standard-2,n2d-standard-4,n2d-standard-8")
    await provider.create_instance(request("by-size", spec=InstanceSpec(vcpus=3, memory_mib=12000)))
    await provider.create_instance(
        request("by-name", sandbox="other", spec=InstanceSpec(instance_type="n2d-standard-8"))
    )
    types = [b["machineType"].rsplit("/", 1)[1] for b in fake.insert_bodies()]
    assert types == ["n2d-standard-4", "n2d-standard-8"]
    with pytest.raises(InvalidRequestError, match="not part of supported instance types list"):
        await provider.create_instance(
            request("too-odd", sandbox="x", spec=InstanceSpec(instance_type="c3-standard-8"))
        )
    assert len(fake.requests_for("machineTypes.get")) == 3, "the allow-list is resolved once"
    await provider.teardown()


async def test_image_annotation_overrides_the_setting(fake: FakeCompute) -> None:
    fake.add_image("debug-podvm", disk_size_gb=20, project="images-project")
    provider = plugin_provider(fake)
    await provider.create_instance(
        request(spec=InstanceSpec(image="projects/images-project/global/images/debug-podvm"))
    )
    [body] = fake.insert_bodies()
    params = body["disks"][0]["initializeParams"]
    assert params["sourceImage"] == "projects/images-project/global/images/debug-podvm"
    assert params["diskSizeGb"] == "20"
    await provider.teardown()


async def test_bad_image_fails_with_gcp_message_and_leaves_nothing(fake: FakeCompute) -> None:
    provider = plugin_provider(fake, PODVM_IMAGE_NAME="missing")
    with pytest.raises(
        InvalidRequestError, match=rf"The resource 'projects/{PROJECT}/global/images/missing' was not"
    ):
        await provider.create_instance(request())
    assert len(fake.requests_for("images.get")) == 1, "never retried"
    assert fake.insert_bodies() == []
    assert fake.instances() == {} and fake.disks() == {}
    await provider.teardown()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"GCP_NETWORK": "nope"},
            rf"404 .*The resource 'projects/{PROJECT}/global/networks/nope' was not found",
        ),
        ({"GCP_SUBNETWORK": "nope"}, r"400 .*subnetwork.*The referenced subnetwork resource cannot be found"),
        ({"GCP_MACHINE_TYPE": "e2-medium"}, r"400 .*SEV_SNP is not supported for machine type e2-medium"),
    ],
)
async def test_rejected_insert_fails_with_gcp_message_and_leaves_nothing(
    fake: FakeCompute, overrides: dict[str, str], message: str
) -> None:
    provider = plugin_provider(fake, **overrides)
    with pytest.raises(InvalidRequestError, match=message):
        await provider.create_instance(request())
    assert len(fake.insert_bodies()) == 1, "never retried"
    assert fake.instances() == {} and fake.disks() == {}
    await provider.teardown()


async def test_unknown_allowed_machine_type_is_invalid(fake: FakeCompute) -> None:
    provider = plugin_provider(
        fake, GCP_INSTANCE_TYPES="n2d-standard-2,n9-huge", GCP_MACHINE_TYPE="n2d-standard-2"
    )
    with pytest.raises(InvalidRequestError, match=r"machine type 'n9-huge'.*was not found"):
        await provider.create_instance(request())
    await provider.teardown()


async def test_crash_retry_returns_the_existing_instance(fake: FakeCompute) -> None:
    first = plugin_provider(fake)
    created = await first.create_instance(request())
    await first.teardown()
    restarted = plugin_provider(fake)  # the adaptor restarted and replays the same CreateVM
    again = await restarted.create_instance(request())
    assert again == created
    assert [r.status for r in fake.requests_for("instances.insert")] == [200, 409]
    assert list(fake.instances()) == [created.name]
    with pytest.raises(InvalidRequestError, match="taken by an instance of another sandbox"):
        await restarted.create_instance(request(sandbox=SANDBOX[:-1] + "0"))  # same 63-char label
    with pytest.raises(InvalidRequestError, match="taken by an instance of another sandbox or owner"):
        await plugin_provider(fake, owner="owner-b").create_instance(request())
    await restarted.teardown()


async def test_wait_loops_until_the_operation_is_done(fake: FakeCompute) -> None:
    fake.wait_timeout_s = 0.01  # each zoneOperations.wait returns quickly, still RUNNING
    fake.hold_operations()
    provider = plugin_provider(fake)
    task = asyncio.create_task(provider.create_instance(request()))
    while len(fake.requests_for("zoneOperations.wait")) < 3:
        await asyncio.sleep(0.01)
    assert not task.done()
    fake.release_operations()
    created = await task
    assert fake.instances()[created.name]["status"] == "RUNNING"
    await provider.teardown()


async def test_bad_instance_names_are_rejected_without_calls(fake: FakeCompute) -> None:
    provider = plugin_provider(fake)
    with pytest.raises(InvalidRequestError, match="is not a GCP name"):
        await provider.create_instance(request("Podvm_Upper"))
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance("../instances/x")
    assert fake.requests == []
    await provider.teardown()


# ---------------------------------------------------------------------- configuration


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        PLUGIN.create(resolve(PLUGIN.settings, None, environ), "owner-a")
    return caught.value


def test_confidential_type_is_required_unless_cvm_is_disabled(fake: FakeCompute) -> None:
    error = config_error(environment(fake, GCP_CONFIDENTIAL_TYPE=""))
    assert error.problems == [
        "GCP_CONFIDENTIAL_TYPE is required when DISABLECVM is false: one of TDX, SEV, SEV_SNP"
    ]
    assert plugin_provider(fake, GCP_CONFIDENTIAL_TYPE="", DISABLECVM="true").config.confidential_type is None
    assert plugin_provider(fake, GCP_CONFIDENTIAL_TYPE="tdx").config.confidential_type == "TDX"


def test_bad_confidential_type_and_other_problems_are_reported_together(fake: FakeCompute) -> None:
    error = config_error(
        environment(
            fake,
            GCP_CONFIDENTIAL_TYPE="SEV-ES",
            GCP_ZONE="uscentral1",
            TAGS="novalue",
            GCP_INSTANCE_TYPES="n2d-standard-4",
            ROOT_VOLUME_SIZE="0",
            CLOUD_API_RATE_LIMIT="0",
        )
    )
    assert len(error.problems) == 6, error.problems
    text = "\n".join(error.problems)
    assert "GCP_CONFIDENTIAL_TYPE 'SEV-ES' is not one of TDX, SEV, SEV_SNP" in text
    assert "GCP_ZONE 'uscentral1'" in text
    assert "TAGS entry 'novalue' is not key=value" in text
    assert "GCP_MACHINE_TYPE 'n2d-standard-2' is not in GCP_INSTANCE_TYPES" in text
    assert "ROOT_VOLUME_SIZE" in text and "CLOUD_API_RATE_LIMIT" in text


def test_required_settings(fake: FakeCompute) -> None:
    environ = environment(fake)
    for key in ("GCP_PROJECT_ID", "GCP_ZONE", "GCP_NETWORK"):
        environ.pop(key)
    with pytest.raises(ConfigError) as caught:
        resolve(PLUGIN.settings, None, environ)
    assert [p.split(" is required")[0] for p in caught.value.problems] == [
        "-gcp-project-id or GCP_PROJECT_ID",
        "-zone or GCP_ZONE",
        "-network or GCP_NETWORK",
    ]


def test_bad_image_setting_and_tag_keys(fake: FakeCompute) -> None:
    error = config_error(
        environment(fake, PODVM_IMAGE_NAME="projects/p/global/snapshots/x", TAGS="9lives=yes")
    )
    assert len(error.problems) == 2
    assert "PODVM_IMAGE_NAME" in error.problems[0]
    assert "must start with a letter" in error.problems[1]


def test_credentials_are_checked_and_never_echoed(fake: FakeCompute) -> None:
    secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nSECRETSTUFF"}'
    error = config_error(environment(fake, GCP_CREDENTIALS=secret))
    assert error.problems and all("SECRETSTUFF" not in p for p in error.problems)
    assert config_error(environment(fake, GCP_CREDENTIALS="not json{")).problems == [
        "GCP_CREDENTIALS is not valid JSON"
    ]


async def test_service_account_key_is_accepted_but_not_sent_over_plain_http(fake: FakeCompute) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    import json

    secret = json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "abc",
            "private_key": pem,
            "client_email": "caa@test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
    provider = plugin_provider(fake, GCP_CREDENTIALS=secret)
    await provider.create_instance(request())
    assert all("Authorization" not in r.headers for r in fake.requests)
    await provider.teardown()


def test_registry_and_flags(fake: FakeCompute) -> None:
    plugin: registry.ProviderPlugin = PLUGIN  # mypy checks that the plugin fits the protocol
    assert registry.load("gcp") is plugin
    parser = argparse.ArgumentParser()
    add_arguments(parser, PLUGIN.settings)
    flags = parser.parse_args(
        ["-confidential-type", "TDX", "-machine-type", "c3-standard-4", "-disable-cvm=false"]
    )
    values = resolve(PLUGIN.settings, flags, environment(fake, GCP_CONFIDENTIAL_TYPE="SEV"))
    config = parse_config(values)
    assert (config.confidential_type, config.machine_type) == ("TDX", "c3-standard-4")
    help_text = parser.format_help()
    assert "GCP_CREDENTIALS" in help_text and "-api-rate-limit" in help_text


# -- StopVM: one call when the record knows the instance ----------------------------------------------


async def test_stopvm_of_a_recorded_instance_is_one_delete(fake: FakeCompute, tmp_path: Path) -> None:
    provider = fast_provider(fake)
    instances = [await provider.create_instance(request(f"podvm-{i}", f"sb-{i}")) for i in range(3)]
    assert [i.delete_info for i in instances] == [{"zone": ZONE}] * 3
    stops = StopBench(tmp_path, provider)
    for instance in instances:
        stops.record(instance)
    fake.requests.clear()
    for instance in instances:
        await stops.stop(instance.sandbox_id)
    assert [r.api for r in fake.requests] == ["instances.delete"] * 3  # no get, no wait
    assert fake.instances() == {} and fake.disks() == {}
    await stops.close()
    await provider.teardown()


async def test_stopvm_of_a_record_without_delete_info_takes_the_full_delete(
    fake: FakeCompute, tmp_path: Path
) -> None:
    provider = fast_provider(fake)
    instance = await provider.create_instance(request())
    stops = StopBench(tmp_path, provider)
    stops.record_legacy(instance)
    fake.requests.clear()
    await stops.stop(instance.sandbox_id)
    assert [r.api for r in fake.requests] == ["instances.delete", "zoneOperations.wait"]
    assert fake.instances() == {}
    await stops.close()
    await provider.teardown()


async def test_stopvm_deletes_in_the_zone_the_instance_was_created_in(tmp_path: Path) -> None:
    with FakeCompute(PROJECT, (ZONE, "us-central1-b")) as fake:
        fake.add_image("podvm", disk_size_gb=12)
        fake.add_network("peerpods")
        fake.add_subnetwork("pods", "us-central1", "10.10.0.0/24", network="peerpods")
        before = fast_provider(fake)
        instance = await before.create_instance(request())
        moved = fast_provider(fake, GCP_ZONE="us-central1-b")  # restarted with another GCP_ZONE
        stops = StopBench(tmp_path, moved)
        stops.record(instance)
        fake.requests.clear()
        await stops.stop(instance.sandbox_id)
        assert [r.api for r in fake.requests] == ["instances.delete"]
        assert fake.instances(ZONE) == {}
        await stops.close()
        await before.teardown()
        await moved.teardown()


async def test_stopvm_of_an_instance_already_gone_or_throttled(fake: FakeCompute, tmp_path: Path) -> None:
    provider = fast_provider(fake)
    stops, gone, throttled = await one_gone_one_busy(tmp_path, provider, request)
    fake.requests.clear()
    fake.fail("instances.delete", 429, times=1)
    await stops.stop(throttled.sandbox_id)
    await stops.stop(gone.sandbox_id)  # 404: nothing left to delete
    assert [(r.api, r.status) for r in fake.requests] == [
        ("instances.delete", 429),
        ("instances.delete", 200),
        ("instances.delete", 404),
    ]
    assert fake.instances() == {}
    await stops.close()
    await provider.teardown()
