"""Azure provider configuration: upstream's flags and environment variables, and errors at start."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from providers import registry
from providers.azure import PLUGIN
from providers.azure.config import SETTINGS, load_config
from providers.base import OWNER_TAG, Provider
from providers.settings import ConfigError, SettingValue, add_arguments, resolve

SUB = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/pods"
SUBNET = f"{RG_ID}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/pods"
NSG = f"{RG_ID}/providers/Microsoft.Network/networkSecurityGroups/pods-nsg"
IMAGE = f"{RG_ID}/providers/Microsoft.Compute/galleries/g/images/podvm/versions/1.0.0"
REQUIRED = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_REGION": "eastus",
    "AZURE_RESOURCE_GROUP": "pods",
    "AZURE_SUBNET_ID": SUBNET,
    "AZURE_IMAGE_ID": IMAGE,
}


def values(*flags: str, **env: str) -> dict[str, SettingValue | None]:
    parser = argparse.ArgumentParser()
    add_arguments(parser, SETTINGS)
    return resolve(SETTINGS, parser.parse_args(list(flags)), {**REQUIRED, **env})


def problems(*flags: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(values(*flags, **env))
    return info.value.problems


def test_registered_under_its_upstream_name() -> None:
    assert "azure" in registry.available()
    assert registry.load("azure") is PLUGIN
    assert PLUGIN.name == "azure"


def test_upstream_flags_and_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, SETTINGS)
    flags = parser.parse_args(
        [
            "-subscriptionid", SUB, "-region", "westeurope", "-resourcegroup", "pods", "-subnetid", SUBNET,
            "-imageid", IMAGE, "-securitygroupid", NSG,
            "-instance-sizes", "Standard_DC2as_v5,Standard_DC4es_v5",
            "-use-public-ip", "-root-volume-size", "50", "-tags", "team=pp, cost=1", "-clientid", "cid",
            "-tenantid", "tid", "-secret", "s3cr3t",
        ]
    )  # fmt: skip
    config, limiter = load_config(resolve(SETTINGS, flags, {}))
    assert (config.subscription_id, config.region, config.resource_group) == (SUB, "westeurope", "pods")
    assert (config.subnet_id, config.nsg_id, config.image_id) == (SUBNET, NSG, IMAGE)
    assert config.instance_size == "Standard_DC2as_v5"  # upstream default, a SEV-SNP size
    assert config.instance_sizes == ("Standard_DC2as_v5", "Standard_DC4es_v5")
    assert config.ssh_username == "peerpod"
    assert config.use_public_ip and config.root_volume_size_gib == 50
    assert not config.disable_cvm and not config.enable_secure_boot
    assert config.tags == {"team": "pp", "cost": "1"}
    assert config.arm_endpoint == "https://management.azure.com"
    assert config.credential_scope == "https://management.azure.com/.default"
    assert limiter.rate_per_s > 0
    assert "s3cr3t" not in repr(config)


def test_environment_variables() -> None:
    config, _ = load_config(
        values(
            AZURE_INSTANCE_SIZE="Standard_DC4as_v5",
            DISABLECVM="true",
            USE_PUBLIC_IP="false",
            SSH_USERNAME="core",
            AZURE_ARM_ENDPOINT="https://management.usgovcloudapi.net/",
        )
    )
    assert config.instance_size == "Standard_DC4as_v5"
    assert config.disable_cvm and not config.use_public_ip
    assert config.ssh_username == "core"
    assert config.credential_scope == "https://management.usgovcloudapi.net/.default"


def test_missing_required_settings_are_listed_together() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(SETTINGS, None, {})
    text = str(info.value)
    for name in REQUIRED:
        assert name in text


def test_contradictory_settings_are_reported_at_start() -> None:
    found = problems(
        AZURE_CLIENT_SECRET="s3cr3t",
        DISABLECVM="1",
        ENABLE_SECURE_BOOT="1",
        AZURE_INSTANCE_SIZES="Standard_DC4as_v5,Standard_DC8as_v5",
    )
    assert len(found) == 3
    assert any("AZURE_CLIENT_SECRET needs" in p for p in found)
    assert any("confidential VMs only" in p for p in found)
    assert any("'Standard_DC2as_v5' (AZURE_INSTANCE_SIZE) is not in AZURE_INSTANCE_SIZES" in p for p in found)
    assert not any("s3cr3t" in p for p in found)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AZURE_SUBSCRIPTION_ID": "my-subscription"}, "is not a subscription id"),
        ({"AZURE_SUBNET_ID": SUBNET.rsplit("/subnets/", 1)[0]}, "virtualNetworks/subnets"),
        ({"AZURE_NSG_ID": SUBNET}, "networkSecurityGroups"),
        ({"AZURE_IMAGE_ID": "podvm-image"}, "neither an ARM resource id"),
        ({"AZURE_IMAGE_ID": "/CommunityGalleries/x"}, "malformed community gallery image id"),
        ({"AZURE_ARM_ENDPOINT": "http://management.azure.com"}, "must be an https URL"),
        ({"AZURE_ARM_ENDPOINT": "ftp://127.0.0.1"}, "must be an https URL"),
        ({"TAGS": "team"}, "is not key=value"),
        ({"TAGS": "azure-owner=x"}, "prefix Azure reserves"),
        ({"TAGS": "a/b=c"}, "tag names exclude"),
        ({"TAGS": f"{OWNER_TAG}=someone"}, "set by the adaptor itself"),
        ({"ROOT_VOLUME_SIZE": "-1"}, "must be a size in GiB"),
        ({"CLOUD_API_RATE_LIMIT": "0"}, "CLOUD_API_RATE_LIMIT"),
    ],
)
def test_malformed_settings(env: dict[str, str], expected: str) -> None:
    found = problems(**env)
    assert any(expected in p for p in found), found


def test_unparseable_values_are_reported_by_name() -> None:
    with pytest.raises(ConfigError, match="DISABLECVM"):
        values(DISABLECVM="maybe")


def test_loopback_http_endpoint_is_accepted_for_tests() -> None:
    for endpoint in ("http://127.0.0.1:8080", "http://[::1]:9"):
        config, _ = load_config(values(AZURE_ARM_ENDPOINT=endpoint))
        assert config.endpoint_is_loopback_http


def test_ssh_key_file(tmp_path: Path) -> None:
    public = tmp_path / "id.pub"
    public.write_text("ssh-rsa AAAAB3NzaC1yc2E test\n")
    config, _ = load_config(values("-ssh-key-path", str(public)))
    assert config.ssh_public_key == "ssh-rsa AAAAB3NzaC1yc2E test"

    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n")
    assert any("not an OpenSSH public key" in p for p in problems("-ssh-key-path", str(private)))
    assert any("cannot read" in p for p in problems("-ssh-key-path", str(tmp_path / "missing.pub")))


@pytest.mark.parametrize(
    "credentials",
    [
        {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid", "AZURE_CLIENT_SECRET": "s3cr3t"},
        {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid"},  # workload identity
        {},  # managed identity
    ],
    ids=["client-secret", "workload-identity", "default"],
)
async def test_plugin_builds_a_provider_without_calling_azure(credentials: dict[str, str]) -> None:
    provider = PLUGIN.create(values(**credentials), owner="adaptor-1")
    assert isinstance(provider, Provider)
    assert provider.name == "azure"
    await provider.teardown()


def test_plugin_refuses_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="AZURE_SUBNET_ID"):
        PLUGIN.create(values(AZURE_SUBNET_ID="subnet-1"), owner="adaptor-1")
